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
//   - the prefix dir check between the phases, which is the sweep's open
//     of a prefix dir (openat);
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
		give  func(s *faultStore) faultfs.Fault
		want  error  // what Run's error matches; nil when GC carries on
		phase string // where the run stopped
		// path returns the path Run's error names; nil: the store's .chunks.
		path func(s *faultStore) string
		// says is a further part of Run's error: which listing failed.
		says string
		// replaced: the failed run replaced .gc-status all the same (it
		// failed after the rename).
		replaced bool
		check    func(t *testing.T, s *faultStore, st *Status)
	}{
		// The locks and the writer registry, before the run starts.
		{name: "gc lock open EACCES", want: unix.EACCES, phase: inGCLock,
			path: func(s *faultStore) string { return filepath.Join(s.locks.Path(), "gc") },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.lockGlob("gc"), Nth: 1, Err: unix.EACCES}
			}},
		{name: "gc lock flock EIO", want: unix.EIO, phase: inGCLock,
			path: func(s *faultStore) string { return filepath.Join(s.locks.Path(), "gc") },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Flock, Path: s.lockGlob("gc"), Nth: 1, Err: unix.EIO}
			}},
		{name: "store lock open EACCES", want: unix.EACCES, phase: inStoreLock,
			path: func(s *faultStore) string { return filepath.Join(s.base, locking.StoreLockName) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.treeGlob(locking.StoreLockName), Nth: 1, Err: unix.EACCES}
			}},
		{name: "store lock fcntl ENOLCK", want: unix.ENOLCK, phase: inStoreLock,
			path: func(s *faultStore) string { return filepath.Join(s.base, locking.StoreLockName) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.FcntlFlock, Path: s.treeGlob(locking.StoreLockName), Nth: 1, Err: unix.ENOLCK}
			}},
		{name: "writer registry getdents EIO", want: unix.EIO, phase: inRegistry,
			path: func(s *faultStore) string { return filepath.Join(s.locks.Path(), "writers") },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.lockGlob("writers"), Nth: 1, Err: unix.EIO}
			}},

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

		// Phase 1: the index walk. Each directory's listing is two
		// getdents64 calls (the second returns 0); the walk lists every
		// directory first, so the mark's own listings of a group and a
		// snapshot are the third call on its path.
		{name: "tree fstat EIO", want: unix.EIO, phase: inMark,
			path: func(s *faultStore) string { return s.base },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Fstatat, Name: "", Path: s.baseGlob(), Nth: 1, Err: unix.EIO}
			}},
		{name: "walk open base EACCES", want: unix.EACCES, phase: inMark,
			path: func(s *faultStore) string { return s.base },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Name: ".", Path: s.baseGlob(), Nth: 1, Err: unix.EACCES}
			}},
		{name: "walk getdents base EIO", want: unix.EIO, phase: inMark, says: "walk index files",
			path: func(s *faultStore) string { return s.base },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.baseGlob(), Nth: 1, Err: unix.EIO}
			}},
		{name: "walk open group dir EACCES", want: unix.EACCES, phase: inMark, says: "cannot list every index file",
			path: func(s *faultStore) string { return filepath.Join(s.base, faultGroup) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.treeGlob(faultGroup), Nth: 1, Err: unix.EACCES}
			}},
		{name: "walk open snapshot dir EIO", want: unix.EIO, phase: inMark, says: "walk index files",
			path: func(s *faultStore) string { return filepath.Join(s.base, faultSnapshot) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.treeGlob(faultSnapshot), Nth: 1, Err: unix.EIO}
			}},
		{name: "walk open snapshot dir ENOENT: the mark finds its index",
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.treeGlob(faultSnapshot), Nth: 1, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "new index files", int64(1), st.NewIndexFiles)
				rtest.Equal(t, "index files", int64(1), st.IndexFileCount)
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},
		{name: "walk getdents group dir EIO", want: unix.EIO, phase: inMark, says: "walk index files",
			path: func(s *faultStore) string { return filepath.Join(s.base, faultGroup) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.treeGlob(faultGroup), Nth: 1, Err: unix.EIO}
			}},
		{name: "walk getdents snapshot dir malformed", want: unix.EIO, phase: inMark, says: "walk index files",
			path: func(s *faultStore) string { return filepath.Join(s.base, faultSnapshot) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.treeGlob(faultSnapshot), Nth: 1, Err: faultfs.ErrMalformed}
			}},
		{name: "walk getdents snapshot dir ESTALE", want: unix.ESTALE, phase: inMark, says: "walk index files",
			path: func(s *faultStore) string { return filepath.Join(s.base, faultSnapshot) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.treeGlob(faultSnapshot), Nth: 1, Err: unix.ESTALE}
			}},
		{name: "walk getdents snapshot dir ENOENT: the mark finds its index",
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.treeGlob(faultSnapshot), Nth: 1, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "new index files", int64(1), st.NewIndexFiles)
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
			}},
		{name: "list groups getdents EIO", want: unix.EIO, phase: inMark, says: "list groups of namespace",
			path: func(s *faultStore) string { return filepath.Join(s.base, "vm") },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.treeGlob("vm"), Nth: 3, Err: unix.EIO}
			}},
		{name: "list snapshots getdents malformed", want: unix.EIO, phase: inMark, says: "list snapshots of " + faultGroup,
			path: func(s *faultStore) string { return filepath.Join(s.base, faultGroup) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.treeGlob(faultGroup), Nth: 3, Err: faultfs.ErrMalformed}
			}},
		{name: "list index files getdents ESTALE", want: unix.ESTALE, phase: inMark, says: "list index files of " + faultSnapshot,
			path: func(s *faultStore) string { return filepath.Join(s.base, faultSnapshot) },
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.treeGlob(faultSnapshot), Nth: 3, Err: unix.ESTALE}
			}},
		{name: "list index files getdents ENOENT lists the group again", // SPEC §6.3
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Getdents, Path: s.treeGlob(faultSnapshot), Nth: 3, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "index files", int64(1), st.IndexFileCount)
				// Marked by the group's second listing, not as an
				// index outside the scheme after the groups.
				rtest.Equal(t, "strange index files", int64(0), st.StrangeIndexFiles)
				rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
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
		// The check is the sweep's open of the prefix dir, whose fd the
		// sweep reuses (a dir beyond the fd budget is opened again by the
		// sweep; chunkstore's tests cover that open).
		{name: "prefix dir check EIO", want: unix.EIO, phase: beforeSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.prefixGlob(s.victim), Nth: 1, Err: unix.EIO}
			}},
		{name: "prefix dir open ESTALE", want: unix.ESTALE, phase: beforeSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Openat, Path: s.prefixGlob(s.victim), Nth: 1, Err: unix.ESTALE}
			}},
		{name: "prefix dir open ENOENT skips it",
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
		// Phase 2: sweep.
		{name: "sweep stat EIO", want: unix.EIO, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Statx, Name: s.victim.String(), Nth: 1, Err: unix.EIO}
			}},
		{name: "sweep stat ENOENT skips it",
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Statx, Name: s.victim.String(), Nth: 1, Err: unix.ENOENT}
			},
			check: func(t *testing.T, s *faultStore, st *Status) {
				rtest.Equal(t, "removed", int64(2), st.RemovedChunks)
			}},
		{name: "sweep locked re-stat ESTALE", want: unix.ESTALE, phase: inSweep,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Statx, Name: s.victim.String(), Nth: 2, Err: unix.ESTALE}
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

		// After phase 2: the .gc-status write.
		{name: "status write ENOSPC", want: unix.ENOSPC, phase: inReport,
			path: statusPath,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Write, Path: s.treeGlob(StatusFile) + ".tmp_*", Nth: 1, Err: unix.ENOSPC}
			}},
		{name: "status fchmod EPERM", want: unix.EPERM, phase: inReport,
			path: statusPath,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Fchmod, Path: s.treeGlob(StatusFile) + ".tmp_*", Nth: 1, Err: unix.EPERM}
			}},
		{name: "status fsync ENOSPC", want: unix.ENOSPC, phase: inReport,
			path: statusPath,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Fsync, Path: s.treeGlob(StatusFile) + ".tmp_*", Nth: 1, Err: unix.ENOSPC}
			}},
		{name: "status rename EIO", want: unix.EIO, phase: inReport,
			path: statusPath,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Renameat, Name: StatusFile, Nth: 1, Err: unix.EIO}
			}},
		{name: "status directory fsync EIO", want: unix.EIO, phase: inReport, replaced: true,
			path: statusPath,
			give: func(s *faultStore) faultfs.Fault {
				return faultfs.Fault{Op: faultfs.Fsync, Path: s.baseGlob(), Nth: 1, Err: unix.EIO}
			}},
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
			fault := set.Add(tt.give(s))
			st, err := Run(t.Context(), store, locks, s.opts(func(o *Options) {
				o.Tuning.AtimeSafetyCheck = tt.probe
			}))
			t.Logf("Run: %v", err)
			if fault.Fired() == 0 {
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
			if !strings.HasPrefix(err.Error(), tt.phase) {
				t.Errorf("Run's error %q does not stop in %q", err, strings.TrimSuffix(tt.phase, ": "))
			}
			path := filepath.Join(s.base, ".chunks")
			if tt.path != nil {
				path = tt.path(s)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("Run's error %q names no path under %s", err, path)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("Run's error %q does not say %q", err, tt.says)
			}
			s.checkStatus(t, tt.replaced)
			switch tt.phase {
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
