// Package datastore knows the tree of a PBS datastore above the chunks:
// namespaces, backup groups and snapshots (SPEC §1); the plain walk that
// finds every index file for GC (§6.3); and the two writer-side operations
// chunkgc needs for tests and demos, removing a snapshot ([Forget], §7.6)
// and creating one ([Ingest]).
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
// directory relative to base. [ListNamespaces], [ListGroups],
// [ListSnapshots] and [IndexFiles] list one level each, ignore what does not
// fit the scheme (other names, symlinks, hidden entries) and sort their
// results, so every listing is deterministic. A missing namespace or group
// directory lists as empty: it may have been removed concurrently. A missing
// snapshot directory is an error matching fs.ErrNotExist from IndexFiles,
// because GC must notice that a snapshot it listed vanished (§6.3).
//
// # Walk
//
// [WalkIndexFiles] is what GC marks from, and it must not miss an index:
// a missed index means its chunks are swept. So it does not trust the
// scheme. It finds every regular file named *.fidx or *.didx anywhere under
// base, in the scheme or not ([InScheme] tells which, for GC's count of
// index files outside the expected scheme). It does not descend into hidden
// entries (.chunks among them) and does not follow symlinks, as PBS's GC
// does not. Directories are read in full with getdents64, parsed here to
// keep d_type; a DT_UNKNOWN entry is resolved with fstatat on the held
// directory fd, and subdirectories are opened with openat(O_NOFOLLOW), so a
// concurrent rename cannot redirect the walk.
//
// A permission error anywhere stops the walk: GC cannot know what it did
// not see. The one exception is lost+found directly under base, which fsck
// makes root-only on ext4: if it cannot be opened it is skipped, logged at
// debug. An entry that vanishes between the listing of its directory and
// the look at it was pruned concurrently and is skipped.
//
// # Removal
//
// [Forget] removes a snapshot under its exclusive lock (locking's snapshot
// lock, shared with PBS ≥ 3.4): it refuses a snapshot with .protected
// ([ErrProtected]), removes the directory recursively in place, and then
// removes the lock file while still holding it. The recursive delete is
// safe here because it needs no emptiness check: the snapshot is removed
// whatever it holds, and nobody else writes to it while the lock is held.
// An interrupted removal leaves part of the snapshot; forgetting it again
// finishes the job. (Renaming it away to a hidden name first would make the
// removal look atomic, but an interrupted one would then leave a hidden
// directory nobody lists and nobody ever removes.)
//
// Removing the group that became empty is where seed 000's race lives: a
// check that the group is empty followed by a recursive delete removes a
// snapshot created in between. So the group goes only by rmdir, and
// ENOTEMPTY means a snapshot (or anything else) arrived: keep the group.
// The group's exclusive lock is taken first, try-once: if a writer holds
// it, the group is in use and stays. Under the lock the listing is a
// shortcut; then owner is read and unlinked, and rmdir decides. If rmdir
// fails, owner is put back (O_EXCL, so a newcomer's own owner file wins).
// The group's lock file is removed, while held, only with the directory.
// Empty namespace directories stay, as in PBS, where namespaces are
// created and removed explicitly.
//
// # Ingest
//
// [Ingest] is the writer side of the lock protocol, used by the ingest
// command, the demo and the tests that race backups against GC: register
// as a writer, take the group lock for the whole run and the snapshot lock
// while writing, insert every chunk (touching those that exist), sync the
// chunks, then write the fixed indexes and last the manifest, each
// atomically.
package datastore
