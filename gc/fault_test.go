package gc

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/locking"
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
	s.used, s.garbage = s.chunks(2, 1000, 72*time.Hour), s.chunks(3, 1000, 72*time.Hour)
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

// checkNoStatusTmp asserts that no temporary file of a .gc-status write is
// left in the store's base directory.
func (s *faultStore) checkNoStatusTmp(t *testing.T) {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(globQuote(s.base), StatusFile+".tmp_*"))
	rtest.OK(t, err)
	if len(left) > 0 {
		t.Errorf("temporary .gc-status files left: %v", left)
	}
}

// Path globs of a faultStore for faultfs.Fault.Path.
func (s *faultStore) baseGlob() string           { return globQuote(s.base) }
func (s *faultStore) treeGlob(rel string) string { return globQuote(filepath.Join(s.base, rel)) }
func (s *faultStore) lockGlob(name string) string {
	return globQuote(filepath.Join(s.locks.Path(), name))
}

// The tree of faultStore: its one group and snapshot.
const (
	faultGroup    = "vm/100"
	faultSnapshot = "vm/100/2025-01-01T00:00:00Z"
)

// Where a faulted run stops: the prefix of Run's error.
const (
	inGCLock    = "gc lock: "
	inStoreLock = "store lock: "
	inRegistry  = "writer registry: "
	inProbe     = "atime safety check: "
	inMark      = "phase 1: "
	beforeSweep = "before phase 2: "
	inSweep     = "phase 2: "
	inReport    = "gc status: "
)

