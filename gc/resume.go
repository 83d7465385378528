package gc

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/datastore"
	"chunkgc/internal/fsys"
)

// resumeState is what a resumed run takes over from the checkpoint of the
// run it resumes (doc "Resumable runs").
type resumeState struct {
	cp *checkpoint
	// groups are the groups the interrupted run marked completely.
	groups map[uint64]struct{}
	// since is the ctime (file server clock) from which an index or
	// snapshot dir of such a group counts as changed since the
	// interrupted run started, and is marked again.
	since int64
}

// checkpointing reports whether this run reads and writes checkpoints: not
// a dry run, and not with gc-resume-max-age=0.
func (r *run) checkpointing() bool {
	// An S3 run's sweep is one pass over a listing: nothing to resume.
	return !r.opts.DryRun && r.opts.Tuning.ResumeMaxAge > 0 && r.opts.S3 == nil
}

// loadCheckpoint runs after the cutoff and the atime probe: it reads the
// checkpoint of an interrupted run and, when it is valid, young enough and
// not overridden by --fresh, makes this run resume it. Resuming lowers
// min_atime and oldest_writer to the checkpoint's where those are older:
// never raises them. Any checkpoint it does not resume is removed (a
// warning says why); none of that stops the run.
func (r *run) loadCheckpoint() {
	if r.opts.DryRun || r.opts.S3 != nil {
		return // a dry run neither reads nor writes it; an S3 run has none
	}
	path := CheckpointPath(r.store.Base())
	log := r.log.With(zap.String("checkpoint", path))
	discard := func(msg string, fields ...zap.Field) {
		log.Warn(msg, fields...)
		if err := removeCheckpoint(r.store); err != nil {
			log.Warn("removing the checkpoint failed", zap.Error(err))
		}
	}
	b, err := readCheckpoint(r.store)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return
	case err != nil:
		discard("checkpoint unreadable, starting over", zap.Error(err))
		return
	case r.opts.Fresh:
		discard("--fresh: ignoring the checkpoint of an interrupted run, starting over")
		return
	case r.opts.Tuning.ResumeMaxAge == 0:
		discard("resuming is off (gc-resume-max-age=0): ignoring the checkpoint, starting over")
		return
	}
	cp, err := decodeCheckpoint(b, r.store.Base())
	if err != nil {
		discard("checkpoint not usable, starting over", zap.Error(err))
		return
	}
	now := r.now().Unix()
	age := time.Duration(now-cp.StartTime) * time.Second
	if cp.StartTime > now || cp.Written > now {
		discard("checkpoint from the future (this host's clock went back?), starting over",
			zap.Time("checkpoint-start", time.Unix(cp.StartTime, 0).UTC()), zap.Time("written", time.Unix(cp.Written, 0).UTC()))
		return
	}
	if max := r.opts.Tuning.ResumeMaxAge; age > max {
		discard("checkpoint older than gc-resume-max-age, starting over", zap.Duration("age", age), zap.Duration("max-age", max))
		return
	}
	groups, _ := decodeGroups(cp.Mark.Groups) // validated by decodeCheckpoint
	st := r.st
	freshMin, freshOldest := st.MinAtime, st.OldestWriter
	st.MinAtime = min(st.MinAtime, cp.MinAtime)
	st.OldestWriter = min(st.OldestWriter, cp.OldestWriter)
	st.ResumedFrom, st.ResumedPhase, st.ResumedStartTime = cp.UPID, cp.Phase, cp.StartTime
	lag := int64(0)
	if cp.ClockSkewMs != nil {
		lag = lagSeconds(time.Duration(*cp.ClockSkewMs) * time.Millisecond)
	}
	slack := int64(writerGrace)
	if d := r.opts.RecheckSlack; d != 0 {
		slack = max(0, int64(d/time.Second))
	}
	r.res = &resumeState{cp: cp, groups: groups, since: cp.StartTime - lag - slack}
	for _, h := range cp.Untouched {
		d, _ := blob.ParseDigest(h)
		r.untouched.add(d)
	}
	log.Info("resuming an interrupted garbage collection",
		zap.String("resumed-from", cp.UPID), zap.String("phase", cp.Phase), zap.Duration("age", age),
		zap.Int("marked-groups", len(groups)), zap.String("next-group", cp.Mark.NextGroup),
		zap.Int("swept-prefix-dirs", cp.Sweep.Next), zap.Int("untouched", len(cp.Untouched)),
		zap.Time("min-atime", time.Unix(st.MinAtime, 0).UTC()), zap.Time("fresh-min-atime", time.Unix(freshMin, 0).UTC()),
		zap.Time("oldest-writer", time.Unix(st.OldestWriter, 0).UTC()), zap.Time("fresh-oldest-writer", time.Unix(freshOldest, 0).UTC()))
}

