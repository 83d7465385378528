package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/adapt"
	"chunkgc/journal"
)

// sweepCounts are one worker's phase 2 counters, merged at the end so the
// result does not depend on how prefix dirs were spread over workers.
type sweepCounts struct {
	diskBytes, removedBytes, pendingBytes uint64
	diskChunks, removedChunks             int64
	pendingChunks, removedBad, stillBad   int64
	notChunks                             int64
	keptUntouched, keptLinked             int64
}

func (c *sweepCounts) add(o *sweepCounts) {
	c.diskBytes = satAdd(c.diskBytes, o.diskBytes)
	c.removedBytes = satAdd(c.removedBytes, o.removedBytes)
	c.pendingBytes = satAdd(c.pendingBytes, o.pendingBytes)
	c.diskChunks += o.diskChunks
	c.removedChunks += o.removedChunks
	c.pendingChunks += o.pendingChunks
	c.removedBad += o.removedBad
	c.stillBad += o.stillBad
	c.notChunks += o.notChunks
	c.keptUntouched += o.keptUntouched
	c.keptLinked += o.keptLinked
}

// keep counts a chunk that stays, exactly as PBS does: pending when its atime
// is before the oldest writer's start, else on disk. Bad chunks count as
// still-bad when pending and only by their bytes when on disk.
func (c *sweepCounts) keep(atime, oldestWriter int64, size uint64, bad bool) {
	if atime < oldestWriter {
		if bad {
			c.stillBad++
		} else {
			c.pendingChunks++
		}
		c.pendingBytes = satAdd(c.pendingBytes, size)
		return
	}
	if !bad {
		c.diskChunks++
	}
	c.diskBytes = satAdd(c.diskBytes, size)
}

func (c *sweepCounts) removed(size uint64, bad bool) {
	if bad {
		c.removedBad++
	} else {
		c.removedChunks++
	}
	c.removedBytes = satAdd(c.removedBytes, size)
}

type candidate struct {
	name string
	bad  bool
	size uint64 // from the lock-free pass; a real run stats again under the lock
}

type sweeper struct {
	store        *chunkstore.Store
	untouched    *untouchedSet // read-only here
	log          *zap.Logger
	dryRun       bool
	minAtime     int64
	oldestWriter int64
	// pre holds the prefix dirs the brake scanned (nil: none): the sweep
	// goes straight to their candidates.
	pre *brakeSample
	// jr records every removal (nil: no journal).
	jr *runJournal
	// q takes garbage instead of unlink (nil: quarantine off).
	q    *quarantine
	prog *Tracker     // nil in benchmarks
	next atomic.Int64 // next prefix dir to take
	done atomic.Int64 // prefix dirs finished

	// Resumable runs (resume.go): tr tracks which prefix dirs are fully
	// swept, base holds the counts of the dirs a resumed run skips, cp
	// writes checkpoints (nil: none), swept counts this run's dirs.
	tr    *sweepTracker
	base  sweepCounts
	cp    *checkpointer
	swept atomic.Int64
	after func(p int) // test hook: hooks.afterSweptDir
}

func newSweeper(store *chunkstore.Store, opts *Options, log *zap.Logger, st *Status, untouched *untouchedSet) *sweeper {
	return &sweeper{store: store, untouched: untouched, log: log, dryRun: opts.DryRun, minAtime: st.MinAtime, oldestWriter: st.OldestWriter}
}

// sweep runs phase 2; an adaptive pool starts at start workers (phase 1's
// last limit).
func (s *sweeper) sweep(parent context.Context, opts *Options, start int, st *Status) error {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	log := s.log

	var (
		mu    sync.Mutex
		total sweepCounts
		wg    sync.WaitGroup
	)
	total.add(&s.base)
	if s.pre != nil {
		defer s.pre.close()
	}
	pool := opts.pool(ctx, "sweep", start, log)
	for range pool.Workers() {
		wg.Go(func() {
			var c sweepCounts
			w := pool.Worker()
			if err := s.worker(ctx, w, &c); err != nil {
				cancel(err)
			}
			w.Exit()
			mu.Lock()
			total.add(&c)
			mu.Unlock()
		})
	}
	wg.Wait()
	opts.stopPool(pool, log)
	if parent.Err() != nil {
		return errCanceled(parent, "phase 2")
	}
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("phase 2: %w", err)
	}
	st.DiskBytes, st.DiskChunks = total.diskBytes, total.diskChunks
	st.RemovedBytes, st.RemovedChunks = total.removedBytes, total.removedChunks
	st.PendingBytes, st.PendingChunks = total.pendingBytes, total.pendingChunks
	st.RemovedBad, st.StillBad = total.removedBad, total.stillBad
	st.NotChunks = total.notChunks
	st.KeptUntouched, st.KeptLinked = total.keptUntouched, total.keptLinked
	st.SweptPrefixDirs = s.swept.Load()
	if total.keptUntouched > 0 {
		log.Warn("kept chunks that phase 1 could not touch (ENOENT) but that exist: an index references them",
			zap.Int64("count", total.keptUntouched))
	}
	if total.keptLinked > 0 {
		log.Warn("kept garbage chunk files with more than one hard link: removing a name of a linked file frees nothing, and the other name may lie outside the store",
			zap.Int64("count", total.keptLinked))
	}
	if total.notChunks > 0 {
		log.Info("files in the chunk store that are not chunks were left alone", zap.Int64("count", total.notChunks))
	}
	return nil
}