// TestFaults injects one errno at one syscall of a GC run, through one
// faultfs.Set that is the seam of everything the run touches: the store
// (chunkstore.Options.Syscalls, which GC also uses for the store's tree and
// the .gc-status write) and the lock directory (locking.RootOptions). It
// asserts the exit path: Run's error matches the errno and names the step
// it stopped in and the path it failed on; a run that stops before phase 2
// removed nothing; a run that stops in phase 2 kept the chunk whose call
// failed; a run whose .gc-status write failed had swept, left no temporary
// file and left the earlier .gc-status whole (the atomic replace never
// tears it); any other failed run leaves the earlier .gc-status as it was
// (it is written only after a successful run); and where GC is designed to
// carry on (ENOENT), the run succeeds and counts it. Every row ends with
// the store invariant: every chunk an index references still exists.
//
// Covered:
//   - the GC lock (the openat of its lock file, its flock), the store lock
//     (the openat of .lock, the fcntl F_OFD_SETLK) and the writer registry's
//     listing (getdents64);
//   - the atime probe (statx, utimensat, the write of its chunk);
//   - phase 1's index walk: the fstatat of the tree's base, the walk's
//     openat of the base, of a group and of a snapshot dir, its getdents64
//     of the base, a group and a snapshot dir (errnos and a malformed
//     reply), and the getdents64 of the listings the mark makes by group
//     (groups, snapshots, a snapshot's index files), ENOENT from a listing
//     included (a vanished snapshot: GC lists again);
//   - phase 1's touch (utimensat) and its open of a prefix dir (openat);
//   - the listing of .chunks beside phase 1 (its openat and getdents64)
//     and the prefix dir check between the phases, which is the sweep's
//     open of a prefix dir (openat);
//   - phase 2's listing (getdents64, and a malformed reply), the lock-free
//     stat and the locked re-stat of a candidate (statx), the exclusive
//     flock and the unlink (unlinkat);
//   - the .gc-status write (atomicfile.WriteBytesAtSys): the write, fchmod
//     and fsync of the temporary file, the renameat and the fsync of the
//     base directory.
//
// Not covered, because those calls do not go through a seam: the opens of
// the tree's directories below the base that ListGroups, ListSnapshots and
// IndexFiles make and the open of an index file (datastore.Tree.OpenDir
// and OpenIndex resolve the path with internal/nofollow's openat2), the
// reads of an index (package index reads its *os.File), the fstatat of
// DT_UNKNOWN entries (ext4 reports every entry's type, so the walk never
// asks), and dup and close(2) everywhere.
func TestFaults(t *testing.T) {
	tests := []struct {
		name  string
		probe bool // run the atime probe
		// The fault: the nth (0: the first) call op at the spot at fails
		// with err (nil: want).
		op faultfs.Op
		at spot
		// or is a second op failed at the same spot, for a step that
		// makes one call or the other: the row passes when either fired.
		or    faultfs.Op
		nth   int
		err   error
		want  error  // what Run's error matches; nil when GC carries on
		phase string // where the run stopped
		// orPhase is where else it may stop: see the prefix dir check.
		orPhase string
		// says is a further part of Run's error: which listing failed.
		says string
		// replaced: the failed run replaced .gc-status all the same (it
		// failed after the rename).
		replaced bool
		check    func(t *testing.T, s *faultStore, st *Status)
	}{
		// The locks and the writer registry, before the run starts.
		{name: "gc lock open EACCES", op: faultfs.Openat, at: inLocks("gc"), want: unix.EACCES, phase: inGCLock},
		{name: "gc lock flock EIO", op: faultfs.Flock, at: inLocks("gc"), want: unix.EIO, phase: inGCLock},
		{name: "store lock open EACCES", op: faultfs.Openat, at: inTree(locking.StoreLockName), want: unix.EACCES, phase: inStoreLock},
		{name: "store lock fcntl ENOLCK", op: faultfs.FcntlFlock, at: inTree(locking.StoreLockName), want: unix.ENOLCK, phase: inStoreLock},
		{name: "writer registry getdents EIO", op: faultfs.Getdents, at: inLocks("writers"), want: unix.EIO, phase: inRegistry},

		// The atime probe, before phase 1.
		{name: "probe statx EIO", op: faultfs.Statx, at: probeChunk, probe: true, want: unix.EIO, phase: inProbe},
		{name: "probe touch EPERM", op: faultfs.UtimesNanoAt, at: chunkName(zero), probe: true, want: unix.EPERM, phase: inProbe},
		{name: "probe chunk write ENOSPC", op: faultfs.Write, at: probeTmp, probe: true, want: unix.ENOSPC, phase: inProbe},

		// Phase 1: the index walk. Each directory's listing is two
		// getdents64 calls (the second returns 0); the walk lists every
		// directory first, so the mark's own listings of a group and a
		// snapshot are the third call on its path.
		{name: "tree fstat EIO", op: faultfs.Fstatat, at: inTree(""), want: unix.EIO, phase: inMark},
		{name: "walk open base EACCES", op: faultfs.Openat, at: inBase("."), want: unix.EACCES, phase: inMark},
		{name: "walk getdents base EIO", op: faultfs.Getdents, at: inTree(""), want: unix.EIO, phase: inMark, says: "walk index files"},
		{name: "walk open group dir EACCES", op: faultfs.Openat, at: inTree(faultGroup), want: unix.EACCES, phase: inMark, says: "cannot list every index file"},
		{name: "walk open snapshot dir EIO", op: faultfs.Openat, at: inTree(faultSnapshot), want: unix.EIO, phase: inMark, says: "walk index files"},
		{name: "walk open snapshot dir ENOENT: the mark finds its index", op: faultfs.Openat, at: inTree(faultSnapshot), err: unix.ENOENT,
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "new index files", int64(1), st.NewIndexFiles)
				rtest.Equal(t, "index files", int64(1), st.IndexFileCount)
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},
		{name: "walk getdents group dir EIO", op: faultfs.Getdents, at: inTree(faultGroup), want: unix.EIO, phase: inMark, says: "walk index files"},
		{name: "walk getdents snapshot dir malformed", op: faultfs.Getdents, at: inTree(faultSnapshot), err: faultfs.ErrMalformed, want: unix.EIO, phase: inMark, says: "walk index files"},
		{name: "walk getdents snapshot dir ESTALE", op: faultfs.Getdents, at: inTree(faultSnapshot), want: unix.ESTALE, phase: inMark, says: "walk index files"},
		{name: "walk getdents snapshot dir ENOENT: the mark finds its index", op: faultfs.Getdents, at: inTree(faultSnapshot), err: unix.ENOENT,
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "new index files", int64(1), st.NewIndexFiles)
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},
		{name: "list groups getdents EIO", op: faultfs.Getdents, at: inTree("vm"), nth: 3, want: unix.EIO, phase: inMark, says: "list groups of namespace"},
		{name: "list snapshots getdents malformed", op: faultfs.Getdents, at: inTree(faultGroup), nth: 3, err: faultfs.ErrMalformed, want: unix.EIO, phase: inMark, says: "list snapshots of " + faultGroup},
		{name: "list index files getdents ESTALE", op: faultfs.Getdents, at: inTree(faultSnapshot), nth: 3, want: unix.ESTALE, phase: inMark, says: "list index files of " + faultSnapshot},
		{name: "list index files getdents ENOENT lists the group again", op: faultfs.Getdents, at: inTree(faultSnapshot), nth: 3, err: unix.ENOENT, // SPEC §6.3
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "index files", int64(1), st.IndexFileCount)
				// Marked by the group's second listing, not as an
				// index outside the scheme after the groups.
				rtest.Equal(t, "strange index files", int64(0), st.StrangeIndexFiles)
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},

		// Phase 1: mark.
		{name: "mark touch EIO", op: faultfs.UtimesNanoAt, at: chunkName(used(0)), want: unix.EIO, phase: inMark},
		{name: "mark touch ESTALE", op: faultfs.UtimesNanoAt, at: chunkName(used(1)), want: unix.ESTALE, phase: inMark},
		{name: "mark touch ENOENT is kept", op: faultfs.UtimesNanoAt, at: chunkName(used(0)), err: unix.ENOENT, // doc "No escape" rule 3
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "missing", int64(1), st.MissingChunks)
				rtest.Equal(t, "kept untouched", int64(1), st.KeptUntouched)
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},
		{name: "mark open prefix dir EACCES", op: faultfs.Openat, at: inPrefix(used(0)), want: unix.EACCES, phase: inMark},
		{name: "mark open prefix dir ENOENT is kept", op: faultfs.Openat, at: inPrefix(used(0)), err: unix.ENOENT,
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "missing", int64(1), st.MissingChunks)
				rtest.Equal(t, "kept untouched", int64(1), st.KeptUntouched) // its atime is still old
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},

		// Between the phases: the listing of .chunks (beside phase 1)
		// and the prefix dir check. The check is the sweep's open of
		// the prefix dir, whose fd the sweep reuses, or, once the
		// process's fd budget is spent (which dirs that is depends on
		// the tests running beside this one), the listing's word: then
		// the sweep's own open meets the fault and stops the run there,
		// keeping the chunks of that dir (chunkstore's tests cover both
		// paths one by one).
		{name: "prefix dir listing getdents EIO", op: faultfs.Getdents, at: inTree(".chunks"), want: unix.EIO, phase: beforeSweep, says: "list prefix dirs"},
		{name: "prefix dir listing open EMFILE", op: faultfs.Openat, at: inChunks("."), want: unix.EMFILE, phase: beforeSweep, says: "list prefix dirs"},
		{name: "prefix dir check EIO", op: faultfs.Openat, at: inPrefix(victim), want: unix.EIO, phase: beforeSweep, orPhase: inSweep},
		{name: "prefix dir check ESTALE", op: faultfs.Openat, at: inPrefix(victim), want: unix.ESTALE, phase: beforeSweep, orPhase: inSweep},
		{name: "prefix dir check ENOENT skips it", op: faultfs.Openat, at: inPrefix(victim), err: unix.ENOENT,
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "removed", int64(2), st.RemovedChunks)
			}},

		// Phase 2: sweep.
		{name: "sweep getdents EIO", op: faultfs.Getdents, at: inPrefix(victim), want: unix.EIO, phase: inSweep},
		{name: "sweep getdents malformed", op: faultfs.Getdents, at: inPrefix(victim), err: faultfs.ErrMalformed, want: unix.EIO, phase: inSweep},
		{name: "sweep stat EIO", op: faultfs.Statx, at: chunkName(victim), want: unix.EIO, phase: inSweep},
		{name: "sweep stat ENOENT skips it", op: faultfs.Statx, at: chunkName(victim), err: unix.ENOENT,
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "removed", int64(2), st.RemovedChunks)
			}},
		{name: "sweep locked re-stat ESTALE", op: faultfs.Statx, at: chunkName(victim), nth: 2, want: unix.ESTALE, phase: inSweep},
		{name: "sweep flock ENOLCK", op: faultfs.Flock, at: inPrefix(victim), want: unix.ENOLCK, phase: inSweep},
		{name: "sweep unlink EIO", op: faultfs.Unlinkat, at: chunkName(victim), want: unix.EIO, phase: inSweep},
		{name: "sweep unlink EACCES", op: faultfs.Unlinkat, at: chunkName(victim), want: unix.EACCES, phase: inSweep},
		{name: "sweep unlink ENOENT is not counted", op: faultfs.Unlinkat, at: chunkName(victim), err: unix.ENOENT,
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "removed", int64(2), st.RemovedChunks)
			}},

		// After phase 2: the .gc-status write.
		{name: "status write ENOSPC", op: faultfs.Write, at: statusTmp, want: unix.ENOSPC, phase: inReport},
		{name: "status fchmod EPERM", op: faultfs.Fchmod, at: statusTmp, want: unix.EPERM, phase: inReport},
		{name: "status fsync ENOSPC", op: faultfs.Fsync, at: statusTmp, want: unix.ENOSPC, phase: inReport},
		{name: "status rename EIO", op: faultfs.Renameat, at: statusName, want: unix.EIO, phase: inReport},
		{name: "status directory fsync EIO", op: faultfs.Fsync, at: statusDir, want: unix.EIO, phase: inReport, replaced: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFaultStore(t)
			set := faultfs.New(t, nil)
			store := s.reopen(set)
			locks, err := locking.OpenDirWith(s.locks.Path(), fsys.Keep, locking.RootOptions{Syscalls: set})
			rtest.OK(t, err)
			t.Cleanup(func() { locks.Close() })
			f, path := tt.at(s)
			f.Op, f.Nth, f.Err = tt.op, max(tt.nth, 1), cmp.Or(tt.err, tt.want)
			var fault *faultfs.Fault
			fired := func() int { return fault.Fired() }
			if tt.or == 0 {
				fault = set.Add(f)
			} else {
				g := f
				g.Op = tt.or
				var other *faultfs.Fault
				fault, other = set.AddEither(f, g)
				fired = func() int { return fault.Fired() + other.Fired() }
			}
			st, err := Run(t.Context(), store, locks, s.opts(func(o *Options) {
				o.Tuning.AtimeSafetyCheck = tt.probe
			}))
			t.Logf("Run: %v", err)
			if fired() == 0 {
				t.Fatalf("the fault never fired: %v", fault)
			}
			storetest.CheckReferenced(t, s.base)
			for _, d := range s.used {
				rtest.Equal(t, "referenced chunk "+d.String()+" exists", true, s.exists(s.store.ChunkPath(d)))
			}
			storetest.CheckNoTmp(t, s.base)
			s.checkNoStatusTmp(t)

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
			phase := tt.phase
			if tt.orPhase != "" && strings.HasPrefix(err.Error(), tt.orPhase) {
				phase = tt.orPhase
			}
			if !strings.HasPrefix(err.Error(), phase) {
				t.Errorf("Run's error %q does not stop in %q", err, strings.TrimSuffix(phase, ": "))
			}
			if path == "" {
				path = filepath.Join(s.base, ".chunks")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("Run's error %q names no path under %s", err, path)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("Run's error %q does not say %q", err, tt.says)
			}
			s.checkStatus(t, tt.replaced)
			switch phase {
			case inSweep:
				// The sweep stops at the failed call: the chunk
				// it failed on was not removed.
				rtest.Equal(t, "victim still there", true, s.exists(s.store.ChunkPath(s.victim)))
			case inReport:
				// The run swept before it wrote its status.
				for _, d := range s.garbage {
					rtest.Equal(t, "garbage chunk "+d.String()+" removed", false, s.exists(s.store.ChunkPath(d)))
				}
			default:
				s.checkNothingRemoved(t)
			}
		})
	}
}

