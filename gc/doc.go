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
// # Status
//
// [Status] carries PBS's kebab-case counters; it is written to
// <base>/.gc-status only after a successful, non-dry run.
package gc