func (s *sweeper) worker(ctx context.Context, w *adapt.Worker, c *sweepCounts) error {
	done := ctx.Done()
	var cands []candidate
	st := new(unix.Statx_t) // one per worker: the seam keeps it from the stack
	for w.Next() {
		p := s.next.Add(1) - 1
		if p >= chunkstore.PrefixCount {
			return nil
		}
		select {
		case <-done:
			return context.Cause(ctx)
		default:
		}
		var err error
		var dc sweepCounts // this dir's, for the checkpoint's low-water mark
		if s.pre.has(uint16(p)) {
			err = s.sampled(ctx, uint16(p), &dc, st)
		} else {
			cands, err = s.prefix(ctx, uint16(p), &dc, st, cands[:0])
		}
		c.add(&dc)
		if err != nil {
			return err
		}
		s.tr.finish(int(p), &dc)
		s.swept.Add(1)
		s.cp.tick()
		if s.after != nil {
			s.after(int(p))
		}
		w.Done(1)
		s.prog.add(1)
		if n := s.done.Add(1); n%(chunkstore.PrefixCount/10) == 0 {
			s.log.Info("sweep progress", append([]zap.Field{zap.Int64("percent", 100*n/chunkstore.PrefixCount)}, s.prog.logFields(true)...)...)
		}
	}
	return context.Cause(ctx) // Next is false only when ctx was cancelled
}

// prefix sweeps one prefix dir: a lock-free pass ([sweeper.scan]) classifies
// and counts every entry and collects the candidates; then, under the dir's
// exclusive lock, each candidate is stat'ed again and unlinked only if it is
// still garbage ([sweeper.remove]). The dir fd is the one
// [chunkstore.Store.CheckPrefixDirs] opened and checked when the fd budget
// allowed: the listing, the flock, the stats and the unlinks all go through
// it.
func (s *sweeper) prefix(ctx context.Context, p uint16, c *sweepCounts, st *unix.Statx_t, cands []candidate) ([]candidate, error) {
	dir, err := s.take(p)
	if dir == nil {
		return cands, err
	}
	defer dir.Close()
	cands, err = s.scan(ctx, dir, c, st, cands, nil)
	if err != nil {
		return cands, err
	}
	return cands, s.remove(ctx, dir, cands, c, st)
}

// take takes prefix dir p for the sweep; a missing dir is (nil, nil), with
// a warning.
func (s *sweeper) take(p uint16) (*chunkstore.PrefixDir, error) {
	dir, err := s.store.TakePrefix(p)
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("prefix directory missing, nothing to sweep there", zap.Uint16("prefix", p))
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open prefix dir: %w", err)
	}
	return dir, nil
}

// scan is the lock-free pass over a prefix dir: it classifies and counts
// every entry and appends the candidates to cands. It allocates nothing per
// entry (BenchmarkSweep, TestMarkSweepAllocsFlat), only a name per
// candidate; st is scratch space. It stats from the kernel's cached
// attributes where it has them ([chunkstore.PrefixDir.StatCached]); the
// locked pass stats afresh ([chunkstore.PrefixDir.StatFresh]) and alone
// decides a removal. t, when not nil, tallies every chunk for the brake.
func (s *sweeper) scan(ctx context.Context, dir *chunkstore.PrefixDir, c *sweepCounts, st *unix.Statx_t, cands []candidate, t *brakeTally) ([]candidate, error) {
	done := ctx.Done()
	err := dir.ReadNames(func(name []byte, _ uint8) error {
		select {
		case <-done:
			return context.Cause(ctx)
		default:
		}
		kind, d := chunkstore.Classify(name)
		if kind == chunkstore.KindOther {
			c.notChunks++
			return nil
		}
		if err := dir.StatCached(name, st); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil
		}
		bad := kind == chunkstore.KindBad
		if st.Atime.Sec < s.minAtime && !s.keepAnyway(dir, name, &d, st, c) {
			cands = append(cands, candidate{name: string(name), bad: bad, size: st.Size})
			if t != nil && !bad {
				t.add(st.Size, true)
			}
			return nil
		}
		if t != nil && !bad {
			t.add(st.Size, false)
		}
		c.keep(st.Atime.Sec, s.oldestWriter, st.Size, bad)
		return nil
	})
	if err != nil {
		return cands, fmt.Errorf("sweep %s: %w", dir.Name(), err)
	}
	return cands, nil
}

