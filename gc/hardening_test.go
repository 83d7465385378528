package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/index"
	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/tuning"
)

// reopen opens the fixture's store again with the seam sys.
func (f *fixture) reopen(sys fsys.Syscalls) *chunkstore.Store {
	f.t.Helper()
	s, err := chunkstore.Open(f.base, chunkstore.Options{Log: zaptest.NewLogger(f.t), Owner: fsys.Keep,
		SyncLevel: tuning.SyncNone, Syscalls: sys})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { s.Close() })
	return s
}

// chunkFiles lists every file under .chunks (names relative to it).
func chunkFiles(t *testing.T, base string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	root := filepath.Join(base, ".chunks")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files[rel] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestENOENTOnTouchIsNeverSwept: a referenced chunk whose touch reports
// ENOENT although it exists (with an old atime) is counted missing in phase
// 1 and kept by phase 2, while real garbage is still removed.
func TestENOENTOnTouchIsNeverSwept(t *testing.T) {
	f := newFixture(t)
	lied, _ := f.chunk(1000, 72*time.Hour)
	bad := f.badCopy(lied, 2, 300, 72*time.Hour)
	kept, _ := f.chunk(1000, 72*time.Hour)
	garbage, _ := f.chunk(1000, 72*time.Hour)
	f.snapshot("vm/100/2025-01-01T00:00:00Z", lied, kept)

	// A fake (faultfs): no real filesystem here lies this way on demand;
	// every other call is real.
	set := faultfs.New(t, nil)
	lie := set.Add(faultfs.Fault{Op: faultfs.UtimesNanoAt, Name: lied.String(), Err: unix.ENOENT})
	store := f.reopen(set)
	st, err := Run(context.Background(), store, f.locks, f.opts())
	rtest.OK(t, err)
	if lie.Fired() == 0 {
		t.Fatal("the ENOENT fault never fired")
	}
	rtest.Equal(t, "missing", int64(1), st.MissingChunks)
	rtest.Equal(t, "kept untouched", int64(1), st.KeptUntouched) // its bad copy was touched as a missing chunk's are
	rtest.Equal(t, "lied-about chunk still there", true, f.exists(f.store.ChunkPath(lied)))
	rtest.Equal(t, "its bad copy still there", true, f.exists(bad))
	rtest.Equal(t, "referenced chunk still there", true, f.exists(f.store.ChunkPath(kept)))
	rtest.Equal(t, "garbage removed", false, f.exists(f.store.ChunkPath(garbage)))
	rtest.Equal(t, "removed", int64(1), st.RemovedChunks)
}

// TestUntouchedOverflowSkipsSweep: when more referenced chunks report ENOENT
// than the run can remember, it stops before phase 2 and removes nothing.
func TestUntouchedOverflowSkipsSweep(t *testing.T) {
	f := newFixture(t)
	garbage, _ := f.chunk(1000, 72*time.Hour)
	f.snapshot("vm/100/2025-01-01T00:00:00Z", f.neverStored(10), f.neverStored(11), f.neverStored(12))
	_, err := f.run(func(o *Options) { o.hooks.untouchedLimit = 2 })
	if !errors.Is(err, errTooManyUntouched) {
		t.Fatalf("want errTooManyUntouched, got %v", err)
	}
	rtest.Equal(t, "garbage kept", true, f.exists(f.store.ChunkPath(garbage)))
}

// TestIndexDataBytesSaturates: index-data-bytes adds sizes from index
// headers, which a planted index makes as large as it likes: the sum stops
// at the largest uint64 instead of wrapping to a small number.
func TestIndexDataBytesSaturates(t *testing.T) {
	f := newFixture(t)
	d, _ := f.chunk(1000, time.Hour)
	for _, snap := range []string{"vm/100/2025-01-01T00:00:00Z", "vm/100/2025-01-02T00:00:00Z"} {
		dir := filepath.Join(f.base, snap)
		rtest.OK(t, os.MkdirAll(dir, 0o755))
		rtest.OK(t, index.WriteDynamicFile(filepath.Join(dir, "big.didx"), []uint64{math.MaxUint64 - 5}, []blob.Digest{d}))
	}
	st, err := f.run()
	rtest.OK(t, err)
	rtest.Equal(t, "index data bytes", uint64(math.MaxUint64), st.IndexDataBytes)
}

// backupFixture is a fixture whose store is owned by the backup user, as a
// PBS datastore is, so that a uid-34 process can plant things in it.
func backupFixture(t *testing.T) *fixture {
	t.Helper()
	rtest.RequireRoot(t)
	f := newFixture(t)
	storetest.ChownTree(t, f.base)
	return f
}

// TestSymlinkedPrefixDir: the backup user replaces a prefix dir with a
// symlink into a victim tree holding a chunk-named file with an old atime.
// Planted before the run, whether an index references a chunk of that
// prefix or not, GC stops with an error naming the prefix dir and removes
// nothing. Swapped in after the prefix check, GC either sweeps the checked
// dir through the fd the check opened (within the fd budget) or stops at
// the sweep's own O_NOFOLLOW open; either way the victim is untouched.
func TestSymlinkedPrefixDir(t *testing.T) {
	for _, c := range []struct {
		name       string
		referenced bool // an index references a chunk in the symlinked prefix
		during     bool // swapped in after the prefix check, before the sweep
	}{
		{"planted, not referenced", false, false},
		{"planted, referenced", true, false},
		{"swapped in before the sweep", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := backupFixture(t)
			victim := storetest.NewVictim(t)
			garbage, _ := f.chunk(1000, 72*time.Hour)
			used, _ := f.chunk(1000, 72*time.Hour)
			refs := []blob.Digest{used}
			if c.referenced {
				var d blob.Digest
				d[0], d[1] = 0x0a, 0x0a
				refs = append(refs, d)
				f.missing = append(f.missing, d)
			}
			f.snapshot("vm/100/2025-01-01T00:00:00Z", refs...)
			plant := `mv 0a0a 0a0a.orig && ln -s ` + victim.Dir + `/bb9f 0a0a`
			chunks := filepath.Join(f.base, ".chunks")
			before := chunkFiles(t, f.base)
			var hook func(*Options)
			if c.during {
				hook = func(o *Options) { o.hooks.afterPrefixCheck = func() { storetest.AsBackup(t, chunks, plant) } }
			} else {
				storetest.AsBackup(t, chunks, plant)
				hook = func(*Options) {}
			}
			_, err := f.run(hook)
			switch {
			case c.during && err == nil:
				// The check opened 0a0a and cached its fd: the sweep
				// listed the real dir (now 0a0a.orig) through it, not
				// the symlink.
				t.Log("swapped after the check: the sweep used the checked dir's fd")
			case !errors.Is(err, nofollow.ErrSymlink) || !strings.Contains(err.Error(), filepath.Join(chunks, "0a0a")):
				t.Fatalf("want an error naming %s as a symlink, got %v", filepath.Join(chunks, "0a0a"), err)
			}
			victim.Check(t)
			storetest.AsBackup(t, chunks, `rm 0a0a && mv 0a0a.orig 0a0a`)
			if !c.during {
				after := chunkFiles(t, f.base)
				for n := range before {
					if !after[n] {
						t.Errorf("%s was removed although GC stopped before phase 2", n)
					}
				}
				rtest.Equal(t, "garbage kept", true, f.exists(f.store.ChunkPath(garbage)))
			}
		})
	}
}

