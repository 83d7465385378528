package gc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
)

// faultStore is the store every row of TestFaults starts from: two
// referenced chunks and three garbage chunks, all older than the cutoff,
// and the .gc-status of an earlier run. victim is a garbage chunk alone in
// its prefix dir (no referenced chunk there, so phase 1 never opens it).
type faultStore struct {
	*fixture
	used, garbage []blob.Digest
	victim        blob.Digest
	zero          blob.Digest // the atime probe's chunk
	status        []byte      // the earlier run's .gc-status
	before        map[string]bool
}

func newFaultStore(t *testing.T) *faultStore {
	t.Helper()
	s := &faultStore{fixture: newFixture(t)}
	for range 2 {
		d, _ := s.chunk(1000, 72*time.Hour)
		s.used = append(s.used, d)
	}
	for range 3 {
		d, _ := s.chunk(1000, 72*time.Hour)
		s.garbage = append(s.garbage, d)
	}
	s.snapshot("vm/100/2025-01-01T00:00:00Z", s.used...)
	_, zero, err := blob.ZeroChunk(blob.ZeroChunkSize)
	rtest.OK(t, err)
	s.zero, s.victim = zero, s.garbage[0]
	for _, d := range append([]blob.Digest{zero}, append(s.used, s.garbage[1:]...)...) {
		if d.Prefix() == s.victim.Prefix() {
			t.Fatalf("fixture: chunk %s shares the victim's prefix dir", d)
		}
	}
	s.status = []byte(`{"upid":"UPID:an-earlier-run"}` + "\n")
	rtest.OK(t, os.WriteFile(filepath.Join(s.base, StatusFile), s.status, 0o644))
	s.before = chunkFiles(t, s.base)
	return s
}

// prefixGlob is a faultfs.Fault Path that selects prefix dir d's own path.
func (s *faultStore) prefixGlob(d blob.Digest) string {
	return globQuote(fmt.Sprintf("%s/.chunks/%04x", s.base, d.Prefix()))
}

