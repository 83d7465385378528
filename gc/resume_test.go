package gc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"chunkgc/blob"
	"chunkgc/datastore"
	"chunkgc/internal/testkit/rtest"
)

// resumeStore is a store of groups vm/100 … of perGroup referenced chunks
// each and some garbage, all 72 h old.
type resumeStore struct {
	*fixture
	refs, garbage []string
	groups        int
	// clock applies to every run: by default an hour ahead of the
	// files, so that the snapshots the test built count as older than
	// the runs (recheckGroup compares ctimes with the start, less the
	// writer grace).
	clock func(*Options)
}

func hourAhead(o *Options) { o.Now = func() time.Time { return time.Now().Add(time.Hour) } }

func (s *resumeStore) run(mod ...func(*Options)) (*Status, error) {
	return s.fixture.run(append([]func(*Options){s.clock}, mod...)...)
}

func newResumeStore(t *testing.T, groups, perGroup, garbage int) *resumeStore {
	f := newFixture(t)
	s := &resumeStore{fixture: f, groups: groups, clock: hourAhead}
	for g := range groups {
		var ds []blob.Digest
		for range perGroup {
			d, _ := f.chunk(100, 72*time.Hour)
			ds = append(ds, d)
			s.refs = append(s.refs, f.store.ChunkPath(d))
		}
		f.snapshot(fmt.Sprintf("vm/%d/2025-01-01T00:00:00Z", 100+g), ds...)
	}
	for range garbage {
		d, _ := f.chunk(100, 72*time.Hour)
		s.garbage = append(s.garbage, f.store.ChunkPath(d))
	}
	return s
}

func (s *resumeStore) count(paths []string) int {
	n := 0
	for _, p := range paths {
		if s.exists(p) {
			n++
		}
	}
	return n
}

func noProbe(o *Options)   { o.Tuning.AtimeSafetyCheck = false }
func oneWorker(o *Options) { o.Tuning.Concurrency = 1 }

// interrupt runs GC with a hook that cancels it at the point stop picks,
// and checks it failed as cancelled.
func (s *resumeStore) interrupt(stop func(o *Options, cancel func()), mod ...func(*Options)) {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := s.opts(append([]func(*Options){s.clock}, mod...)...)
	stop(&o, cancel)
	_, err := Run(ctx, s.store, s.locks, o)
	if !errors.Is(err, context.Canceled) {
		s.t.Fatalf("interrupted run: %v, want context.Canceled", err)
	}
	if n := s.count(s.refs); n != len(s.refs) {
		s.t.Fatalf("interrupted run removed %d referenced chunks", len(s.refs)-n)
	}
}

func (s *resumeStore) readCheckpoint() *checkpoint {
	s.t.Helper()
	b, err := os.ReadFile(CheckpointPath(s.base))
	rtest.OK(s.t, err)
	cp, err := decodeCheckpoint(b, s.base)
	rtest.OK(s.t, err)
	return cp
}

func (s *resumeStore) writeCheckpoint(cp *checkpoint) {
	s.t.Helper()
	b, err := json.Marshal(cp)
	rtest.OK(s.t, err)
	rtest.OK(s.t, os.WriteFile(CheckpointPath(s.base), b, 0o640))
}

// afterGroups cancels the run when the walker lists group number n.
func afterGroups(n int) func(o *Options, cancel func()) {
	return func(o *Options, cancel func()) {
		seen := 0
		o.hooks.afterGroupList = func(datastore.Group, int) {
			if seen++; seen == n+1 {
				cancel()
			}
		}
	}
}

// afterCommitted cancels the run once phase 1's low-water mark passed
// group number n: with several workers, groups finish out of order.
func afterCommitted(n int) func(o *Options, cancel func()) {
	return func(o *Options, cancel func()) {
		o.hooks.afterCommitted = func(g int) {
			if g == n {
				cancel()
			}
		}
	}
}

// afterDirs cancels the run once phase 2 finished prefix dir n.
func afterDirs(n int) func(o *Options, cancel func()) {
	return func(o *Options, cancel func()) {
		o.hooks.afterSweptDir = func(p int) {
			if p == n {
				cancel()
			}
		}
	}
}

