// Package gc runs garbage collection on a chunk store: mark every chunk an
// index references, then sweep chunks whose atime is older than a cutoff.
//
// # Run
//
// [Run] takes the GC lock and the store lock (both non-blocking; a held lock
// is [locking.ErrLocked], exit 75), records the start time and the oldest live
// writer, computes min_atime (SPEC §6.2), runs the atime probe unless tuned
// off (which also measures the file server's clock skew: see "Clock skew"),
// then runs phase 1 and phase 2 and writes .gc-status atomically.
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
// stat'ed straight from the listing buffer with cached attributes
// ([chunkstore.PrefixDir.StatCached], no allocation per entry) and counted as
// on-disk, pending or garbage exactly like PBS; only a garbage candidate's name is copied. Garbage is re-stat'ed
// and unlinked under the prefix directory's exclusive flock, so a writer that
// touches or re-inserts the chunk under its shared flock cannot lose it. Any
// error other than ENOENT stops the run: when unsure, keep data.
//
// # Concurrency
//
// Each phase runs on a pool of workers (internal/adapt). With
// gc-concurrency=N exactly N workers run. With the default,
// gc-concurrency=0, the pool sizes itself while the phase runs, because the
// right count depends on the storage, not on the CPUs: on a local disk both
// phases are bound by the kernel and four workers per CPU are as fast as
// any, while on NFS-like storage every touch, listing and stat is a round
// trip and throughput grows with the round trips in flight.
//
// The controller samples throughput (touches per second in phase 1, prefix
// dirs per second in phase 2) every 100 ms, once each slot had time to
// finish a few units. It starts at [DefaultConcurrency] (phase 2 at phase
// 1's final limit), doubles the limit while a doubling raises throughput by
// at least 15 %, and undoes the first that does not; if no doubling paid it
// halves the limit while a halving costs at most 5 % of the best rate seen.
// Then it holds, and every 2 s tries one step again, alternately up and
// down, under the same rules: a pool that settled on a warm cache grows
// when the storage turns slow (latency climbs), and one that grew backs off
// when the extra workers stop paying. A losing probe costs one 100 ms sample
// at a worse limit in every 2 s.
//
// The limit is capped at 128 and at one worker per 16 fds of RLIMIT_NOFILE
// (a sweep worker may hold a prefix dir fd outside the cached ones;
// chunkstore keeps 2,048 fds out of its cache for such uses). The pool's
// goroutines for the whole cap start at once and most wait for a slot; they
// hold nothing while they wait. Phase 1 hands out digests in batches of 64
// from a fixed set of batches, so the touches in flight do not depend on
// how digests are spread over indexes, and a run allocates the same however
// many chunks it touches. The prefix dir check between the phases runs with
// phase 1's final limit. Each phase logs its final and peak limit.
//
// # Round trips
//
// Counted per opcode by TestFUSERoundTrips (CHUNKGC_FUSE_OPS=1) over a
// go-fuse loopback that caches no attribute or entry (timeouts 0), with all
// 65,536 prefix dirs, a store of 2,000 referenced and 200 garbage chunks,
// READDIRPLUS advertised (READDIR without it counts the same):
//
//   - phase 1, per referenced chunk: LOOKUP + SETATTR (utimensat relative to
//     the cached prefix dir fd), plus LOOKUP + OPENDIR for the first touch of
//     a prefix dir. That is the floor: with entry timeout 0 the kernel
//     revalidates the name with a LOOKUP before any call on it.
//   - the prefix check, per dir: before, LOOKUP + GETATTR (fstatat); now
//     LOOKUP + OPENDIR (the sweep's open, its fd cached).
//   - the sweep, per empty prefix dir: before, LOOKUP + OPENDIR + 2
//     READDIRPLUS + RELEASEDIR (5, of them 4 synchronous: the kernel
//     does not wait for RELEASEDIR); now 2 READDIRPLUS + RELEASEDIR (3, of them
//     2 synchronous) for a dir whose fd the check cached. 2 READDIR(PLUS)
//     is the floor over FUSE: a FUSE READDIR reply has no end-of-listing
//     flag, the server returns "." and "..", and only an empty reply ends
//     the listing; one getdents64 makes one request, whatever its buffer
//     size. lseek to 0 on a dir fd is local. Beyond the fd budget
//     (RLIMIT_NOFILE less 2,048; the systemd unit sets 131,072, enough for
//     all 65,536) the check takes the word of one listing of .chunks
//     ([chunkstore.Store.ListPrefixDirs]: a READDIRPLUS reply describes
//     dozens of dirs), which runs in the background from before the atime
//     probe to the check, so that it costs no wall time; a dir it did not
//     show as a directory gets one statx (AT_SYMLINK_NOFOLLOW,
//     AT_STATX_DONT_SYNC: one LOOKUP). The sweep opens such a dir itself
//     (LOOKUP + OPENDIR + 2 READDIRPLUS + RELEASEDIR), 4 synchronous round
//     trips in all where a statx in the check made 5 and an open and close
//     7. A listing that fails stops the run before phase 2.
//   - the sweep, per chunk kept: before, LOOKUP + GETATTR (fstatat: the
//     kernel asks again even right after the LOOKUP); now LOOKUP (statx
//     AT_STATX_DONT_SYNC uses the attributes the LOOKUP brought). Per
//     garbage chunk: before 3 LOOKUP + 2 GETATTR + UNLINK, now 3 LOOKUP + 1
//     GETATTR (the fresh re-stat under the lock) + UNLINK.
//
// No prefix dir is skipped: its own attributes do not tell whether it is
// empty (chunkstore doc "Round trips").
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
//     ([chunkstore.Store.CheckPrefixDirs], run between the phases, and the
//     listing of .chunks it may take the word of) — each is
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
// # Clock skew
//
// Chunk atimes are stamped by the file server's clock; start, min_atime and
// writer start times come from this host's. A server behind by more than
// the writer grace (300 s) could delete chunks a running backup has just
// written; one behind by more than the cutoff would delete every referenced
// chunk phase 1 touched. [Run] therefore holds to this contract:
//
//   - the atime probe measures the skew (chunkstore, "Clock skew") before
//     phase 1. If |skew| exceeds tuning gc-max-clock-skew, Run returns an
//     error matching [chunkstore.ErrClockSkew] that names both clocks, the
//     skew, the bound and the key; phase 1 never starts, nothing is removed
//     and .gc-status is not written. This holds for a server ahead too: an
//     ahead clock only keeps garbage longer in this run, but a clock that far
//     off is not synchronised and may be stepped at any time;
//   - within the bound, when the server is behind by lag (rounded up to
//     whole seconds), min_atime and oldest_writer are both lowered by lag
//     after SPEC §6.2's formula, so that every threshold an atime is compared
//     with is on the server's clock: a chunk phase 1 touched at host time h
//     has atime ≥ h − lag ≥ start − lag > min_atime; a chunk a writer that
//     started at host time w wrote or touched has atime ≥ w − lag, which is
//     still 300 s above min_atime ≤ w − 300 − lag; and the pending/on-disk
//     count (atime < oldest_writer) compares on the same clock. A server
//     ahead changes neither threshold: raising them would be unsafe, and its
//     atimes only look younger;
//   - the measured skew is recorded in [Status.ClockSkewMs]
//     (clock-skew-ms in .gc-status and the JSON output) and in a report line;
//     min-atime and oldest-writer in .gc-status are the lowered values;
//   - with gc-atime-safety-check=0 there is no probe and so no measurement:
//     Run logs that the skew is unmeasured, leaves the thresholds on this
//     host's clock and ClockSkewMs nil.
//
// The skew is measured once, at the start. Lowering the thresholds by the
// measured lag keeps the whole 300 s writer grace as long as the server's
// clock keeps its offset; a clock that drifts or steps back by s during the
// run makes later touches up to s older than predicted, which the writer
// grace (and, for phase 1's touches, the cutoff) absorbs while s < 300 s. A
// clock within the default bound of 30 s is plausibly synchronised, if
// loosely; one further off is not, and how far it moves next is unknown, so
// Run refuses rather than trust a one-time measurement. create refuses on
// the same bound, check-atime reports against it.
//
// # Mass-deletion brake
//
// A namespace on an unmounted filesystem, a half-finished sync or a
// mistaken prune makes most chunks look unused, and past the cutoff phase 2
// would remove them all. So before the sweep's first removal, and after the
// prefix dir check, the brake scans prefix dirs in a pseudo-random order
// (dir off + i·40503 mod 65536, off random per run: the stride is odd, so
// the order visits every dir once, and near 65536/φ, so any first k dirs
// are spread evenly) until it has seen 20,000 chunk files or every dir.
// That scan is the sweep's own lock-free pass ([sweeper.scan]): the sweep
// later takes the candidates it found and goes straight to the locked
// re-decision for those dirs, so the brake adds no listing or stat of its
// own; it only moves that part of the sweep before the first unlink, and
// keeps the candidate names of the sampled dirs (at most ~20,000) in memory.
//
// A store of fewer than 20,000 chunks is scanned whole and the figures are
// exact. Otherwise the chunks of the sampled dirs are a simple random sample
// of the store's (a chunk's prefix is the start of its SHA-256 digest,
// independent of whether an index references it), so the share of garbage
// chunks is estimated by the sample's share with a 3σ bound
// 3·sqrt(p̃(1-p̃)/(n+4)·(1-k/65536)) (Agresti–Coull p̃, finite population
// correction for the k sampled dirs of 65536), at most 1.1 percentage
// points at n = 20,000; the share of bytes by the ratio estimator with its
// linearised 3σ bound. TestBrakeEstimateBound checks on simulated stores
// that the bound covers the truth in at least 99 % of samples. Bad-chunk
// files (<digest>.<n>.bad) are counted in neither share.
//
// The brake trips when the upper bound (estimate + 3σ) of either share is
// above gc-brake-percent (default 50) and the upper bound of the removals
// above gc-brake-min-chunks (default 1000): it errs towards stopping. A
// tripped run removes nothing, writes no .gc-status, logs the figures and
// returns a [*BrakeError] with them (the CLI exits 65 and prints them in
// its JSON). [Options.Force] (--force) lets one run go on, logging the
// figures all the same; a dry run reports whether a real run would trip.
// gc-brake-percent=0 turns it off.
//
// # Deletion journal
//
// Every non-dry run that removes anything writes <base>/.chunkgc/journal/
// <run-id>.journal (package journal), created at its first removal: the
// run's header (min_atime, cutoff, start), then per removed chunk its
// digest, size and atime from the fresh stat that decided the removal, and
// a trailer with the totals and the run's error. .chunkgc is a dot-dir
// beside .chunks, which PBS's GC, verify and group listing never enter;
// each component is opened without following a symlink, so a .chunkgc the
// backup user replaced by a symlink is refused, not followed. A record is
// added after its unlink, and frames reach the file at least every second,
// so a SIGKILL leaves a readable prefix missing at most the last second of
// removals. The journal only records: a journal that cannot be written is a
// warning, never a reason to stop (a full disk is when GC must go on).
// After the trailer, journals beyond gc-journal-keep (default 20; 0 writes
// none) are removed, oldest first.
//
// # Quarantine
//
// With gc-quarantine-hours=N (default 0: off, garbage is unlinked as PBS
// does) phase 2 moves each garbage file, under the same prefix dir
// LOCK_EX and after the same fresh stat that would decide its unlink, by
// renameat2(RENAME_NOREPLACE) to <base>/.chunkgc/quarantine/<run-id>/
// <xxxx>/<name>: the same inode, the same bytes, the same atime. The run
// dir and its xxxx dirs are made at the first chunk that needs them, 0750,
// owned by the backup user, and no component is followed if it is a
// symlink; a quarantine that cannot be made (a symlink planted there, a
// full disk, .chunks on another filesystem: EXDEV) stops the sweep with the
// chunk still in place, since the operator asked for an undo and an unlink
// gives none. The quarantine lies beside .chunks, not inside it, because
// PBS's GC sweeps every file in the 65,536 prefix dirs and would unlink
// the quarantine as garbage, and its verify reads chunks only by digest
// from .chunks; a dot-dir in the base is skipped by PBS's namespace and
// group listing. Each run records its moves in the deletion journal,
// flagged quarantined.
//
// After phase 2 a run purges the quarantine's runs whose start (the time
// in the run id) lies N hours or more before now, journaling each file
// as purged; with quarantine off it purges nothing and warns what it
// keeps. The purge never removes a digest phase 1 could not touch, and it
// comes after phase 1's heal: phase 1 treats a touch that reports ENOENT
// by looking the digest up in the quarantine, newest run first, and
// moving it back (RENAME_NOREPLACE; no lock is needed, since under the GC
// lock nothing else sweeps, and a writer or restore that got there first
// wins), then touches it, counts it in healed-chunks and logs a warning. So
// a GC bug, a file server's skewed clock or a mistaken prune that made a
// referenced chunk garbage costs a warning at the next run, not the chunk,
// as long as that run comes within N hours — and phase 1 heals from
// whatever quarantine there is, even with quarantine turned off since.
//
// [Restore] (chunkgc restore) moves quarantined files back, all of them or
// those of one run or some digests. It takes neither the GC lock nor the
// store lock, so it runs while a backup or a GC runs: each file moves under
// its prefix dir's LOCK_SH (a writer's lock) by RENAME_NOREPLACE and is
// touched before the lock is released. A concurrent sweep decides and moves
// under the dir's LOCK_EX, after a fresh stat: it either took the chunk
// before the restore (which then finds it in the quarantine) or sees it
// back with an atime of now, after any running GC's min_atime. A writer
// that stored the chunk again meanwhile keeps its copy (the quarantined
// one stays for the purge); a purge that got there first means the file is
// gone (ENOENT). If the touch fails the file goes back to the quarantine.
// # Resumable runs
//
// A non-dry run writes <base>/.chunkgc/checkpoint (versioned JSON; the
// state dir made by [nofollow.MkdirAll] from the base fd, owned by the
// owner; the file replaced by internal/atomicfile relative to that dir fd,
// so a symlinked .chunkgc or checkpoint is refused or replaced, never
// followed) at most every 5 s while a phase runs, at the phase transition,
// when the brake has decided, and when the run stops on an error or a
// signal. It holds the run's upid and start, min_atime, oldest_writer, the
// cutoff and the clock skew, the phase, each phase's low-water mark with
// the counters of the work below it, whether the brake decided, and the
// untouched set. The marks count completion, not hand-out: in phase 1 a
// group is done once the walker finished it and every batch of it was
// touched to the end, and every earlier group of the walk is done; in
// phase 2 every prefix dir below next was swept to the end. A batch or dir
// dropped by a cancellation never completes, so a checkpoint never claims
// work that was not done. Phase 1's mark is the set of done groups (8-byte
// SHA-256 prefixes of their paths), not a key in the walk order: a group
// that sorts before the key but that the interrupted run never saw (a
// namespace that was unmounted — the brake stops exactly that run — or a
// group moved or copied in by hand) must be marked, and no backup writer
// vouches for its chunks.
//
// The next run reads the checkpoint (at most 64 MiB, O_NONBLOCK, a regular
// file, no symlink followed) after it took the locks, computed its own
// min_atime and re-ran the atime probe. A checkpoint that does not parse,
// has an unknown field or version, names another base, has thresholds that
// do not fit together or progress out of range, lies in the future, is
// older than gc-resume-max-age (counted from the first start of a chain of
// resumed runs), or meets --fresh or gc-resume-max-age=0, is a warning and
// is removed; the run starts over. Otherwise the run resumes: min_atime
// and oldest_writer become the older of the checkpoint's and its own;
// phase 1 lists the whole tree again, marks every group not in the done
// set in full (newest first, with the re-list of SPEC §6.3), and for a done
// group opens no index, except one whose file or snapshot dir has a ctime
// at or after the interrupted start less its lag and the writer grace; the
// strange-index pass is re-done in full. A resumed sweep starts at the
// checkpoint's next dir with its counters, and skips the brake if it had
// decided (any sweep progress implies it had). After the .gc-status of a
// finished run the checkpoint is removed; a dry run neither reads nor
// writes it.
//
// Why the old min_atime is safe. Write m for it, s for the interrupted
// start, lag for the lag it measured; m ≤ s − cutoff − lag and
// m ≤ w − 300 − lag for every writer w live at s.
//
//   - Chunks the interrupted run touched carry atime ≥ s − lag > m, and a
//     resumed run's min_atime is never later than m: the done groups need
//     no new touch.
//   - Writers registered since, and PBS writers between the runs (GC holds
//     the store lock, so none runs during one), started after s: every
//     chunk they wrote or touched carries atime ≥ s − lag > m (up to the
//     drift the writer grace absorbs, as in "Clock skew").
//   - Writers live at s are in m through oldest_writer already.
//   - Indexes created since in a done group, and the prune/backup race of
//     SPEC §6.3: a backup reuses untouched only chunks of its group's
//     previous snapshot. By induction over the snapshots of a done group
//     made since, each chunk they reference was written or touched by their
//     writer (atime > m) or is a chunk of the snapshot that was newest when
//     the interrupted run marked the group, which that run touched (atime
//     > m) — whether or not prune removed it since. Such snapshots also
//     have a new ctime and are marked again anyway.
//   - Groups and snapshots that appear without a writer (hidden namespace
//     back, manual copy or move) are not in the done set, or have a new
//     ctime: they are marked in full.
//   - Chunks the interrupted run could not touch (ENOENT) stay in the
//     untouched set and are kept.
//   - Clock skew: the probe runs again and a skew above gc-max-clock-skew
//     stops the run. Resuming with min(m, m′), m′ the new run's own
//     min_atime lowered by the new lag, keeps every threshold at or below
//     both runs' bounds, so neither clock's chunks are judged by the other.
//   - Dirs below next were swept under m; the garbage set of the rest can
//     only have shrunk (atimes only grow, m is fixed or lower), so the
//     brake's decision before the first removal still holds.
//
// The counters of .gc-status are the checkpoint's for the work it covers
// plus this run's for the rest: index-file-count and index-data-bytes
// count a done group's indexes as the interrupted run found them; chunks
// removed by the interrupted run in dirs above next are not counted.
// touched-chunks and swept-prefix-dirs are this run's alone; resumed-from
// and resumed-phase name the run resumed.
//
// # S3 datastores
//
// With [Options.S3] the run collects a PBS 4.2 S3 datastore (SPEC §12): the
// store is its local cache, which holds all metadata, and the chunks are
// the objects <store>/.chunks/<p>/<hex> of the bucket. The run takes the
// same locks, reads the writer registry and runs the atime probe on the
// cache as for a filesystem datastore; then:
//
//   - Start: one HEAD on the bucket reads the server's clock (its Date
//     header). A skew beyond gc-max-clock-skew, in either direction and
//     counting the header's whole-second rounding and the round trip,
//     stops the run. The object cutoff is min_atime moved into the
//     server's clock by the smallest skew the answer allows, so that
//     LastModified, which the server stamps, is compared in the clock that
//     stamped it. One GET reads <store>/.in-use: a marker naming another
//     host than this one's node name as PBS writes it (the UTS node name
//     up to its first dot, [objstore.Nodename]) stops the run
//     ([ErrS3InUse]); chunkgc create writes the marker.
//   - Phase 1 touches the cache files as the filesystem mark does; nothing
//     goes to S3. A referenced chunk without a local file is handled as
//     PBS does, under its chunk lock (waited for, at most 10 min: an
//     upload holds it): touched again, else its bad copies, else marked
//     <hex>.using.
//   - Phase 2 streams the listing of <store>/.chunks/ (one page in memory
//     per key range, see "S3 key ranges") and decides each key under its
//     chunk lock, taken once without waiting (busy: kept, counted). Only keys of exactly 64 lowercase hex
//     digits (or that and .N.bad) under their own prefix dir are chunks;
//     every other key is foreign and never deleted. A bad key's local
//     file is <hex>.N.bad (PBS appends the suffix twice and then deletes
//     such an object unchecked, or aborts). An object is deleted only with
//     two independent proofs that it is unused: the local evidence (a
//     file of its name with an atime before min_atime, or no file and no
//     .using marker) and a listed LastModified before the object cutoff
//     (absent: young). PBS has only the first, which loses objects
//     uploaded through its no-cache path and after a lost or re-created
//     cache: their indexes are not finished or not local, so there is no
//     local evidence, and they are young. A .using marker becomes an
//     empty marker, as in PBS. Deleting removes the local file first —
//     uploaders take a local file to mean that the object exists — then
//     queues the key with its lock held; a batch of 100 (or one whose
//     first key waited 30 s, or the last) goes in one DeleteObjects, and
//     the locks are released only when the server has answered. Any key
//     the server refused or left unanswered stops the run naming it; what
//     such a crash leaves, an object without a local file, is harmless
//     (an uploader re-uploads and gets 412) and goes in a later run once
//     both proofs hold. So do the keys queued when the run stops on an
//     error: they are not sent.
//   - Phase 3 sweeps the cache without a request to S3: every .using
//     marker goes (phase 2 acted on it), and every cache file or bad copy
//     with an atime before min_atime, re-stat'ed under its chunk lock
//     taken once — a cache file without its object would make an
//     uploader skip the upload.
//
// Before anything is marked the run checks that the cache holds the
// datastore's indexes: it lists <store>/.cnt/, where PBS and chunkgc's
// ingest keep a copy of every metadata file, and refuses the run
// (ErrS3CacheIncomplete, naming the keys) when an index object (.fidx,
// .didx) has no regular file at its relative path in the cache (opened
// O_PATH without following a symlink; a key that is no plain relative
// path counts as missing). Phase 1 marks from the cache's indexes only: a
// cache that lost them — its disk replaced, re-created empty — leaves
// their chunks unmarked while their objects are old, and both proofs
// would hold for every one of them. Writers keep the cache a superset of
// the objects (an ingest writes an index before it uploads it; forget and
// a failed ingest delete the objects before the local files), so a
// complete cache always passes. PBS has no such check; its reuse of a
// datastore refreshes the cache's metadata from the bucket, which is the
// way out of a refused run.
//
// Before the atime probe, which runs before phase 1 unless tuned off, the
// run reads <store>/.in-use and uploads the probe's zero chunk
// (chunkstore.Store.InsertZeroChunkS3) before the probe caches it: a cache
// file that claims a missing object makes uploaders skip the upload.
//
// Requests: the GET, ⌈metadata objects/1000⌉ LIST (at least one) of
// .cnt/, the probe's PUT and the HEAD at the start, at most ⌈objects/1000⌉ + R
// LIST requests for R key ranges (exactly ⌈objects/1000⌉ with one) and
// ⌈deleted/100⌉ POST requests (more only for batches the 30 s limit sent
// early); nothing per object. Not applied to S3 runs yet: the
// mass-deletion brake, the deletion journal, the quarantine and resuming
// an interrupted run.
//
// # S3 key ranges
//
// Phase 2 lists gc-s3-list-ranges key ranges (default 16; 1 is PBS's single
// listing) in parallel, split at the first hex digit of the prefix dir:
// with digit boundaries d_i = ⌊i·16/R⌋, range i holds the keys k with
// <store>/.chunks/d_i < k ≤ <store>/.chunks/d_{i+1} — ListObjectsV2's
// start-after for the lower bound (exclusive, as S3 has it) and, for the
// upper, the end of the iteration at the first key ≥ that bound plus a NUL
// byte, the least string above it. The first range starts at the
// listing's start, the last runs to its end, so every key of the listing,
// a foreign one too, is listed by exactly one range, and every chunk key
// of prefix dirs d… by the range of d. A range's listing reads one page
// beyond its keys (to see the first key past its end): ⌊n_i/1000⌋ + 1
// pages, which sums to at most ⌈objects/1000⌉ + R. A range decides its
// keys in key order, one at a time, each under its chunk lock exactly as a
// single listing does, and keeps the cache's prefix dir open across the
// consecutive keys of one prefix dir (taken from the store's fd cache,
// which the prefix dir check filled, so usually not opened at all). The
// ranges share nothing but the delete queue and the figures, which each
// range keeps and the run adds up at the end.
//
// The delete batches are shared, not per range: the range whose key fills
// the open batch (100 keys), or finds its first key older than 30 s, takes
// it and sends it while the others go on. Shared, so that every batch but
// the last is full and the POSTs stay ⌈deleted/100⌉ (per-range batches
// would add up to R − 1 partial ones), and so that a writer waiting on a
// queued chunk's lock does not wait for a slow range to fill its own
// batch. Each queued key holds its chunk lock, one open fd, until its
// batch is answered; a key takes a place in the queue before its local
// file is removed, and the places are bounded at 400 (four batches, filled
// or in flight), so that with a lock per range being decided and a prefix
// dir per range a sweep holds at most 400 + 2·16 fds beside its HTTP
// connections whatever R is: inside the 2,048 fds chunkstore keeps out of
// its prefix dir cache, and inside a 1,024 soft limit. A range that finds
// no place waits for a batch in flight to be answered.
//
// The first error in any range — a listing, a local file, a key the server
// refused or left unanswered — cancels the others and stops the run with
// that error (the others' cancels are not reported). A DeleteObjects
// already in flight is cancelled neither by it nor by the run's context (a
// signal): its locks are released only once the server has answered (or
// after 60 s without an answer), so that no uploader takes a lock, gets
// 412 for an object the server is about to delete and caches it; nothing
// more is sent. A dry run decides and counts as a real one and queues
// nothing. The test hook that runs before each key is called one key at a
// time.
//
// # Status
//
// [Status] carries PBS's kebab-case counters; it is written to
// <base>/.gc-status only after a successful, non-dry run. For an S3
// datastore .gc-status is PBS's and nothing more ([PBSStatus]: the fields
// of GarbageCollectionStatus in its order, cache-stats last, one line
// without a newline), its figures the listed objects' with their listed
// sizes as PBS 4.2 counts them (S3SweepCounts.setStatus): in use in
// disk-* (bad ones in the bytes only), deleted in removed-*, unused but
// kept for safety in pending-* (an atime before the oldest writer, and
// the young objects PBS would have deleted; bad ones in still-bad), busy
// and foreign keys in none. chunkgc's own (young objects kept, busy keys,
// foreign keys, requests by method) are in the s3 object of the JSON
// output and the metrics.
package gc