// statusPath is the path an error of the .gc-status write names.
func statusPath(s *faultStore) string { return filepath.Join(s.base, StatusFile) }

// spot is where a row of TestFaults strikes: the fault's Path glob or Name,
// and the path Run's error then names ("": the store's .chunks).
type spot func(s *faultStore) (f faultfs.Fault, path string)

// inLocks is the lock file or dir name in the store's lock directory.
func inLocks(name string) spot {
	return func(s *faultStore) (faultfs.Fault, string) {
		return faultfs.Fault{Path: s.lockGlob(name)}, filepath.Join(s.locks.Path(), name)
	}
}

// inTree is the path rel below the store's base ("": the base).
func inTree(rel string) spot {
	return func(s *faultStore) (faultfs.Fault, string) {
		return faultfs.Fault{Path: s.treeGlob(rel)}, filepath.Join(s.base, rel)
	}
}

// inBase is the entry name of the base, by its fd.
func inBase(name string) spot {
	return func(s *faultStore) (faultfs.Fault, string) {
		return faultfs.Fault{Path: s.baseGlob(), Name: name}, s.base
	}
}

// inChunks is the entry name of .chunks, by its fd.
func inChunks(name string) spot {
	return func(s *faultStore) (faultfs.Fault, string) {
		return faultfs.Fault{Path: s.treeGlob(".chunks"), Name: name}, filepath.Join(s.base, ".chunks")
	}
}