func globQuote(p string) string {
	var b strings.Builder
	for _, c := range p {
		if strings.ContainsRune(`*?[\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// checkStatus asserts whether the run replaced the earlier .gc-status.
func (s *faultStore) checkStatus(t *testing.T, replaced bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.base, StatusFile))
	rtest.OK(t, err)
	rtest.Equal(t, ".gc-status replaced", replaced, string(b) != string(s.status))
}

// checkNothingRemoved asserts that every chunk file there was before the
// run is still there.
func (s *faultStore) checkNothingRemoved(t *testing.T) {
	t.Helper()
	after := chunkFiles(t, s.base)
	for n := range s.before {
		if !after[n] {
			t.Errorf("%s was removed although the run stopped before phase 2", n)
		}
	}
}

// Where a faulted run stops: the prefix of Run's error.
const (
	inProbe     = "atime safety check: "
	inMark      = "phase 1: "
	beforeSweep = "before phase 2: "
	inSweep     = "phase 2: "
)

// TestFaults injects one errno at one syscall of a GC run, through the
// store's syscall seam (chunkstore.Options.Syscalls, a faultfs.Set), and
// asserts the exit path: Run's error matches the errno and names the phase
// it stopped in and a path in the store; a run that stops before phase 2
// removed nothing; a run that stops in phase 2 kept the chunk whose call
// failed; a failed run leaves the earlier .gc-status as it was (it is
// written only after a successful run); and where GC is designed to carry on
// (ENOENT), the run succeeds and counts it. Every row ends with the store
// invariant: every chunk an index references still exists.
//
// Covered: the atime probe (statx, utimensat, the write of its chunk);
// phase 1's touch (utimensat) and its open of a prefix dir (openat); the
// prefix dir check between the phases (fstatat); phase 2's open of a prefix
// dir (openat), its listing (getdents64, and a malformed reply), the
// lock-free stat and the locked re-stat of a candidate (fstatat), the
// exclusive flock and the unlink (unlinkat). Not covered, because those
// calls do not go through the chunk store's seam: the index walk (package
// datastore calls x/sys/unix directly), the GC, store and group locks
// (package locking) and the .gc-status write (internal/atomicfile, on the
// store's base fd); each needs an fsys.Syscalls of its own to be faulted
// here.
func TestFaults(t *testing.T) {
	tests := []struct {
		name  string
		probe bool // run the atime probe
		give  func(s *faultStore) faultfs.Fault
		want  error  // what Run's error matches; nil when GC carries on
		phase string // where the run stopped
		check func(t *testing.T, s *faultStore, st *Status)
	}{
		// The atime probe, before phase 1.
		{name: "probe statx EIO", probe: true, want: unix.EIO, phase: inProbe,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Statx, Name: fmt.Sprintf("%04x/%s", s.zero.Prefix(), s.zero), Nth: 1, Err: unix.EIO}
			}},
		{name: "probe touch EPERM", probe: true, want: unix.EPERM, phase: inProbe,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.UtimesNanoAt, Name: s.zero.String(), Nth: 1, Err: unix.EPERM}
			}},
		{name: "probe chunk write ENOSPC", probe: true, want: unix.ENOSPC, phase: inProbe,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Write, Path: s.prefixGlob(s.zero) + "/*.tmp_*", Nth: 1, Err: unix.ENOSPC}
			}},

		// Phase 1: mark.
		{name: "mark touch EIO", want: unix.EIO, phase: inMark,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.UtimesNanoAt, Name: s.used[0].String(), Nth: 1, Err: unix.EIO}
			}},
		{name: "mark touch ESTALE", want: unix.ESTALE, phase: inMark,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.UtimesNanoAt, Name: s.used[1].String(), Nth: 1, Err: unix.ESTALE}
			}},
		{name: "mark touch ENOENT is kept", // doc "No escape" rule 3
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.UtimesNanoAt, Name: s.used[0].String(), Nth: 1, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "missing", int64(1), st.MissingChunks)
				rtest.Equal(t, "kept untouched", int64(1), st.KeptUntouched)
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},
		{name: "mark open prefix dir EACCES", want: unix.EACCES, phase: inMark,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.prefixGlob(s.used[0]), Nth: 1, Err: unix.EACCES}
			}},
		{name: "mark open prefix dir ENOENT is kept",
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.prefixGlob(s.used[0]), Nth: 1, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "missing", int64(1), st.MissingChunks)
				rtest.Equal(t, "kept untouched", int64(1), st.KeptUntouched) // its atime is still old
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},

		// Between the phases: the prefix dir check.
		{name: "prefix dir check EIO", want: unix.EIO, phase: beforeSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Fstatat, Path: s.prefixGlob(s.victim), Nth: 1, Err: unix.EIO}
			}},

		// Phase 2: sweep.
		{name: "sweep open prefix dir ESTALE", want: unix.ESTALE, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.prefixGlob(s.victim), Nth: 1, Err: unix.ESTALE}
			}},
		{name: "sweep open prefix dir ENOENT skips it",
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.prefixGlob(s.victim), Nth: 1, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "removed", int64(2), st.RemovedChunks)
			}},
		{name: "sweep getdents EIO", want: unix.EIO, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.prefixGlob(s.victim), Nth: 1, Err: unix.EIO}
			}},
		{name: "sweep getdents malformed", want: unix.EIO, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.prefixGlob(s.victim), Nth: 1, Err: faultfs.ErrMalformed}
			}},
		{name: "sweep stat EIO", want: unix.EIO, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Fstatat, Name: s.victim.String(), Nth: 1, Err: unix.EIO}
			}},
		{name: "sweep stat ENOENT skips it",
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Fstatat, Name: s.victim.String(), Nth: 1, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "removed", int64(2), st.RemovedChunks)
			}},
		{name: "sweep locked re-stat ESTALE", want: unix.ESTALE, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Fstatat, Name: s.victim.String(), Nth: 2, Err: unix.ESTALE}
			}},
		{name: "sweep flock ENOLCK", want: unix.ENOLCK, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Flock, Path: s.prefixGlob(s.victim), Nth: 1, Err: unix.ENOLCK}
			}},
		{name: "sweep unlink EIO", want: unix.EIO, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Unlinkat, Name: s.victim.String(), Nth: 1, Err: unix.EIO}
			}},
		{name: "sweep unlink EACCES", want: unix.EACCES, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Unlinkat, Name: s.victim.String(), Nth: 1, Err: unix.EACCES}
			}},
		{name: "sweep unlink ENOENT is not counted",
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Unlinkat, Name: s.victim.String(), Nth: 1, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "removed", int64(2), st.RemovedChunks)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFaultStore(t)
			set := faultfs.New(t, nil)
			fault := set.Add(tt.give(s))
			store := s.reopen(set)
			st, err := Run(t.Context(), store, s.locks, s.opts(func(o *Options) { o.Tuning.AtimeSafetyCheck = tt.probe }))
			t.Logf("Run: %v", err)
			if fault.Fired() == 0 {
				t.Fatalf("the fault never fired: %v", fault)
			}
			storetest.CheckReferenced(t, s.base)
			for _, d := range s.used {
				rtest.Equal(t, "referenced chunk "+d.String()+" exists", true, s.exists(s.store.ChunkPath(d)))
			}

			if tt.want == nil {
				rtest.OK(t, err)
				tt.check(t, s, st)
				s.checkStatus(t, true)
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Run: want an error matching %v, got %v", tt.want, err)
			}
			if st != nil {
				t.Errorf("Run returned a status with its error: %+v", st)
			}
			if !strings.HasPrefix(err.Error(), tt.phase) {
				t.Errorf("Run's error %q does not stop in %q", err, strings.TrimSuffix(tt.phase, ": "))
			}
			if chunks := filepath.Join(s.base, ".chunks"); !strings.Contains(err.Error(), chunks) {
				t.Errorf("Run's error %q names no path under %s", err, chunks)
			}
			s.checkStatus(t, false)
			if tt.phase == inSweep {
				// The sweep stops at the failed call: the chunk
				// it failed on was not removed.
				rtest.Equal(t, "victim still there", true, s.exists(s.store.ChunkPath(s.victim)))
			} else {
				s.checkNothingRemoved(t)
			}
		})
	}
}
