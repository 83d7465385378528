package gc

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/locking"
	"chunkgc/tuning"
)

// fixture is a chunk store on a real filesystem, laid out by
// storetest.Build (which ends the test with the store invariant check), with
// helpers to place chunks with explicit ages and snapshots that reference
// them, and to run GC on it.
type fixture struct {
	t     *testing.T
	st    *storetest.Store
	base  string
	store *chunkstore.Store
	locks *locking.Dir
	now   time.Time
	seq   int
	// missing are digests an index references on purpose although the chunk
	// was never stored; the invariant check allows exactly these. New code
	// declares them with storetest.Missing or f.st.Except.
	missing []blob.Digest
}

// newFixture creates a store on a fresh loop-mounted ext4.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	mnt := testfs.Loop(t, "ext4", "", 256<<20)
	return newFixtureAt(t, filepath.Join(mnt, "store"))
}

// newFixtureAt lays out a store at base and opens it.
func newFixtureAt(t *testing.T, base string) *fixture {
	t.Helper()
	return openFixture(t, storetest.Build(t, storetest.At(base)), base)
}

// openFixture opens the store st laid out at base (which may be another
// path to the same tree, such as a FUSE mount of it).
func openFixture(t *testing.T, st *storetest.Store, base string) *fixture {
	t.Helper()
	store, err := chunkstore.Open(base, chunkstore.Options{
		Log: zaptest.NewLogger(t), Owner: fsys.Keep, SyncLevel: tuning.SyncNone,
	})
	rtest.OK(t, err)
	t.Cleanup(func() { store.Close() }) // before an unmount
	locks, err := locking.OpenDir(filepath.Join(t.TempDir(), "locks"), fsys.Keep)
	rtest.OK(t, err)
	f := &fixture{t: t, st: st, base: base, store: store, locks: locks, now: st.Now()}
	// Runs before the invariant check Build registered.
	t.Cleanup(func() { st.Except(f.missing...) })
	return f
}

// name returns a new chunk name unique in this fixture.
func (f *fixture) name() string {
	f.seq++
	return fmt.Sprint("chunk ", f.seq)
}

// chunk inserts a chunk of size plain bytes whose atime and mtime lie age in
// the past; it returns the digest and the blob's size on disk.
func (f *fixture) chunk(size int, age time.Duration) (blob.Digest, int64) {
	f.t.Helper()
	n := f.name()
	f.st.Add(storetest.Chunk(n, storetest.Size(size), storetest.Age(age)))
	return f.st.Digest(n), f.st.Size(n)
}

// chunks inserts n chunks as [fixture.chunk] does and returns their digests.
func (f *fixture) chunks(n, size int, age time.Duration) []blob.Digest {
	f.t.Helper()
	ds := make([]blob.Digest, n)
	for i := range ds {
		ds[i], _ = f.chunk(size, age)
	}
	return ds
}

// neverStored returns the digest of a chunk that does not exist, for an
// index to reference on purpose.
func (f *fixture) neverStored(size int) blob.Digest {
	f.t.Helper()
	n := f.name()
	f.st.Add(storetest.Missing(n, storetest.Size(size)))
	return f.st.Digest(n)
}

// badCopy writes <digest>.n.bad of the given size and age beside the chunk
// d (made by chunk or neverStored) and returns its path.
func (f *fixture) badCopy(d blob.Digest, n int, size int, age time.Duration) string {
	f.t.Helper()
	f.st.Add(storetest.BadCopy(f.st.NameOf(d), n, storetest.Size(size), storetest.Age(age)))
	return f.store.ChunkPath(d) + "." + strconv.Itoa(n) + ".bad"
}

func (f *fixture) age(path string, age time.Duration) {
	f.t.Helper()
	f.st.Age(path, age)
}

// snapshot writes a fixed index listing digests into the snapshot dir rel
// (e.g. "vm/100/2025-01-01T00:00:00Z") and returns its path.
func (f *fixture) snapshot(rel string, digests ...blob.Digest) string {
	f.t.Helper()
	f.st.Snapshot(rel, "drive-scsi0.img.fidx", digests...)
	return filepath.Join(f.base, rel, "drive-scsi0.img.fidx")
}

func (f *fixture) exists(path string) bool { return f.st.Exists(path) }

func (f *fixture) opts(mod ...func(*Options)) Options {
	o := Options{
		Log:       zaptest.NewLogger(f.t, zaptest.Level(zap.InfoLevel)),
		StoreName: "test",
		Tuning:    tuning.Defaults(),
		Owner:     fsys.Keep,
	}
	o.Tuning.Concurrency = 3
	for _, m := range mod {
		m(&o)
	}
	return o
}

func (f *fixture) run(mod ...func(*Options)) (*Status, error) {
	return Run(context.Background(), f.store, f.locks, f.opts(mod...))
}