// TestResume interrupts a run at a point of either phase and resumes it:
// the resumed run names the run it resumed and its phase, does exactly
// the remaining work (touches, prefix dirs), reports the store as a fresh
// run would (index files, on-disk chunks), removes all garbage and
// nothing referenced (the store invariant ends every case).
func TestResume(t *testing.T) {
	const groups, perGroup, garbage = 8, 20, 30
	tests := []struct {
		name      string
		stop      func(o *Options, cancel func())
		mod       []func(*Options)
		wantPhase string
		wantDone  int // groups the checkpoint has fully marked
		wantNext  int // prefix dirs it has fully swept
		extraKept int // the probe's zero chunk
	}{
		{name: "mark, one worker", stop: afterGroups(3), mod: []func(*Options){noProbe, oneWorker},
			wantPhase: phaseMark, wantDone: 3},
		{name: "mark, three workers", stop: afterCommitted(4), mod: []func(*Options){noProbe},
			wantPhase: phaseMark, wantDone: -1},
		{name: "between the phases", stop: func(o *Options, cancel func()) { o.hooks.beforeSweep = cancel },
			mod: []func(*Options){noProbe}, wantPhase: phaseSweep, wantDone: groups},
		{name: "sweep, one worker", stop: afterDirs(30000), mod: []func(*Options){noProbe, oneWorker},
			wantPhase: phaseSweep, wantDone: groups, wantNext: 30001},
		{name: "sweep, three workers, probe", stop: afterDirs(50000), wantPhase: phaseSweep, wantDone: groups, wantNext: -1, extraKept: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newResumeStore(t, groups, perGroup, garbage)
			s.interrupt(tt.stop, tt.mod...)
			cp := s.readCheckpoint()
			done, err := decodeGroups(cp.Mark.Groups)
			rtest.OK(t, err)
			if cp.Phase != tt.wantPhase {
				t.Fatalf("checkpoint phase %q, want %q", cp.Phase, tt.wantPhase)
			}
			if tt.wantDone >= 0 && len(done) != tt.wantDone {
				t.Fatalf("checkpoint has %d groups marked, want %d", len(done), tt.wantDone)
			}
			if tt.wantNext >= 0 && cp.Sweep.Next != tt.wantNext {
				t.Fatalf("checkpoint swept up to %d, want %d", cp.Sweep.Next, tt.wantNext)
			}
			if tt.wantPhase == phaseSweep && cp.Sweep.Next == 0 && tt.wantNext != 0 {
				t.Fatal("checkpoint records no sweep progress: the case tests nothing")
			}
			if tt.wantPhase == phaseMark && len(done) == 0 {
				t.Fatal("checkpoint records no marked group: the case tests nothing")
			}

			st, err := s.run(noProbe)
			rtest.OK(t, err)
			if st.ResumedFrom != cp.UPID || st.ResumedPhase != cp.Phase {
				t.Errorf("resumed-from %q phase %q, want %q %q", st.ResumedFrom, st.ResumedPhase, cp.UPID, cp.Phase)
			}
			if want := int64(perGroup * (groups - len(done))); st.TouchedChunks != want {
				t.Errorf("resumed run touched %d chunks, want %d (%d groups left)", st.TouchedChunks, want, groups-len(done))
			}
			if want := int64(65536 - cp.Sweep.Next); st.SweptPrefixDirs != want {
				t.Errorf("resumed run swept %d prefix dirs, want %d", st.SweptPrefixDirs, want)
			}
			// The clock is an hour ahead of the files, so the kept chunks
			// count as pending (atime before the oldest writer, the start).
			if st.IndexFileCount != groups || st.DiskChunks+st.PendingChunks != int64(len(s.refs)+tt.extraKept) || st.MinAtime > cp.MinAtime {
				t.Errorf("status: %d index files, %d+%d kept chunks, min-atime %d; want %d, %d, ≤ %d",
					st.IndexFileCount, st.DiskChunks, st.PendingChunks, st.MinAtime, groups, len(s.refs)+tt.extraKept, cp.MinAtime)
			}
			if n := s.count(s.garbage); n != 0 {
				t.Errorf("%d garbage chunks left", n)
			}
			if n := s.count(s.refs); n != len(s.refs) {
				t.Fatalf("%d referenced chunks lost", len(s.refs)-n)
			}
			if _, err := os.Lstat(CheckpointPath(s.base)); !os.IsNotExist(err) {
				t.Errorf("checkpoint left after a finished run: %v", err)
			}
			got, err := ReadStatus(s.base)
			rtest.OK(t, err)
			if got.ResumedFrom != cp.UPID {
				t.Errorf(".gc-status resumed-from %q", got.ResumedFrom)
			}
		})
	}
}