// TestRacingPrefixSwap: while GC runs again and again, the backup user swaps
// a prefix dir for a symlink into the victim tree and back in a loop. Every
// run either succeeds or fails naming a path; none touches the victim, and
// no referenced chunk is lost (the fixture's cleanup checks).
func TestRacingPrefixSwap(t *testing.T) {
	f := backupFixture(t)
	victim := storetest.NewVictim(t)
	for i := range 20 {
		d, _ := f.chunk(1000+i, 72*time.Hour)
		f.snapshot(fmt.Sprintf("vm/100/2025-01-%02dT00:00:00Z", i+1), d) // one snapshot per chunk: all 20 referenced
	}
	chunks := filepath.Join(f.base, ".chunks")
	stop := storetest.StartAsBackup(t, chunks,
		`i=0; while [ $i -lt 100000 ]; do i=$((i+1)); mv 0a0a 0a0a.x && ln -s `+victim.Dir+`/bb9f 0a0a && rm 0a0a && mv 0a0a.x 0a0a; done`,
		30*time.Second)
	deadline := time.Now().Add(3 * time.Second)
	runs, failed := 0, 0
	for time.Now().Before(deadline) || runs < 2 {
		runs++
		_, err := f.run(func(o *Options) { o.Tuning.AtimeSafetyCheck = false })
		if err != nil {
			failed++
			if !strings.Contains(err.Error(), chunks) {
				t.Errorf("run %d failed without naming a path in the store: %v", runs, err)
			}
		}
	}
	out := stop()
	t.Logf("%d runs, %d stopped by the swap; attacker: %q", runs, failed, out)
	victim.Check(t)
	// Put the prefix dir back if the loop was stopped half-way.
	if _, err := os.Lstat(filepath.Join(chunks, "0a0a.x")); err == nil {
		os.Remove(filepath.Join(chunks, "0a0a"))
		rtest.OK(t, os.Rename(filepath.Join(chunks, "0a0a.x"), filepath.Join(chunks, "0a0a")))
	}
}

// TestHardLinkedGarbageKept: a garbage chunk file with a second hard link
// (which could be a name outside the store) is kept and counted, not
// unlinked.
func TestHardLinkedGarbageKept(t *testing.T) {
	f := newFixture(t)
	linked, _ := f.chunk(1000, 72*time.Hour)
	garbage, _ := f.chunk(1000, 72*time.Hour)
	other := filepath.Join(f.base, "other-name")
	rtest.OK(t, os.Link(f.store.ChunkPath(linked), other))
	f.age(f.store.ChunkPath(linked), 72*time.Hour)
	st, err := f.run()
	rtest.OK(t, err)
	rtest.Equal(t, "linked kept", true, f.exists(f.store.ChunkPath(linked)))
	rtest.Equal(t, "kept linked", int64(1), st.KeptLinked)
	rtest.Equal(t, "garbage removed", false, f.exists(f.store.ChunkPath(garbage)))
}
