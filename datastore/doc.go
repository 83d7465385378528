// Package datastore reads the tree of a PBS datastore above the chunks:
// the vocabulary of namespaces, backup groups and snapshots (SPEC §1), their
// listings, and the plain walk that finds every index file for GC (§6.3).
// It only reads; the writer side (creating and removing snapshots) is
// package chunkgc/backup, which builds on the [Tree] and the doubt errors
// of this package. It knows nothing of chunks, locks or atomic writes.
//
// # Tree
//
// Under the store base, the root namespace holds groups <type>/<id> and
// the child namespaces ns/<name>; each namespace below holds the same, down
// to [MaxNamespaceDepth] (7) levels: ns/a/ns/b/vm/100. A group's type is
// vm, ct or host; namespace components and group ids are PBS "safe ids",
// [A-Za-z0-9_][A-Za-z0-9._-]*. A group directory holds the owner file and
// one directory per snapshot, named by its time in RFC 3339 UTC to the
// second ([TimeLayout], 2025-04-04T15:02:49Z); only the canonical form
// counts. A snapshot directory holds index files (*.fidx, *.didx), blobs
// (*.blob, the manifest index.json.blob among them) and maybe .protected.
//
// [Namespace], [Group] and [Snapshot] name these; their RelPath is the
// directory relative to base. A [Tree] is the store's tree held as a
// directory fd of base ([NewTree] from the store's fd, such as
// chunkstore.Store.BaseFD, with [TreeOptions]; [OpenTree] from the path);
// [Tree.ListNamespaces], [Tree.ListGroups], [Tree.ListSnapshots] and
// [Tree.IndexFiles] list one level each, ignore what does not fit the scheme (other names, hidden
// entries, regular files where a directory belongs) and sort their results,
// so every listing is deterministic; [Tree.OpenIndex] opens an index. The
// package-level functions of the same names open a Tree for one call. A
// missing namespace or group directory lists as empty: it may have been
// removed concurrently. A missing snapshot directory is an error matching
// fs.ErrNotExist from IndexFiles, because GC must notice that a snapshot it
// listed vanished (§6.3).
//
// For code that works below the tree (package backup), a Tree also hands
// out its base fd ([Tree.FD]), the directories it opens without following
// a symlink ([Tree.OpenDir], [Tree.OpenSubdir]), paths for messages
// ([Tree.Path]) and its seam ([Tree.Syscalls]); [Doubt] and [Unexpected]
// make the errors of "No escape" below.
//
// # Syscalls
//
// Every listing, stat and open the tree makes on the store goes through an
// fsys.Syscalls ([TreeOptions.Syscalls], fsys.Real{} by default), so that a
// test can fail a precise call; getdents64 records are parsed by
// fsys.ReadDirents, whose errors name the directory (an *fs.PathError with
// Op "getdents64", EIO for a malformed record). The exceptions: a path
// below the base that [Tree.OpenDir] or [Tree.OpenIndex] opens is resolved
// by internal/nofollow (openat2), which makes its own calls; dup and
// close(2) are made directly; and [OpenTree] and the package-level
// functions, which open the base by path, use fsys.Real.
//
// # No escape / doubt stops the run
//
// The backup user owns the tree, and chunkgc runs as root. This is the
// contract every function of this package keeps, whatever that user plants
// in the tree or swaps in while a function runs:
//
//  1. Nothing below base is resolved through a path. base itself (the
//     configured, trusted path) is opened once; everything below it is
//     reached from that fd with getdents, fstatat(AT_SYMLINK_NOFOLLOW),
//     openat(O_NOFOLLOW) one level at a time, or nofollow (openat2 with
//     RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, component-wise O_NOFOLLOW on
//     kernels before 5.6). No symlink below base is ever followed, so no
//     command reads, writes, touches or removes anything outside the store
//     through one.
//  2. Every index file is opened with O_NONBLOCK and fstat'ed for S_ISREG
//     before it is read: a FIFO cannot block, a device is never read.
//  3. Doubt is an error, never a skip. An entry that is a symlink, FIFO,
//     socket or device where the scheme expects a namespace (ns,
//     ns/<name>), a group type directory, a group, a snapshot, or, anywhere
//     the walk goes, an index file (*.fidx, *.didx), is an error matching
//     [ErrUnexpectedEntry] (and nofollow.ErrSymlink for a symlink) that
//     names the path. So is a directory that the walk listed and that is a
//     symlink, FIFO, socket or device when it opens it (the swap an
//     attacker does), a component on the way to what a listing or
//     OpenIndex opens that is a symlink or not a directory, and an index
//     whose path is PATH_MAX bytes or longer (ENAMETOOLONG, which nobody
//     could open by path). GC stops on any of these before phase 2, with
//     nothing removed. Only three things are skipped: an entry that
//     vanished (ENOENT: pruned concurrently), an unreadable lost+found
//     directly under base, and entries that are not where the scheme
//     expects anything (a symlinked client.log.blob in a snapshot, a
//     symlink with a non-scheme name), which the walk logs at debug level.
//
// Package backup keeps the same contract for what it removes and creates
// (its doc, "No escape").
//
// What the backup user can still do is what it could do without chunkgc:
// hide or remove its own snapshots (a snapshot renamed away while GC runs
// is not marked, as in PBS). It cannot make chunkgc act outside the store.
//
// # Walk
//
// [WalkIndexFiles] is what GC marks from, and it must not miss an index:
// a missed index means its chunks are swept. So it does not trust the
// scheme. It finds every regular file named *.fidx or *.didx anywhere under
// base, in the scheme or not. (GC counts those its group listings did not
// reach as outside the scheme; [InScheme] is the same rule as a predicate
// on one path, which the tests check the two against.) It does not descend into hidden
// entries (.chunks among them) and does not follow symlinks, as PBS's GC
// does not. Directories are read in full with getdents64, parsed by
// fsys.ReadDirents, which keeps d_type; a DT_UNKNOWN entry is resolved with fstatat on the held
// directory fd, and subdirectories are opened with openat(O_NOFOLLOW), so a
// concurrent rename cannot redirect the walk. Where PBS's GC skips a
// symlink, this walk stops on one the scheme has no room for (see "No
// escape / doubt stops the run").
//
// A permission error anywhere stops the walk: GC cannot know what it did
// not see. The one exception is lost+found directly under base, which fsck
// makes root-only on ext4: if it cannot be opened it is skipped, logged at
// debug. An entry that vanishes between the listing of its directory and
// the look at it was pruned concurrently and is skipped, as is a directory
// that became a regular file.
package datastore