// TestResumeTwice: a resumed run interrupted again leaves a checkpoint
// that keeps the first run's identity and covers both runs' work.
func TestResumeTwice(t *testing.T) {
	s := newResumeStore(t, 8, 10, 10)
	s.interrupt(afterGroups(2), noProbe, oneWorker)
	first := s.readCheckpoint()
	s.interrupt(afterGroups(3), noProbe, oneWorker) // 2 groups rechecked, 3 more marked
	second := s.readCheckpoint()
	done, _ := decodeGroups(second.Mark.Groups)
	if second.UPID != first.UPID || second.StartTime != first.StartTime || len(done) != 5 {
		t.Fatalf("second checkpoint %s start %d with %d groups, want %s %d with 5", second.UPID, second.StartTime, len(done), first.UPID, first.StartTime)
	}
	st, err := s.run(noProbe)
	rtest.OK(t, err)
	if st.ResumedFrom != first.UPID || st.TouchedChunks != 30 || st.IndexFileCount != 8 || st.ResumeSkippedIndexes != 5 {
		t.Fatalf("resumed from %q, touched %d, %d index files, %d skipped; want %q, 30, 8, 5",
			st.ResumedFrom, st.TouchedChunks, st.IndexFileCount, st.ResumeSkippedIndexes, first.UPID)
	}
}

// TestResumeRefused: a checkpoint that is corrupt, foreign, of a future
// version, too old, from the future, or overridden by --fresh or
// gc-resume-max-age=0 gives a fresh run (every chunk touched, every dir
// swept) that removes the garbage and nothing referenced; so does one
// behind a symlink, which is not followed.
func TestResumeRefused(t *testing.T) {
	const h = int64(3600)
	tests := []struct {
		name  string
		spoil func(s *resumeStore, cp *checkpoint)
		mod   func(o *Options)
	}{
		{name: "not JSON", spoil: func(s *resumeStore, cp *checkpoint) {
			rtest.OK(s.t, os.WriteFile(CheckpointPath(s.base), []byte("{\"version\":1,"), 0o640))
		}},
		{name: "unknown field", spoil: func(s *resumeStore, cp *checkpoint) {
			b, _ := json.Marshal(cp)
			b = append(b[:len(b)-1], []byte(`,"extra":1}`)...)
			rtest.OK(s.t, os.WriteFile(CheckpointPath(s.base), b, 0o640))
		}},
		{name: "future version", spoil: func(s *resumeStore, cp *checkpoint) { cp.Version = 2; s.writeCheckpoint(cp) }},
		{name: "foreign store", spoil: func(s *resumeStore, cp *checkpoint) { cp.Base = "/elsewhere"; s.writeCheckpoint(cp) }},
		{name: "min-atime after start", spoil: func(s *resumeStore, cp *checkpoint) { cp.MinAtime = cp.StartTime + 10; s.writeCheckpoint(cp) }},
		{name: "bad untouched digest", spoil: func(s *resumeStore, cp *checkpoint) { cp.Untouched = []string{"zz"}; s.writeCheckpoint(cp) }},
		{name: "bad group set", spoil: func(s *resumeStore, cp *checkpoint) { cp.Mark.Groups = "AAA"; s.writeCheckpoint(cp) }},
		{name: "sweep progress out of range", spoil: func(s *resumeStore, cp *checkpoint) { cp.Sweep.Next = 70000; s.writeCheckpoint(cp) }},
		{name: "too old", spoil: func(s *resumeStore, cp *checkpoint) {
			cp.StartTime -= 200 * h
			cp.MinAtime -= 200 * h
			cp.OldestWriter -= 200 * h
			s.writeCheckpoint(cp)
		}},
		{name: "from the future", spoil: func(s *resumeStore, cp *checkpoint) {
			cp.StartTime += 2 * h
			cp.MinAtime += 2 * h
			cp.OldestWriter += 2 * h
			cp.Written += 2 * h
			s.writeCheckpoint(cp)
		}},
		{name: "fresh", spoil: func(*resumeStore, *checkpoint) {}, mod: func(o *Options) { o.Fresh = true }},
		{name: "resume off", spoil: func(*resumeStore, *checkpoint) {}, mod: func(o *Options) { o.Tuning.ResumeMaxAge = 0 }},
		{name: "symlinked checkpoint", spoil: func(s *resumeStore, cp *checkpoint) {
			victim := filepath.Join(s.t.TempDir(), "victim")
			b, _ := json.Marshal(cp)
			rtest.OK(s.t, os.WriteFile(victim, b, 0o640))
			rtest.OK(s.t, os.Remove(CheckpointPath(s.base)))
			rtest.OK(s.t, os.Symlink(victim, CheckpointPath(s.base)))
			s.t.Cleanup(func() { s.unchanged(victim, b) })
		}},
		{name: "symlinked state dir", spoil: func(s *resumeStore, cp *checkpoint) {
			victim := s.t.TempDir()
			b, _ := json.Marshal(cp)
			rtest.OK(s.t, os.WriteFile(filepath.Join(victim, CheckpointName), b, 0o640))
			rtest.OK(s.t, os.RemoveAll(filepath.Join(s.base, StateDir)))
			rtest.OK(s.t, os.Symlink(victim, filepath.Join(s.base, StateDir)))
			s.t.Cleanup(func() { s.unchanged(filepath.Join(victim, CheckpointName), b) })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newResumeStore(t, 4, 10, 10)
			s.interrupt(afterGroups(2), noProbe, oneWorker)
			tt.spoil(s, s.readCheckpoint())
			mods := []func(*Options){noProbe}
			if tt.mod != nil {
				mods = append(mods, tt.mod)
			}
			st, err := s.run(mods...)
			rtest.OK(t, err)
			if st.ResumedFrom != "" || st.TouchedChunks != 40 || st.SweptPrefixDirs != 65536 {
				t.Errorf("resumed-from %q, touched %d, swept %d: want a fresh run (40 touches, 65536 dirs)", st.ResumedFrom, st.TouchedChunks, st.SweptPrefixDirs)
			}
			if n := s.count(s.garbage); n != 0 {
				t.Errorf("%d garbage chunks left", n)
			}
			if n := s.count(s.refs); n != len(s.refs) {
				t.Fatalf("%d referenced chunks lost", len(s.refs)-n)
			}
		})
	}
}