// startCheckpoints sets up this run's checkpointer (nil when the run does
// not checkpoint) and its phase 1 tracker, seeded from a resumed checkpoint.
func (r *run) startCheckpoints() {
	var base markCounts
	var done []uint64
	if r.res != nil {
		m := &r.res.cp.Mark
		base = markCounts{indexFiles: m.IndexFiles, newIndexes: m.NewIndexes, indexBytes: m.IndexBytes,
			missing: m.Missing, hits: m.CacheHits, lookups: m.CacheLookups}
		for h := range r.res.groups {
			done = append(done, h)
		}
	}
	r.markTr = newMarkTracker(base, done)
	r.markTr.onCommit = r.opts.hooks.afterCommitted
	r.phase = phaseMark
	if !r.checkpointing() {
		return
	}
	r.cp = &checkpointer{
		store: r.store, owner: r.opts.Owner, log: r.log, dirfd: -1, now: r.now,
		interval: cmp.Or(r.opts.CheckpointInterval, checkpointInterval),
		build:    r.buildCheckpoint,
	}
	r.cp.last = r.now()
}

// buildCheckpoint is the checkpoint of the run so far. A resumed run keeps
// the identity (upid, start) of the run it resumed, so gc-resume-max-age
// counts from the first start of a chain of resumed runs.
func (r *run) buildCheckpoint() *checkpoint {
	st := r.st
	if r.phase == phaseMark && r.res != nil && r.res.cp.Phase == phaseSweep {
		// Resuming a sweep: until this run's phase 1 (the recheck) is
		// done, the resumed checkpoint is the progress.
		cp := *r.res.cp
		cp.MinAtime, cp.OldestWriter = st.MinAtime, st.OldestWriter
		cp.Untouched = r.untouched.digests()
		return &cp
	}
	cp := &checkpoint{
		Version: checkpointVersion, Base: r.store.Base(), UPID: st.UPID, StartTime: st.StartTime,
		MinAtime: st.MinAtime, OldestWriter: st.OldestWriter, CutoffS: int64(r.opts.Tuning.AtimeCutoff / time.Second),
		ClockSkewMs: st.ClockSkewMs, Phase: r.phase,
	}
	if r.res != nil {
		cp.UPID, cp.StartTime = r.res.cp.UPID, r.res.cp.StartTime
		cp.ClockSkewMs = r.res.cp.ClockSkewMs
		cp.CutoffS = max(cp.CutoffS, r.res.cp.CutoffS)
	}
	mc, groups, next := r.markTr.snapshot()
	cp.Mark = markCheckpoint{
		NextGroup: next, Groups: groups, IndexFiles: mc.indexFiles, IndexBytes: mc.indexBytes,
		NewIndexes: mc.newIndexes, Missing: mc.missing, CacheHits: mc.hits, CacheLookups: mc.lookups,
	}
	if r.phase == phaseSweep {
		cp.Mark.NextGroup = ""
		next, sc := 0, sweepCounts{}
		if r.sweepTr != nil {
			next, sc = r.sweepTr.snapshot()
		}
		cp.Sweep.Next = next
		cp.Sweep.setCounts(&sc)
		cp.Sweep.BrakeDone = r.brakeDone
		cp.Sweep.Brake = st.Brake
	}
	cp.Untouched = r.untouched.digests()
	return cp
}

// resumedSweep returns where a resumed sweep starts, the counters of the
// dirs below it, and whether the brake already decided. Without a
// checkpoint in phase sweep it is (0, zero, false).
func (r *run) resumedSweep() (int, sweepCounts, bool) {
	if r.res == nil || r.res.cp.Phase != phaseSweep {
		return 0, sweepCounts{}, false
	}
	s := &r.res.cp.Sweep
	return s.Next, s.counts(), s.BrakeDone || s.Next > 0
}

// doneGroup reports whether the run being resumed marked every index of g.
func (m *marker) doneGroup(g datastore.Group) bool {
	if m.res == nil {
		return false
	}
	_, ok := m.res.groups[groupHash(g)]
	return ok
}