// inPrefix is the prefix dir of the chunk d picks.
func inPrefix(d func(s *faultStore) blob.Digest) spot {
	return func(s *faultStore) (faultfs.Fault, string) { return faultfs.Fault{Path: s.prefixGlob(d(s))}, "" }
}

// chunkName is the chunk d picks, by name in its prefix dir.
func chunkName(d func(s *faultStore) blob.Digest) spot {
	return func(s *faultStore) (faultfs.Fault, string) { return faultfs.Fault{Name: d(s).String()}, "" }
}

// The chunks of a faultStore a spot picks.
func victim(s *faultStore) blob.Digest { return s.victim }
func zero(s *faultStore) blob.Digest   { return s.zero }
func used(i int) func(s *faultStore) blob.Digest {
	return func(s *faultStore) blob.Digest { return s.used[i] }
}

// The spots of the atime probe: its chunk by its name relative to .chunks,
// and the temporary file it writes the chunk through.
func probeChunk(s *faultStore) (faultfs.Fault, string) {
	return faultfs.Fault{Name: fmt.Sprintf("%04x/%s", s.zero.Prefix(), s.zero)}, ""
}
func probeTmp(s *faultStore) (faultfs.Fault, string) {
	return faultfs.Fault{Path: s.prefixGlob(s.zero) + "/*.tmp_*"}, ""
}

