// Package backup is the writer side of a datastore, what chunkgc needs of
// a PBS client and of PBS's prune for its commands, its demo and the tests
// that race backups against GC: [Ingest] creates a snapshot from files, and
// [Forget] removes one, and then its group if that became empty (SPEC
// §7.6). It builds on the read-only tree of package datastore (the
// vocabulary, the directory fds, the doubt errors), on chunkstore for the
// chunks, index and blob for the files, locking for the lock protocol and
// atomicfile for durable writes.
//
// # Locks
//
// Both take the locks of locking's protocol, shared with PBS ≥ 3.4:
//
//   - Ingest registers as a writer ([locking.Dir.RegisterWriter]) for its
//     whole run, so that GC's cutoff accounts for it; holds the group's
//     exclusive lock for its whole run (waiting up to 10 s), and the
//     snapshot's exclusive lock while it writes the snapshot.
//   - Forget takes the snapshot's exclusive lock try-once (a reader or
//     writer holding it makes Forget fail with locking.ErrLocked), and then
//     the group's exclusive lock try-once: a group whose lock is held is in
//     use and is kept.
//
// A lock file is removed, while held ([locking.Lock.RemoveAndUnlock]), only
// together with the directory it guards: whoever removes a directory that
// is still there needs the same lock file.
//
// # Ingest
//
// Ingest cuts each file into fixed-size chunks, inserts every chunk
// (touching those that exist), syncs the chunks ([chunkstore.Store.SyncFS])
// before any index that references them is written, then writes the fixed
// indexes and last the manifest index.json.blob, each atomically. A new
// group gets the owner file "root@pam". When run as root, what it creates
// gets the owner of the store's base directory (the backup user), through
// fsys.Owner, whose Active is the one euid check. If it fails after
// creating the snapshot directory, it removes the partial snapshot.
//
// Into an S3 datastore ([S3Target]) each chunk goes by PBS's insert
// protocol ([chunkstore.Store.InsertS3]), and the metadata to
// <store>/.cnt/<relative path> as PBS uploads it: .namespace markers
// (empty, no replace) before the namespace directories, a new group's
// owner before its local file, each index once written (after all its
// chunks), the manifest before its local file. A failed ingest deletes
// its snapshot's objects with the partial snapshot.
//
// [ForgetS3] forgets in an S3 datastore: every object below
// <store>/.cnt/<snapshot>/ goes before the local directory, and a removed
// group's owner object with the group.
//
// # Forget
//
// Forget refuses a snapshot with .protected ([ErrProtected]), removes the
// snapshot directory recursively in place, and then its lock file. The
// recursive delete is safe here because it needs no emptiness check: the
// snapshot is removed whatever it holds, and nobody else writes to it while
// the lock is held. An interrupted removal leaves part of the snapshot;
// forgetting it again finishes the job. (Renaming it away to a hidden name
// first would make the removal look atomic, but an interrupted one would
// then leave a hidden directory nobody lists and nobody ever removes.)
//
// Removing the group that became empty is where seed 000's race lives: a
// check that the group is empty followed by a recursive delete removes a
// snapshot created in between. So the group goes only by rmdir, and
// ENOTEMPTY means a snapshot (or anything else) arrived: keep the group.
// Under the group's lock the listing is a shortcut; then owner is read and
// unlinked, and rmdir decides. If rmdir fails, owner is put back (O_EXCL,
// so a newcomer's own owner file wins). Empty namespace directories stay,
// as in PBS, where namespaces are created and removed explicitly.
//
// # No escape
//
// The backup user owns the tree, and chunkgc runs as root. Whatever that
// user plants in the tree or swaps in while Ingest or Forget runs, they
// keep datastore's contract (its doc, "No escape / doubt stops the run"):
//
//  1. Nothing below the base is resolved through a path: every directory is
//     opened from the tree's fd one level at a time without following a
//     symlink ([datastore.Tree.OpenDir], [datastore.Tree.OpenSubdir]). A
//     namespace, type, group or snapshot component that is a symlink or not
//     a directory is an error matching datastore.ErrUnexpectedEntry that
//     names it, and nothing is created or removed.
//  2. The owner file is opened with O_NONBLOCK and fstat'ed for S_ISREG
//     before it is read: a FIFO cannot block, a device is never read.
//  3. Removal is by name relative to a directory fd (unlinkat): Forget
//     empties a snapshot directory through fds opened with O_NOFOLLOW, so a
//     symlink planted in it is removed itself, never what it points to,
//     and then removes the directory from its group's fd; the group's rmdir
//     goes through its type directory's fd.
//  4. Creation is relative to fds too: Ingest creates namespace, group and
//     snapshot directories with nofollow.MkdirAll and mkdirat from the
//     tree's fd and writes every file with atomicfile.WriteAt
//     (O_CREAT|O_EXCL|O_NOFOLLOW temporary, renameat) in its directory's
//     fd.
//
// # Syscalls
//
// Forget's and Ingest's own syscalls on the tree (stat, open, mkdir,
// chown, write, fsync, unlink, getdents) go through the tree's
// fsys.Syscalls: the [datastore.Tree] given to Forget, and for Ingest
// [IngestOptions.Syscalls], nofollow.MkdirAll included; chunks go through
// the store's seam. nofollow's openat2 opens, atomicfile and close(2) are
// made directly.
package backup
