package datastore

import (
	"chunkgc/internal/fsys"

	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"chunkgc/chunkstore"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/locking"
	"chunkgc/tuning"
)

// testStore is a chunk store with its lock directory, checked for the store
// invariants when the test ends.
type testStore struct {
	base  string
	store *chunkstore.Store
	lk    *locking.Dir
	log   *zap.Logger
	logs  *observer.ObservedLogs // Info and above
}

// scratchDir is where a test store lives: a tmpfs mounted for the test when
// root (creating and removing 65,536 prefix dirs on a disk takes tens of
// seconds), else t.TempDir().
func scratchDir(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return t.TempDir()
	}
	return testfs.Tmpfs(t, "")
}

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	dir := scratchDir(t)
	base := filepath.Join(dir, "store")
	store, err := chunkstore.Create(t.Context(), base,
		chunkstore.Options{Log: zaptest.NewLogger(t), Owner: fsys.Keep, SyncLevel: tuning.SyncNone}, nil)
	ok(t, err)
	t.Cleanup(func() {
		storetest.CheckReferenced(t, base)
		storetest.CheckNoTmp(t, base)
		ok(t, store.Close())
	})
	// dir/locks is the lock root (dir may be a sticky 1777 tmpfs, which
	// locking refuses as a lock root when running as root).
	lk, err := locking.OpenDir(filepath.Join(dir, "locks", "store"), fsys.Keep)
	ok(t, err)
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	return &testStore{base: base, store: store, lk: lk, log: log, logs: logs}
}

// at returns a fake clock fixed at the given snapshot time.
func at(t testing.TB, ts string) func() time.Time {
	t.Helper()
	tm, okay := parseTime(ts)
	if !okay {
		t.Fatalf("bad time %q", ts)
	}
	return func() time.Time { return tm.Add(300 * time.Millisecond) }
}

// writeSource writes a source file of n bytes (random, with one run of
// zeros that repeats a chunk) and returns its path.
func writeSource(t testing.TB, name string, n int, seed uint64) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	clear(data[n/4 : n/2])
	p := filepath.Join(t.TempDir(), name)
	ok(t, os.WriteFile(p, data, 0o644))
	return p
}

// ingest creates a snapshot at time ts from files, with 64 KiB chunks.
func (s *testStore) ingest(t *testing.T, g Group, ts string, files ...string) Snapshot {
	t.Helper()
	snap, err := Ingest(t.Context(), s.store, s.lk, g, files, IngestOptions{ChunkSize: MinChunkSize, Now: at(t, ts)}, s.log)
	ok(t, err)
	equal(t, "snapshot time", ts, snap.TimeString())
	return snap
}

func exists(t testing.TB, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}