// remove disposes of the candidates scan found in dir: a dry run counts
// them; a real run decides each again under the dir's exclusive flock.
func (s *sweeper) remove(ctx context.Context, dir *chunkstore.PrefixDir, cands []candidate, c *sweepCounts, st *unix.Statx_t) error {
	if len(cands) == 0 {
		return nil
	}
	if s.dryRun {
		for _, cd := range cands {
			c.removed(cd.size, cd.bad)
			s.prog.removal(cd.size)
		}
		return nil
	}
	unlock, err := dir.Lock(true)
	if err != nil {
		return fmt.Errorf("lock prefix dir %s: %w", dir.Name(), err)
	}
	err = s.removeLocked(ctx, dir, cands, c, st)
	return errors.Join(err, unlock())
}

// sampled finishes prefix dir p, which the brake already scanned: it removes
// the candidates the scan found, through the dir the brake kept open or a
// fresh open.
func (s *sweeper) sampled(ctx context.Context, p uint16, c *sweepCounts, st *unix.Statx_t) error {
	cands, dir, counts := s.pre.take(p)
	c.add(&counts)
	if len(cands) == 0 {
		return nil
	}
	if dir == nil {
		var err error
		if dir, err = s.take(p); dir == nil {
			return err
		}
	}
	defer dir.Close()
	return s.remove(ctx, dir, cands, c, st)
}

// keepAnyway reports whether a chunk file older than min_atime must stay
// all the same, counting why: its digest is one phase 1 could not touch
// (ENOENT, so an index references it and the filesystem lied or raced), or it
// has more than one hard link (unlinking frees nothing; the other name may be
// outside the store).
func (s *sweeper) keepAnyway(dir *chunkstore.PrefixDir, name []byte, d *blob.Digest, st *unix.Statx_t, c *sweepCounts) bool {
	if s.untouched.has(d) {
		c.keptUntouched++
		s.log.Warn("keeping chunk that phase 1 could not touch: an index references it",
			zap.String("chunk", dir.Name()+"/"+string(name)), zap.Time("atime", time.Unix(st.Atime.Sec, int64(st.Atime.Nsec)).UTC()))
		return true
	}
	if st.Nlink > 1 {
		c.keptLinked++
		if ce := s.log.Check(zap.DebugLevel, "keeping hard-linked chunk file"); ce != nil {
			ce.Write(zap.String("chunk", dir.Name()+"/"+string(name)), zap.Uint64("links", uint64(st.Nlink)))
		}
		return true
	}
	return false
}

// removeLocked decides every candidate again under the prefix dir's
// exclusive flock, from a fresh stat (not the cached attributes of the first
// pass), and unlinks it if it is still a single-linked regular file older
// than min_atime.
func (s *sweeper) removeLocked(ctx context.Context, dir *chunkstore.PrefixDir, cands []candidate, c *sweepCounts, st *unix.Statx_t) error {
	done := ctx.Done()
	qd := qdir{fd: -1}
	defer qd.close()
	for _, cd := range cands {
		select {
		case <-done:
			return context.Cause(ctx)
		default:
		}
		if err := dir.StatFresh(cd.name, st); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("sweep %s/%s: %w", dir.Name(), cd.name, err)
		}
		if st.Atime.Sec >= s.minAtime || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink > 1 {
			c.keep(st.Atime.Sec, s.oldestWriter, st.Size, cd.bad)
			continue
		}
		if err := s.dispose(dir, cd.name, &qd); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if cd.bad {
				c.stillBad++
			}
			return fmt.Errorf("remove %s/%s: %w", dir.Name(), cd.name, err)
		}
		c.removed(st.Size, cd.bad)
		s.prog.removal(st.Size)
		var flags journal.Flags
		if cd.bad {
			flags |= journal.Bad
		}
		if s.q != nil {
			flags |= journal.Quarantined
		}
		s.jr.add(cd.name, st, flags)
		if ce := s.log.Check(zap.DebugLevel, "chunk removed"); ce != nil {
			ce.Write(zap.String("chunk", dir.Name()+"/"+cd.name))
		}
	}
	return nil
}

// dispose takes one chunk file that removeLocked decided is garbage out of
// the store, under the prefix dir's exclusive lock: it unlinks it, or with
// quarantine on moves it to the run's quarantine dir for the prefix (qd,
// opened at the prefix's first garbage chunk).
func (s *sweeper) dispose(dir *chunkstore.PrefixDir, name string, qd *qdir) error {
	if s.q == nil {
		return dir.Unlink(name)
	}
	for attempt := 0; ; attempt++ {
		if qd.fd < 0 {
			fd, path, err := s.q.prefixDir(dir)
			if err != nil {
				return err
			}
			qd.fd, qd.dir = fd, path
		}
		err := dir.MoveTo(name, qd.fd, qd.dir)
		if !errors.Is(err, fs.ErrNotExist) || attempt > 0 {
			return err
		}
		// The chunk is gone, or a restore removed the emptied quarantine
		// dir: open it again and retry once.
		qd.close()
	}
}
