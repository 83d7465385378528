// Package gc runs garbage collection on a chunk store: mark every chunk an
// index references, then sweep chunks whose atime is older than a cutoff.
//
// # Run
//
// [Run] takes the GC lock and the store lock (both non-blocking; a held lock
// is [locking.ErrLocked], exit 75), records the start time and the oldest live
// writer, runs the atime probe unless tuned off, computes min_atime (SPEC
// §6.2), then runs phase 1 and phase 2 and writes .gc-status atomically.
//
// # Phase 1: mark
//
// The store is walked once for every index file (the initial listing). Then
// every group's snapshots are walked newest first; each index is opened by the
// walker (an open fd keeps a concurrently pruned index readable) and its
// digests are streamed in batches to a pool of touch workers. If the newest
// snapshot's index vanished before it could be opened, the group is listed
// again (up to ten times, the last under the group's exclusive lock): a backup
// that reused that snapshot's chunks without touching them has finished a
// newer snapshot, which must be marked instead. Index files of the initial
// listing that no group walk reached lie outside the expected scheme; they are
// marked too and counted. A bounded digest cache skips chunks already touched.
// Each touch worker has its own [chunkstore.Toucher], so touching allocates
// nothing per chunk.
//
// # Phase 2: sweep
//
// Prefix directories are sharded across workers. Each entry is classified,
// stat'ed straight from the listing buffer ([chunkstore.PrefixDir.StatBytes],
// no allocation per entry) and counted as on-disk, pending or garbage exactly
// like PBS; only a garbage candidate's name is copied. Garbage is re-stat'ed
// and unlinked under the prefix directory's exclusive flock, so a writer that
// touches or re-inserts the chunk under its shared flock cannot lose it. Any
// error other than ENOENT stops the run: when unsure, keep data.
//
// # No escape and doubt
//
// GC runs as root in directories the backup user owns, and it is the only
// part of chunkgc that deletes. The rules, with the package that keeps each:
//
//  1. Nothing outside the store and its lock directory is created,
//     modified (atime included), chowned or removed, whatever the backup
//     user plants or swaps in while GC runs: the store lock, the index tree,
//     .chunks, the prefix dirs and .gc-status are all reached from the
//     store's base fd without following a symlink (chunkstore, datastore,
//     locking, internal/nofollow); .gc-status is replaced by tmp file and
//     renameat relative to the base fd (a symlink planted there is replaced,
//     never followed).
//  2. Doubt stops the run before phase 2: a symlink, FIFO, socket or device
//     where the tree expects a namespace, group, snapshot or index, an index
//     path longer than the kernel accepts (datastore), a .chunks or prefix
//     dir that is a symlink or not a directory
//     ([chunkstore.Store.CheckPrefixDirs], run between the phases) — each is
//     an error naming the path, and nothing is removed.
//  3. A chunk phase 1 could not touch is never swept: a touch that reports
//     ENOENT (a flaky network filesystem can say so of a chunk that exists)
//     records the digest in a bounded set (262,144 digests); phase 2 keeps
//     any chunk or bad copy with a recorded digest, counts it
//     (kept-untouched-chunks) and warns. More missing chunks than the set
//     holds stop the run before phase 2.
//  4. A garbage file with more than one hard link is kept
//     (kept-linked-chunks): removing one name frees nothing, and the other
//     name may lie outside the store.
//  5. Byte counters saturate at the largest uint64 instead of wrapping: an
//     index header or a sparse file can claim any size.
//
// # Status
//
// [Status] carries PBS's kebab-case counters; it is written to
// <base>/.gc-status only after a successful, non-dry run.
package gc
