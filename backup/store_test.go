package backup

import (
	"errors"
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
	"chunkgc/datastore"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/leakcheck"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/locking"
	"chunkgc/tuning"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m, "chunkgc/backup.")) }

// Snapshot times of the tests.
const (
	t1 = "2025-04-04T15:02:49Z"
	t2 = "2025-04-05T15:02:49Z"
)

// victimSnap is the snapshot directory every victim tree holds (see
// storetest.NewVictim): what an attacker wants a root-run forget to remove.
const victimSnap = "vm/100/2025-01-01T00:00:00Z"

// testStore is a chunk store with its tree and lock directory, checked for
// the store invariants when the test ends.
type testStore struct {
	base  string
	store *chunkstore.Store
	tree  *datastore.Tree
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
	rtest.OK(t, err)
	tree, err := datastore.NewTree(store.BaseFD(), store.Base(), datastore.TreeOptions{})
	rtest.OK(t, err)
	t.Cleanup(func() {
		storetest.CheckReferenced(t, base)
		storetest.CheckNoTmp(t, base)
		rtest.OK(t, errors.Join(tree.Close(), store.Close()))
	})
	// dir/locks is the lock root (dir may be a sticky 1777 tmpfs, which
	// locking refuses as a lock root when running as root).
	lk, err := locking.OpenDir(filepath.Join(dir, "locks", "store"), fsys.Keep)
	rtest.OK(t, err)
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	return &testStore{base: base, store: store, tree: tree, lk: lk, log: log, logs: logs}
}

// at returns a fake clock fixed at the given snapshot time.
func at(t testing.TB, ts string) func() time.Time {
	t.Helper()
	tm, err := time.Parse(datastore.TimeLayout, ts)
	rtest.OK(t, err)
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
	rtest.OK(t, os.WriteFile(p, data, 0o644))
	return p
}

// ingest creates a snapshot at time ts from files, with 64 KiB chunks.
func (s *testStore) ingest(t *testing.T, g datastore.Group, ts string, files ...string) datastore.Snapshot {
	t.Helper()
	snap, err := Ingest(t.Context(), s.store, s.lk, g, files, IngestOptions{ChunkSize: MinChunkSize, Now: at(t, ts)}, s.log)
	rtest.OK(t, err)
	rtest.Equal(t, "snapshot time", ts, snap.TimeString())
	return snap
}

// forget forgets snap through the store's tree.
func (s *testStore) forget(t *testing.T, snap datastore.Snapshot) error {
	t.Helper()
	return Forget(t.Context(), s.tree, s.lk, snap, s.log)
}

// exists reports whether p exists (not following a symlink).
func exists(t testing.TB, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}
