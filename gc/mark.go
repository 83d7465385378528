package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/datastore"
	"chunkgc/internal/adapt"
	"chunkgc/locking"
)

// batchSize is the most digests handed to a touch worker at once. It is
// small so that the touches in flight do not depend on how the digests are
// spread over indexes: 20 indexes of 1,000 digests and one of 20,000 both
// make hundreds of batches, enough for every worker of a pool grown for
// network storage, while a batch still carries enough work (64 touches)
// that handing it over costs nothing measurable.
const batchSize = 64

// maxMissingWarnings bounds the per-chunk warnings for missing chunks; the
// rest are counted and summarised.
const maxMissingWarnings = 100

type batch struct {
	index string // relative path, for warnings
	group int    // the walk's number of its group (markTracker); -1 outside a group
	n     int
	d     [batchSize]blob.Digest
}

// marker is phase 1: one walker (the caller's goroutine) lists groups and
// snapshots and streams index digests in batches to touch workers.
type marker struct {
	store *chunkstore.Store
	locks *locking.Dir
	opts  *Options
	log   *zap.Logger
	base  string
	tree  *datastore.Tree // the store's tree, open while walk runs
	cache *digestCache

	ctx    context.Context // cancelled on the first worker error
	cancel context.CancelCauseFunc
	pool   *adapt.Pool // nil with one worker
	work   chan *batch
	free   chan *batch // the run's batches not in use: a fixed set
	// toucher touches inline when there is one worker (work == nil); each
	// touch worker has its own.
	toucher *chunkstore.Toucher

	initial map[string]bool // initial listing: rel path -> still unmarked
	marked  map[string]bool // rel paths counted already

	indexFiles   int64
	indexBytes   uint64
	newIndexes   int64
	strange      int64
	totalIndexes int

	missing      atomic.Int64
	expected     atomic.Int64 // S3: referenced, not cached: <hex>.using
	untouched    *untouchedSet
	heal         *healer // nil: no quarantine to heal from
	prog         *Tracker
	cacheHits    atomic.Int64
	cacheLookups atomic.Int64
	touched      atomic.Int64

	// Resumable runs (resume.go): tr tracks which groups are fully
	// marked, cur is the walker's current group (-1 outside one), res is
	// the checkpoint resumed (nil: none), cp writes checkpoints (nil: none).
	tr                *markTracker
	res               *resumeState
	cp                *checkpointer
	cur               int
	skipped, remarked int64
}

// errTooManyUntouched stops a run whose phase 1 could not touch more
// referenced chunks than it can remember (see untouchedSet).
var errTooManyUntouched = errors.New("more referenced chunks could not be touched (ENOENT) than GC can remember; not sweeping, since a chunk that exists but was reported missing would be removed")