// group marks one group of the walk and records it with the tracker: a
// group the resumed run marked completely is only checked for changes
// ([marker.recheckGroup]), any other is marked in full.
func (m *marker) group(g datastore.Group) error {
	n := m.tr.begin(g)
	m.cur = n
	defer func() { m.cur = -1 }()
	before := markCounts{indexFiles: m.indexFiles, indexBytes: m.indexBytes, newIndexes: m.newIndexes}
	var err error
	if m.doneGroup(g) {
		err = m.recheckGroup(g)
	} else {
		err = m.markGroup(g)
	}
	if err != nil {
		return err
	}
	m.tr.walked(n, markCounts{indexFiles: m.indexFiles - before.indexFiles,
		indexBytes: m.indexBytes - before.indexBytes, newIndexes: m.newIndexes - before.newIndexes})
	m.cp.tick()
	return nil
}

// recheckGroup handles a group the interrupted run marked completely. Its
// indexes are not opened again, except one whose file or snapshot
// directory changed (ctime) since the interrupted run started — a snapshot
// copied or moved in by hand, not by a backup writer — which is marked
// again (touched, not counted again). Snapshots a backup writer made since
// carry a new ctime too and are marked: that is cheap and keeps the
// argument simple. An index that vanished was pruned.
func (m *marker) recheckGroup(g datastore.Group) error {
	snaps, err := m.tree.ListSnapshots(g)
	if err != nil {
		return fmt.Errorf("list snapshots of %s: %w", g.RelPath(), err)
	}
	sys := m.tree.Syscalls()
	for i := len(snaps) - 1; i >= 0; i-- {
		s := snaps[i]
		names, err := m.tree.IndexFiles(s)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("list index files of %s: %w", s.RelPath(), err)
		}
		if len(names) == 0 {
			continue
		}
		fd, err := m.tree.OpenDir(s.RelPath())
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open snapshot %s: %w", s.RelPath(), err)
		}
		err = m.recheckSnapshot(sys, fd, s, names)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

func (m *marker) recheckSnapshot(sys fsys.Syscalls, fd int, s datastore.Snapshot, names []string) error {
	var st unix.Stat_t
	if err := sys.Fstatat(fd, "", &st, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("recheck snapshot %s: %w", m.tree.Path(s.RelPath()), fsys.WithPath(err, m.tree.Path(s.RelPath())))
	}
	dirChanged := st.Ctim.Sec >= m.res.since
	for _, name := range names {
		rel := s.RelPath() + "/" + name
		if m.initial[rel] {
			m.initial[rel] = false
		}
		changed := dirChanged
		if !changed {
			err := sys.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return fmt.Errorf("recheck index %s: %w", m.tree.Path(rel), fsys.WithPath(err, m.tree.Path(rel)))
			}
			// Anything but an unchanged regular file is marked, which
			// also raises doubt about a planted symlink or FIFO.
			changed = st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ctim.Sec >= m.res.since
		}
		if !changed {
			m.marked[rel] = true
			m.skipped++
			continue
		}
		m.marked[rel] = true // counted by the interrupted run or not at all
		if _, err := m.markIndex(rel); err != nil {
			return err
		}
		m.remarked++
	}
	return nil
}

// markResume is what phase 1 needs for resumable runs.
type markResume struct {
	tr  *markTracker
	res *resumeState
	cp  *checkpointer
}

// resume hands the marker the tracker, the checkpointer and the resumed
// checkpoint, and starts its counters at the checkpoint's, which cover the
// groups it will not count again.
func (m *marker) resume(rs markResume) {
	m.tr, m.res, m.cp, m.cur = rs.tr, rs.res, rs.cp, -1
	if m.res == nil {
		return
	}
	c := &m.res.cp.Mark
	m.indexFiles, m.indexBytes, m.newIndexes = c.IndexFiles, c.IndexBytes, c.NewIndexes
	m.missing.Store(c.Missing)
	m.cacheHits.Store(c.CacheHits)
	m.cacheLookups.Store(c.CacheLookups)
}

// resumeSweep starts the sweeper where the checkpoint's sweep stopped,
// with the counters of the dirs below, and hands it the tracker and the
// checkpointer.
func (r *run) resumeSweep(s *sweeper) {
	s.tr, s.cp, s.after = r.sweepTr, r.cp, r.opts.hooks.afterSweptDir
	next, base, _ := r.resumedSweep()
	s.next.Store(int64(next))
	s.done.Store(int64(next))
	s.base = base
	if next > 0 {
		r.log.Info("resuming phase 2", zap.Int("first-prefix-dir", next), zap.Bool("brake-decided", r.brakeDone))
	}
}

// finishCheckpoint removes the checkpoint once a run has written its
// .gc-status: there is nothing left to resume.
func (r *run) finishCheckpoint() {
	if r.cp == nil && r.res == nil {
		return
	}
	if err := removeCheckpoint(r.store); err != nil {
		r.log.Warn("removing the checkpoint of the finished run failed: the next run will resume a finished run's sweep", zap.Error(err))
	}
}
