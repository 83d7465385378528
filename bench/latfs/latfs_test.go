package latfs_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"chunkgc/bench/latfs"
	"chunkgc/chunkstore"
	"chunkgc/gc"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/locking"
	"chunkgc/tuning"
)

// mount mounts latfs with delay over backing on a fresh directory and
// unmounts it when the test ends.
func mount(t *testing.T, backing string, delay time.Duration) (*latfs.FS, string) {
	t.Helper()
	rtest.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		rtest.SkipOrFail(t, "needs /dev/fuse: "+err.Error())
	}
	mnt := filepath.Join(t.TempDir(), "lat")
	rtest.OK(t, os.Mkdir(mnt, 0o755))
	f, err := latfs.Mount(backing, mnt, latfs.Options{Delay: delay})
	if err != nil {
		rtest.SkipOrFail(t, err.Error())
	}
	t.Cleanup(func() { rtest.OK(t, f.Unmount()) })
	return f, mnt
}

// TestGCOverLatfs runs a real GC over the harness: every referenced chunk
// survives (storetest's invariant at cleanup, on the backing directory),
// the garbage is gone, and the counters saw the requests a GC makes.
func TestGCOverLatfs(t *testing.T) {
	const refs, garbage = 40, 10
	chunks, names := storetest.Chunks("chunk", refs+garbage, storetest.Age(48*time.Hour))
	st := storetest.Build(t, storetest.At(filepath.Join(t.TempDir(), "store")), storetest.Sparse(), chunks,
		storetest.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", names[:refs/2]...),
		storetest.Snapshot("ct/200/2025-01-01T00:00:00Z", "root.pxar.didx", names[refs/2:refs]...))
	f, mnt := mount(t, st.Base(), 50*time.Microsecond)

	store, err := chunkstore.Open(mnt, chunkstore.Options{Log: zaptest.NewLogger(t), Owner: fsys.Keep, SyncLevel: tuning.SyncNone})
	rtest.OK(t, err)
	t.Cleanup(func() { store.Close() }) // before the unmount
	locks, err := locking.OpenDir(filepath.Join(t.TempDir(), "locks"), fsys.Keep)
	rtest.OK(t, err)
	tun := tuning.Defaults()
	tun.Concurrency = 16
	tun.AtimeSafetyCheck = false // its probe chunk's prefix dir is not in a sparse store
	f.Reset()
	res, err := gc.Run(context.Background(), store, locks, gc.Options{Log: zaptest.NewLogger(t), StoreName: "lat", Tuning: tun})
	rtest.OK(t, err)
	ops := f.Reset()
	t.Logf("requests: %d: %s", ops.Total(), ops)

	rtest.Equal(t, "removed chunks", int64(garbage), res.RemovedChunks)
	for _, n := range names[refs:] {
		if st.Exists(st.Path(n)) {
			t.Errorf("garbage chunk %s survived", n)
		}
	}
	for _, n := range names[:refs] {
		if !st.Exists(st.Path(n)) {
			t.Errorf("referenced chunk %s is gone", n)
		}
	}
	// Phase 1 touches every referenced chunk (SETATTR), phase 2 lists the
	// prefix dirs that exist (sparse: only the chunks') and unlinks the
	// garbage; every one of the 65,536 prefix dirs is looked up.
	for op, least := range map[string]uint64{
		"SETATTR": refs, "UNLINK": garbage, "LOOKUP": 65536, "OPENDIR": 2,
		"READDIRPLUS": 2, "READDIRPLUS_EMPTY": 1, "RELEASEDIR": 2, "OPEN": 2,
	} {
		if ops[op] < least {
			t.Errorf("%s: counted %d requests, want >= %d", op, ops[op], least)
		}
	}
	if ops.Total() > 20*65536 {
		t.Errorf("counted %d requests: more than a GC over 65,536 prefix dirs makes", ops.Total())
	}
}

// TestCountsAndReset checks the counters on plain calls: a stat of a file
// is a LOOKUP (and an attribute request), a listing is OPENDIR, directory
// reads (the last one empty) and RELEASEDIR; Reset zeroes.
func TestCountsAndReset(t *testing.T) {
	dir := t.TempDir()
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644))
	f, mnt := mount(t, dir, 0)
	f.Reset()
	_, err := os.Lstat(filepath.Join(mnt, "f"))
	rtest.OK(t, err)
	c := f.Reset()
	rtest.Equal(t, "LOOKUP after stat", uint64(1), c["LOOKUP"])
	if c["GETATTR"]+c["STATX"] == 0 {
		t.Errorf("stat made no attribute request: %s", c)
	}
	ents, err := os.ReadDir(mnt)
	rtest.OK(t, err)
	rtest.Equal(t, "entries", 1, len(ents))
	c = f.Snapshot()
	rtest.Equal(t, "OPENDIR", uint64(1), c["OPENDIR"])
	if c["READDIRPLUS"]+c["READDIR"] < 2 || c["READDIRPLUS_EMPTY"]+c["READDIR_EMPTY"] < 1 {
		t.Errorf("listing: %s, want >= 2 directory reads, one empty", c)
	}
	f.Reset()
	rtest.Equal(t, "after Reset", uint64(0), f.Snapshot().Total())
}