// unchanged checks that the file at path outside the store still holds b.
func (s *resumeStore) unchanged(path string, b []byte) {
	got, err := os.ReadFile(path)
	if err != nil || string(got) != string(b) {
		s.t.Errorf("%s outside the store changed (%v)", path, err)
	}
}

// TestResumeDryRun: a dry run neither resumes a checkpoint nor writes or
// removes one.
func TestResumeDryRun(t *testing.T) {
	s := newResumeStore(t, 4, 10, 10)
	s.interrupt(afterGroups(2), noProbe, oneWorker)
	before, err := os.ReadFile(CheckpointPath(s.base))
	rtest.OK(t, err)
	st, err := s.run(noProbe, func(o *Options) { o.DryRun = true })
	rtest.OK(t, err)
	if st.ResumedFrom != "" || st.TouchedChunks != 40 {
		t.Errorf("dry run resumed (%q, %d touches)", st.ResumedFrom, st.TouchedChunks)
	}
	s.unchanged(CheckpointPath(s.base), before)

	rtest.OK(t, os.Remove(CheckpointPath(s.base)))
	s.interrupt(afterGroups(2), noProbe, oneWorker, func(o *Options) { o.DryRun = true })
	if _, err := os.Lstat(CheckpointPath(s.base)); !os.IsNotExist(err) {
		t.Errorf("interrupted dry run wrote a checkpoint: %v", err)
	}
}

// TestResumeUnknownGroup: a group that appears before the checkpoint's
// position without a backup writer (a namespace hidden during the
// interrupted run — the brake stopped it — and back now) is marked by the
// resumed run, not skipped by its place in the order; an index copied by
// hand into a group that was marked is marked again.
func TestResumeUnknownGroup(t *testing.T) {
	s := newResumeStore(t, 2, 10, 0)
	// The real clock, and changes count from the start itself: the
	// snapshot copied in after the first run has a ctime at or after it.
	s.clock = func(o *Options) { o.RecheckSlack = -1 }
	hidden, copied := s.chunks(1500, 100, 72*time.Hour), s.chunks(5, 100, 72*time.Hour)
	s.snapshot("ns/a/vm/1/2025-01-01T00:00:00Z", hidden...)
	away := filepath.Join(s.base, ".away")
	rtest.OK(t, os.Rename(filepath.Join(s.base, "ns"), away))
	_, err := s.run(noProbe)
	if !errors.Is(err, ErrBrake) {
		t.Fatalf("run with the namespace hidden: %v, want the brake", err)
	}
	cp := s.readCheckpoint()
	if cp.Phase != phaseSweep || cp.Sweep.BrakeDone {
		t.Fatalf("checkpoint after the brake: phase %s, brake done %v", cp.Phase, cp.Sweep.BrakeDone)
	}
	rtest.OK(t, os.Rename(away, filepath.Join(s.base, "ns")))
	// By hand, as rsync would: a new snapshot in a group the run marked.
	s.snapshot("vm/100/2025-01-02T00:00:00Z", copied...)
	st, err := s.run(noProbe)
	rtest.OK(t, err)
	if st.ResumedFrom != cp.UPID || st.ResumeRemarkedIndexes < 1 || st.RemovedChunks != 0 {
		t.Fatalf("resumed %q, remarked %d, removed %d: want %q, ≥ 1, 0", st.ResumedFrom, st.ResumeRemarkedIndexes, st.RemovedChunks, cp.UPID)
	}
	for _, d := range append(hidden, copied...) {
		if !s.exists(s.store.ChunkPath(d)) {
			t.Fatalf("chunk %s lost", d)
		}
	}
}
