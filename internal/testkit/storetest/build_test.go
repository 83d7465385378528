package storetest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/index"
	"chunkgc/internal/adapt"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/testfs"
)

// TestBuildLayout: a built store is one chunkstore opens and accepts (the
// layout mirrors chunkstore.Create's), its chunks are real blobs of their
// declared data with the asked times, and its indexes reference them.
func TestBuildLayout(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	at, mt := now.Add(-time.Hour), now.Add(-2*time.Hour)
	base := filepath.Join(t.TempDir(), "store")
	if os.Geteuid() == 0 {
		base = filepath.Join(testfs.Tmpfs(t, ""), "store") // 65,536 mkdirs: fast
	}
	s := Build(t, At(base), Now(now),
		Chunk("old", Age(48*time.Hour), Size(5000)),
		Chunk("young", Times(at, mt), Data([]byte("young data")), Compressed()),
		Missing("lost", Size(100)),
		BadCopy("lost", 3, Size(77), Age(72*time.Hour)),
		Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", "old", "young", "lost"),
		Snapshot("ct/101/2025-01-01T00:00:00Z", "root.pxar.didx", "old"),
		File(".chunks/0000/notes.txt", Size(3), Age(time.Hour)),
		Dir("vm/102"),
		Symlink("vm/103", "102"),
	)

	store, err := chunkstore.Open(s.Base(), chunkstore.Options{Owner: fsys.Keep})
	rtest.OK(t, err)
	defer store.Close()
	rtest.OK(t, store.VerifyLayout(context.Background()))
	missing, err := store.CheckPrefixDirs(context.Background(), fixedPool(t, 2), nil)
	rtest.OK(t, err)
	rtest.Equal(t, "missing prefix dirs", 0, len(missing))
	rtest.Equal(t, "chunk path", store.ChunkPath(s.Digest("old")), s.Path("old"))

	// Times first: reading a chunk may set its atime (relatime).
	times := func(p string) (time.Time, time.Time) {
		var st unix.Stat_t
		rtest.OK(t, unix.Lstat(p, &st))
		return time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())
	}
	a, m := times(s.Path("old"))
	rtest.Equal(t, "aged atime", now.Add(-48*time.Hour), a.UTC())
	rtest.Equal(t, "aged mtime", now.Add(-48*time.Hour), m.UTC())
	a, m = times(s.Path("young"))
	rtest.Equal(t, "atime", at, a.UTC())
	rtest.Equal(t, "mtime", mt, m.UTC())
	b, err := os.ReadFile(s.Path("young"))
	rtest.OK(t, err)
	rtest.Equal(t, "size on disk", int64(len(b)), s.Size("young"))
	plain, err := blob.Decode(b)
	rtest.OK(t, err)
	rtest.Equal(t, "data", "young data", string(plain))
	rtest.Equal(t, "digest", blob.Sum(plain), s.Digest("young"))
	old, err := os.ReadFile(s.Path("old"))
	rtest.OK(t, err)
	plain, err = blob.Decode(old)
	rtest.OK(t, err)
	rtest.Equal(t, "size", 5000, len(plain))

	rtest.Equal(t, "missing chunk stored", false, s.Exists(s.Path("lost")))
	bad := s.BadPath(s.Digest("lost"), 3)
	fi, err := os.Stat(bad)
	rtest.OK(t, err)
	rtest.Equal(t, "bad copy size", int64(77), fi.Size())
	fi, err = os.Stat(filepath.Join(s.Base(), "vm/103"))
	rtest.OK(t, err)
	rtest.Equal(t, "dir behind the symlink", true, fi.IsDir())

	r, err := index.Open(filepath.Join(s.Base(), "vm/100/2025-01-01T00:00:00Z/drive-scsi0.img.fidx"))
	rtest.OK(t, err)
	var refs []blob.Digest
	rtest.OK(t, r.Each(func(d *blob.Digest) error { refs = append(refs, *d); return nil }))
	rtest.OK(t, r.Close())
	rtest.Equal(t, "references", []blob.Digest{s.Digest("old"), s.Digest("young"), s.Digest("lost")}, refs)

	// The invariant check sees both indexes and allows the Missing chunk.
	f := &fakeTB{TB: t}
	indexes, n := CheckReferencedExcept(f, s.Base(), s.except...)
	rtest.Equal(t, "indexes", 2, indexes)
	rtest.Equal(t, "references checked", 4, n)
	rtest.Equal(t, "errors", 0, len(f.errors))
}

// TestBuildOwner: an Owner gives the layout and every file to it.
func TestBuildOwner(t *testing.T) {
	rtest.RequireRoot(t)
	o := fsys.Owner{UID: BackupUID, GID: BackupGID}
	s := Build(t, Sparse(), Owner(o), Chunk("c"), Snapshot("vm/1/2025-01-01T00:00:00Z", "a.fidx", "c"))
	for _, rel := range []string{"", ".chunks", ".lock", "vm", "vm/1/2025-01-01T00:00:00Z/a.fidx"} {
		var st unix.Stat_t
		rtest.OK(t, unix.Lstat(filepath.Join(s.Base(), rel), &st))
		rtest.Equal(t, "owner of "+rel, true, o.Owns(&st))
	}
	var st unix.Stat_t
	rtest.OK(t, unix.Lstat(s.Path("c"), &st))
	rtest.Equal(t, "owner of the chunk", true, o.Owns(&st))
}

// fixedPool is a pool of n workers, stopped when the test ends.
func fixedPool(t *testing.T, n int) *adapt.Pool {
	p := adapt.Start(t.Context(), adapt.Config{Fixed: n})
	t.Cleanup(func() { p.Stop() })
	return p
}