// mark runs phase 1 and returns its last worker limit.
func mark(parent context.Context, store *chunkstore.Store, locks *locking.Dir, opts *Options, log *zap.Logger, st *Status, untouched *untouchedSet, heal *healer, prog *Tracker, rs markResume) (workers int, err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	m := &marker{
		store: store, locks: locks, opts: opts, log: log, base: store.Base(),
		cache:     newDigestCache(opts.Tuning.CacheCapacity),
		ctx:       ctx,
		cancel:    cancel,
		initial:   make(map[string]bool),
		marked:    make(map[string]bool),
		untouched: untouched,
		heal:      heal,
		prog:      prog,
	}
	m.resume(rs)
	var wg sync.WaitGroup
	workers = 1
	if opts.Tuning.Concurrency != 1 {
		m.pool = opts.pool(ctx, "mark", 0, log)
		m.work = make(chan *batch, queuedBatches)
		m.newBatches(queuedBatches + m.pool.Workers())
		for range m.pool.Workers() {
			wg.Go(m.touchWorker)
		}
	} else {
		m.toucher = store.NewToucher()
		m.newBatches(1)
	}
	walkErr := m.walk()
	if m.work != nil {
		close(m.work)
	}
	wg.Wait()
	if m.pool != nil {
		workers = opts.stopPool(m.pool, log).Final
	}

	if parent.Err() != nil {
		return workers, errCanceled(parent, "phase 1")
	}
	if walkErr == nil {
		walkErr = context.Cause(ctx)
		if errors.Is(walkErr, context.Canceled) {
			walkErr = nil
		}
	}
	if walkErr != nil {
		return workers, fmt.Errorf("phase 1: %w", walkErr)
	}
	if untouched.overflow {
		return workers, fmt.Errorf("phase 1: %w", errTooManyUntouched)
	}
	st.IndexFileCount = m.indexFiles
	st.IndexDataBytes = m.indexBytes
	st.NewIndexFiles = m.newIndexes
	st.StrangeIndexFiles = m.strange
	st.MissingChunks = m.missing.Load()
	if opts.S3 != nil {
		st.S3Expected = m.expected.Load()
	}
	st.CacheHits = m.cacheHits.Load()
	st.CacheLookups = m.cacheLookups.Load()
	st.TouchedChunks = m.touched.Load()
	st.ResumeSkippedIndexes, st.ResumeRemarkedIndexes = m.skipped, m.remarked
	if n := st.MissingChunks; n > maxMissingWarnings {
		log.Warn("more chunks were missing than were logged", zap.Int64("missing", n), zap.Int("logged", maxMissingWarnings))
	}
	log.Info("phase 1 finished", zap.Int64("index-files", m.indexFiles), zap.Int64("touched", m.touched.Load()),
		zap.Int64("cache-hits", st.CacheHits), zap.Int64("missing", st.MissingChunks),
		zap.Int64("strange-index-files", m.strange), zap.Int64("new-index-files", m.newIndexes))
	return workers, nil
}