// The spots of the .gc-status write: its temporary file, its name (the
// rename) and the base directory (its fsync).
func statusTmp(s *faultStore) (faultfs.Fault, string) {
	return faultfs.Fault{Path: s.treeGlob(StatusFile) + ".tmp_*"}, statusPath(s)
}
func statusName(s *faultStore) (faultfs.Fault, string) {
	return faultfs.Fault{Name: StatusFile}, statusPath(s)
}
func statusDir(s *faultStore) (faultfs.Fault, string) {
	return faultfs.Fault{Path: s.baseGlob()}, statusPath(s)
}

// TestTouchFaultInFullBatch: a touch that fails in a batch the index walk
// hands over while it is still reading the index (a full batch, not the
// last one) stops phase 1 with the error, on the inline path of one worker
// and on the pool alike; the walk's batch is handed back once, so neither
// hangs. One referenced chunk is listed 3 batches' worth of times and the
// digest cache is off, so every reference is a touch.
func TestTouchFaultInFullBatch(t *testing.T) {
	for _, workers := range []int{1, 0} {
		t.Run(fmt.Sprintf("gc-concurrency=%d", workers), func(t *testing.T) {
			s := newFaultStore(t)
			s.snapshot("vm/101/2025-01-01T00:00:00Z", slices.Repeat(s.used[:1], 3*batchSize)...)
			set := faultfs.New(t, nil)
			store := s.reopen(set)
			locks, err := locking.OpenDirWith(s.locks.Path(), fsys.Keep, locking.RootOptions{Syscalls: set})
			rtest.OK(t, err)
			t.Cleanup(func() { locks.Close() })
			f, _ := chunkName(used(0))(s)
			f.Op, f.Nth, f.Err = faultfs.UtimesNanoAt, batchSize/2, unix.EIO
			set.Add(f)
			done := make(chan error, 1)
			go func() {
				_, err := Run(t.Context(), store, locks, s.opts(func(o *Options) {
					o.Tuning.Concurrency = workers
					o.Tuning.CacheCapacity = 0
				}))
				done <- err
			}()
			select {
			case err = <-done:
			case <-time.After(2 * time.Minute):
				t.Fatal("Run hangs after a touch failed in a full batch")
			}
			if !errors.Is(err, unix.EIO) || !strings.HasPrefix(err.Error(), inMark) {
				t.Fatalf("Run: want a phase 1 error matching EIO, got %v", err)
			}
			s.checkNothingRemoved(t)
		})
	}
}
