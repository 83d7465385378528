package gc

import (
	"chunkgc/internal/fsys"

	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/index"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/locking"
	"chunkgc/tuning"
)

// fixture is a chunk store on a real filesystem with helpers to place chunks
// with explicit ages and snapshots that reference them. Every fixture ends
// its test with the store invariant check.
type fixture struct {
	t     *testing.T
	base  string
	store *chunkstore.Store
	locks *locking.Dir
	now   time.Time
	seq   int
	// missing are digests an index references on purpose although the chunk
	// was never stored; the invariant check allows exactly these.
	missing []blob.Digest
}

// newFixture creates a store on a fresh loop-mounted ext4.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	mnt := testfs.Loop(t, "ext4", "", 256<<20)
	return newFixtureAt(t, filepath.Join(mnt, "store"))
}

func newFixtureAt(t *testing.T, base string) *fixture {
	t.Helper()
	store, err := chunkstore.Create(context.Background(), base, chunkstore.Options{
		Log: zaptest.NewLogger(t), Owner: fsys.Keep, SyncLevel: tuning.SyncNone,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	locks, err := locking.OpenDir(filepath.Join(t.TempDir(), "locks"), fsys.Keep)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, base: base, store: store, locks: locks, now: time.Now()}
	t.Cleanup(func() {
		storetest.CheckReferencedExcept(t, base, f.missing...)
		storetest.CheckNoTmp(t, base)
	})
	return f
}

// data returns size bytes unique to this fixture call.
func (f *fixture) data(size int) []byte {
	f.seq++
	b := make([]byte, size)
	copy(b, fmt.Sprintf("chunk %d of %s", f.seq, f.t.Name()))
	for i := 64; i < size; i++ {
		b[i] = byte(i*7 + f.seq)
	}
	return b
}

// chunk inserts a chunk of size plain bytes whose atime and mtime lie age in
// the past; it returns the digest and the blob's size on disk.
func (f *fixture) chunk(size int, age time.Duration) (blob.Digest, int64) {
	f.t.Helper()
	data := f.data(size)
	d := blob.Sum(data)
	b, err := blob.Encode(data, false)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, _, err := f.store.Insert(b, d); err != nil {
		f.t.Fatal(err)
	}
	f.age(f.store.ChunkPath(d), age)
	return d, int64(len(b))
}

// neverStored returns the digest of a chunk that does not exist, for an
// index to reference on purpose.
func (f *fixture) neverStored(size int) blob.Digest {
	d := blob.Sum(f.data(size))
	f.missing = append(f.missing, d)
	return d
}

// badCopy writes <digest>.n.bad of the given size and age.
func (f *fixture) badCopy(d blob.Digest, n int, size int, age time.Duration) string {
	f.t.Helper()
	p := fmt.Sprintf("%s.%d.bad", f.store.ChunkPath(d), n)
	if err := os.WriteFile(p, f.data(size), 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.age(p, age)
	return p
}

func (f *fixture) age(path string, age time.Duration) {
	f.t.Helper()
	ts := f.now.Add(-age)
	if err := os.Chtimes(path, ts, ts); err != nil {
		f.t.Fatal(err)
	}
}

// snapshot writes a fixed index listing digests into the snapshot dir rel
// (e.g. "vm/100/2025-01-01T00:00:00Z") and returns its path.
func (f *fixture) snapshot(rel string, digests ...blob.Digest) string {
	f.t.Helper()
	dir := filepath.Join(f.base, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	p := filepath.Join(dir, "drive-scsi0.img.fidx")
	if err := index.WriteFixedFile(p, uint64(len(digests))*4096, 4096, digests); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fixture) exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

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

func equal[T comparable](t *testing.T, what string, want, got T) {
	t.Helper()
	if want != got {
		t.Errorf("%s: want %v, got %v", what, want, got)
	}
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