// walk runs in the caller's goroutine: initial listing, groups newest first,
// then the index files no group walk reached.
//
// Every listing and index open goes through the store's tree, which
// follows no symlink below the base; anything it doubts (an entry of the
// wrong type where the scheme expects one, an index path too long to open)
// is an error that stops phase 1, and with it the run, before phase 2.
func (m *marker) walk() error {
	tree, err := datastore.NewTree(m.store.BaseFD(), m.base, datastore.TreeOptions{Syscalls: m.store.Syscalls()})
	if err != nil {
		return fmt.Errorf("open store tree: %w", err)
	}
	defer tree.Close()
	m.tree = tree
	defer func() { m.tree = nil }()

	err = m.tree.WalkIndexFiles(m.ctx, m.log, func(rel string) error {
		m.initial[rel] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("list index files: %w", err)
	}
	m.totalIndexes = len(m.initial)
	m.prog.setPhase("mark", int64(m.totalIndexes))
	m.log.Info("listed index files", zap.Int("count", m.totalIndexes))

	nss, err := m.tree.ListNamespaces()
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	for _, ns := range nss {
		groups, err := m.tree.ListGroups(ns)
		if err != nil {
			return fmt.Errorf("list groups of namespace %q: %w", ns.String(), err)
		}
		for _, g := range groups {
			if err := m.group(g); err != nil {
				return err
			}
		}
	}

	var rest []string
	for rel, unmarked := range m.initial {
		if unmarked {
			rest = append(rest, rel)
		}
	}
	slices.Sort(rest)
	for _, rel := range rest {
		ok, err := m.markIndex(rel)
		if err != nil {
			return err
		}
		if ok {
			m.strange++
			m.log.Info("marked index file outside the expected scheme", zap.String("index", rel))
		}
	}
	return nil
}

// markGroup marks every index of g, newest snapshot first. If the newest
// snapshot's index vanished before it was opened, a prune removed it after a
// backup finished a newer snapshot that may reuse its chunks untouched: list
// the group again (SPEC §6.3).
func (m *marker) markGroup(g datastore.Group) error {
	for attempt := 0; ; attempt++ {
		if attempt > groupRetries {
			return fmt.Errorf("group %s: newest snapshot kept vanishing, gave up after %d attempts", g.RelPath(), attempt)
		}
		retry, err := m.markGroupOnce(g, attempt)
		if err != nil || !retry {
			return err
		}
		m.log.Info("newest snapshot vanished while marking, listing group again",
			zap.String("group", g.RelPath()), zap.Int("attempt", attempt+1))
	}
}

func (m *marker) markGroupOnce(g datastore.Group, attempt int) (retry bool, err error) {
	if attempt == groupRetries {
		timeout := m.opts.GroupLockTimeout
		if timeout == 0 {
			timeout = 10 * time.Minute
		}
		lock, err := m.locks.LockGroup(m.ctx, g.NS, g.Type, g.ID, locking.Exclusive, timeout)
		if err != nil {
			return false, fmt.Errorf("lock group %s for the last re-list: %w", g.RelPath(), err)
		}
		defer lock.Unlock()
	}
	snaps, err := m.tree.ListSnapshots(g)
	if err != nil {
		return false, fmt.Errorf("list snapshots of %s: %w", g.RelPath(), err)
	}
	if h := m.opts.hooks.afterGroupList; h != nil {
		h(g, attempt)
	}
	for i := len(snaps) - 1; i >= 0; i-- {
		newest := i == len(snaps)-1
		s := snaps[i]
		names, err := m.tree.IndexFiles(s)
		if errors.Is(err, fs.ErrNotExist) {
			if newest {
				return true, nil
			}
			continue
		}
		if err != nil {
			return false, fmt.Errorf("list index files of %s: %w", s.RelPath(), err)
		}
		for _, name := range names {
			rel := s.RelPath() + "/" + name
			ok, err := m.markIndex(rel)
			if err != nil {
				return false, err
			}
			if !ok && newest {
				return true, nil
			}
		}
	}
	return false, nil
}

// markIndex opens rel and streams its digests to the workers. It reports
// false when the index vanished (pruned) before it could be opened.
func (m *marker) markIndex(rel string) (bool, error) {
	if err := m.ctx.Err(); err != nil {
		return false, context.Cause(m.ctx)
	}
	path := filepath.Join(m.base, rel)
	r, err := m.tree.OpenIndex(rel)
	if errors.Is(err, fs.ErrNotExist) {
		m.log.Info("index file vanished, pruned concurrently", zap.String("index", rel))
		if m.initial[rel] {
			m.initial[rel] = false
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer r.Close()

	unmarked, listed := m.initial[rel]
	if !m.marked[rel] {
		m.marked[rel] = true
		m.indexFiles++
		m.indexBytes = satAdd(m.indexBytes, r.DataBytes())
		if !listed {
			m.newIndexes++
			m.log.Info("encountered new index file, counting it", zap.String("index", rel))
		}
	}
	if unmarked {
		m.initial[rel] = false
	}

	b, err := m.get(rel)
	if err != nil {
		return false, err
	}
	// b is the walk's while it fills it; send takes it whatever it
	// returns, so it is handed back exactly once (the free set is a
	// buffered channel that holds every batch of the run: one put too
	// many blocks for good).
	err = r.Each(func(d *blob.Digest) error {
		b.d[b.n] = *d
		b.n++
		if b.n < batchSize {
			return nil
		}
		full := b
		b = nil
		if err := m.send(full); err != nil {
			return err
		}
		b, err = m.get(rel)
		return err
	})
	switch {
	case b == nil:
	case err == nil && b.n > 0:
		err = m.send(b)
	default:
		m.free <- b
	}
	if err != nil {
		return false, fmt.Errorf("mark %s: %w", path, err)
	}
	m.prog.add(1)
	if n := len(m.marked); m.totalIndexes > 0 && n%max(1, m.totalIndexes/10) == 0 {
		m.log.Info("marked index files", append([]zap.Field{zap.Int("done", n), zap.Int("listed", m.totalIndexes),
			zap.Int("percent", min(100, 100*n/m.totalIndexes))}, m.prog.logFields(false)...)...)
	}
	return true, nil
}

// queuedBatches is how many full batches may wait for a touch worker.
const queuedBatches = 16

// newBatches makes the run's n batches: one allocation per run, however
// many chunks it touches (TestMarkSweepAllocsFlat), and a bound on the
// digests in flight.
func (m *marker) newBatches(n int) {
	m.free = make(chan *batch, n)
	bs := make([]batch, n)
	for i := range bs {
		m.free <- &bs[i]
	}
}

// get returns a free batch for index rel, waiting for a worker to finish
// one if every batch is in flight.
func (m *marker) get(rel string) (*batch, error) {
	select {
	case b := <-m.free:
		b.index, b.n, b.group = rel, 0, m.cur
		return b, nil
	case <-m.ctx.Done():
		return nil, context.Cause(m.ctx)
	}
}

// send hands b to a touch worker, or touches it inline with one worker. It
// takes b whatever it returns: b is queued, or back in the free set.
func (m *marker) send(b *batch) error {
	m.tr.sent(b.group)
	if m.work == nil { // one worker: strictly sequential, touch inline
		m.touchBatch(m.toucher, nil, b)
		return context.Cause(m.ctx)
	}
	select {
	case m.work <- b:
		return nil
	case <-m.ctx.Done():
		m.free <- b
		return context.Cause(m.ctx)
	}
}

// touchWorker touches the digests of every batch it receives while it
// holds one of the pool's slots.
func (m *marker) touchWorker() {
	t := m.store.NewToucher()
	w := m.pool.Worker()
	defer w.Exit()
	for w.Next() {
		b, ok := <-m.work
		if !ok {
			return
		}
		m.touchBatch(t, w, b)
	}
	// Stopped (cancelled): hand the queued batches back.
	for b := range m.work {
		m.free <- b
	}
}

// touchBatch touches every digest of b with t, counts each as one unit of
// w's (nil when touching inline) and returns b to the free set. The first
// error other than a missing chunk cancels the whole phase. It does not
// allocate per digest (BenchmarkMark, TestMarkSweepAllocsFlat), except to
// report a missing chunk. Counting per digest, not per batch, gives the
// pool's controller a sample it can read when a batch takes longer than
// its sampling interval (64 round trips on slow storage).
func (m *marker) touchBatch(t *chunkstore.Toucher, w *adapt.Worker, b *batch) {
	defer func() { m.free <- b }()
	select {
	case <-m.ctx.Done():
		return
	default:
	}
	var hits, lookups, touched, missing int64
	defer func() {
		m.cacheHits.Add(hits)
		m.cacheLookups.Add(lookups)
		m.touched.Add(touched)
	}()
	for i := range b.n {
		d := &b.d[i]
		if w != nil {
			w.Done(1)
		}
		if m.cache != nil {
			lookups++
			if m.cache.seenOrAdd(d) {
				hits++
				continue
			}
		}
		err := t.Touch(*d)
		if err == nil {
			touched++
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			m.cancel(fmt.Errorf("touch chunk %s referenced by %s: %w", d, b.index, err))
			return
		}
		if m.opts.S3 != nil {
			ok, err := s3Expect(m.ctx, m.store, m.locks, t, *d)
			if err != nil {
				m.cancel(fmt.Errorf("mark chunk %s referenced by %s as expected on S3: %w", d, b.index, err))
				return
			}
			if ok {
				touched++
			} else {
				m.expected.Add(1)
			}
			continue
		}
		if m.heal != nil && m.heal.heal(*d, b.index) {
			if err = t.Touch(*d); err == nil {
				touched++
				continue
			}
			if !errors.Is(err, fs.ErrNotExist) {
				m.cancel(fmt.Errorf("touch chunk %s referenced by %s: %w", d, b.index, err))
				return
			}
		}
		missing++
		if n := m.missing.Add(1); n <= maxMissingWarnings {
			m.log.Warn("chunk referenced by index is missing", zap.Stringer("digest", d), zap.String("index", b.index))
		}
		if !m.untouched.add(*d) {
			m.cancel(errTooManyUntouched)
			return
		}
		if _, err := t.TouchBad(*d); err != nil {
			m.cancel(fmt.Errorf("touch bad copies of missing chunk %s: %w", d, err))
			return
		}
	}
	m.tr.finished(b.group, &markCounts{missing: missing, hits: hits, lookups: lookups, touched: touched})
}
