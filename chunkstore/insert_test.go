package chunkstore

import (
	"chunkgc/internal/fsys"

	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/tuning"
)

func TestChunkPath(t *testing.T) {
	s := miniStore(t, t.TempDir(), testOpts(t))
	_, d := zeroChunk(t)
	want := s.Base() + "/.chunks/bb9f/bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"
	equal(t, "ChunkPath", want, s.ChunkPath(d))
}

func TestInsert(t *testing.T) {
	tests := []struct {
		name string
		give tuning.SyncLevel
	}{
		{"none", tuning.SyncNone},
		{"filesystem", tuning.SyncFilesystem},
		{"file", tuning.SyncFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, d := testChunk(t, "some chunk data "+tt.name)
			opts := testOpts(t)
			opts.SyncLevel = tt.give
			s := miniStore(t, t.TempDir(), opts, d.Prefix())

			pre, size, err := s.Insert(b, d)
			ok(t, err)
			equal(t, "pre-existing", false, pre)
			equal(t, "size", int64(len(b)), size)
			got, err := os.ReadFile(s.ChunkPath(d))
			ok(t, err)
			if !bytes.Equal(b, got) {
				t.Fatal("chunk file does not hold the blob")
			}
			st := lstat(t, s.ChunkPath(d))
			if want := unix.S_IFREG | 0o644&^uint32(umask(t)); st.Mode != want {
				t.Errorf("chunk mode %o, want %o (0644 minus the umask)", st.Mode, want)
			}

			setTimes(t, s.ChunkPath(d), old, old)
			pre, size, err = s.Insert(b, d)
			ok(t, err)
			equal(t, "pre-existing", true, pre)
			equal(t, "size", int64(len(b)), size)
			st = lstat(t, s.ChunkPath(d))
			if !ts(st.Atim).After(old) {
				t.Errorf("Insert of a pre-existing chunk did not touch it: atime %v", ts(st.Atim))
			}
			equal(t, "mtime", old, ts(st.Mtim).UTC())
			ok(t, s.SyncFS())
		})
	}
}

func umask(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	ok(t, err)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "Umask:"); found {
			var m int
			for _, c := range strings.TrimSpace(v) {
				m = m*8 + int(c-'0')
			}
			return m
		}
	}
	t.Fatal("no Umask in /proc/self/status")
	return 0
}

func TestInsertRejectsInvalidBlob(t *testing.T) {
	s := miniStore(t, t.TempDir(), testOpts(t), 0x1234)
	d := blob.Digest{0x12, 0x34}
	if _, _, err := s.Insert([]byte("not a blob"), d); err == nil {
		t.Fatal("Insert accepted an invalid blob")
	}
	if _, err := os.Lstat(s.ChunkPath(d)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("chunk after a rejected insert: %v", err)
	}
}

func TestInsertReplacesEmptyChunk(t *testing.T) {
	b, d := testChunk(t, "data")
	s := miniStore(t, t.TempDir(), testOpts(t), d.Prefix())
	ok(t, os.WriteFile(s.ChunkPath(d), nil, 0o644))
	pre, _, err := s.Insert(b, d)
	ok(t, err)
	equal(t, "pre-existing", false, pre)
	got, err := os.ReadFile(s.ChunkPath(d))
	ok(t, err)
	equal(t, "chunk size", len(b), len(got))
}

func TestInsertMissingPrefixDir(t *testing.T) {
	b, d := testChunk(t, "data")
	s := miniStore(t, t.TempDir(), testOpts(t))
	_, _, err := s.Insert(b, d)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Insert without a prefix dir: want fs.ErrNotExist, got %v", err)
	}
}

// insertFault fails the first call of one of the calls Insert makes after
// creating its tmp file, and records the tmp file it saw.
type insertFault struct {
	fsys.Real
	op    string
	tmp   atomic.Value // string: the tmp name openat created
	fired atomic.Int32
}

func (f *insertFault) fail(op, name string) error {
	if f.op != op || f.fired.Add(1) != 1 {
		return nil
	}
	return &fs.PathError{Op: op, Path: name, Err: unix.EIO}
}

func (f *insertFault) Openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	if strings.Contains(name, ".tmp_") {
		f.tmp.Store(name)
	}
	return f.Real.Openat(dirfd, name, flags, mode)
}

func (f *insertFault) Write(fd int, p []byte) (int, error) {
	if err := f.fail("write", ""); err != nil {
		return 0, err
	}
	return f.Real.Write(fd, p)
}

func (f *insertFault) Fsync(fd int) error {
	if err := f.fail("fsync", ""); err != nil {
		return err
	}
	return f.Real.Fsync(fd)
}

func (f *insertFault) Fchown(fd, uid, gid int) error {
	if err := f.fail("fchown", ""); err != nil {
		return err
	}
	return f.Real.Fchown(fd, uid, gid)
}

func (f *insertFault) Renameat(olddirfd int, oldname string, newdirfd int, newname string) error {
	if err := f.fail("renameat", newname); err != nil {
		return err
	}
	return f.Real.Renameat(olddirfd, oldname, newdirfd, newname)
}

// TestInsertFaultRemovesTmp: whichever step after creating the tmp file
// fails, Insert returns the error and leaves neither the tmp file nor a
// chunk file.
func TestInsertFaultRemovesTmp(t *testing.T) {
	for _, op := range []string{"write", "fsync", "fchown", "renameat"} {
		t.Run(op, func(t *testing.T) {
			b, d := testChunk(t, "data "+op)
			f := &insertFault{op: op}
			opts := testOpts(t)
			opts.Syscalls = f
			opts.SyncLevel = tuning.SyncFile
			if op == "fchown" {
				// Owner.Active needs root; without it Insert does
				// not chown and the fault cannot fire.
				if os.Geteuid() != 0 {
					t.Skip("fchown happens only as root")
				}
				opts.Owner = fsys.Owner{UID: 34, GID: 34}
			}
			s := miniStore(t, t.TempDir(), opts, d.Prefix())
			_, _, err := s.Insert(b, d)
			equal(t, "fault fired", int32(1), f.fired.Load())
			if !errors.Is(err, unix.EIO) {
				t.Fatalf("Insert: want EIO, got %v", err)
			}
			tmp, _ := f.tmp.Load().(string)
			if tmp == "" {
				t.Fatal("Insert created no tmp file")
			}
			if !strings.Contains(err.Error(), s.chunks+"/"+prefixName(d.Prefix())+"/") {
				t.Errorf("error %q does not name the file", err)
			}
			for _, name := range []string{tmp, d.String()} {
				if _, err := os.Lstat(filepath.Join(s.chunks, prefixName(d.Prefix()), name)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s after a failed Insert: %v", name, err)
				}
			}
		})
	}
}

// lockProbe checks, at the Fstatat Insert makes under its lock, that the
// prefix dir is flocked shared: an exclusive try-lock from another fd fails
// and a shared one succeeds.
type lockProbe struct {
	fsys.Real
	t       testing.TB
	dirPath string
	checked atomic.Int32
}

func (f *lockProbe) Fstatat(dirfd int, name string, st *unix.Stat_t, flags int) error {
	fd, err := unix.Open(f.dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		f.t.Errorf("LOCK_EX|LOCK_NB while Insert checks the chunk: want EWOULDBLOCK, got %v", err)
	}
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		f.t.Errorf("LOCK_SH|LOCK_NB while Insert checks the chunk: %v", err)
	}
	f.checked.Add(1)
	return f.Real.Fstatat(dirfd, name, st, flags)
}

func TestInsertHoldsSharedPrefixLock(t *testing.T) {
	b, d := testChunk(t, "locked")
	base := t.TempDir()
	f := &lockProbe{t: t, dirPath: filepath.Join(base, ".chunks", prefixName(d.Prefix()))}
	opts := testOpts(t)
	opts.Syscalls = f
	s := miniStore(t, base, opts, d.Prefix())
	for range 2 { // new, then pre-existing
		_, _, err := s.Insert(b, d)
		ok(t, err)
	}
	equal(t, "lock checks", int32(2), f.checked.Load())

	// And it lets go: GC's exclusive lock is free afterwards.
	dir, err := s.OpenPrefix(d.Prefix())
	ok(t, err)
	defer dir.Close()
	fd, err := unix.Open(f.dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	ok(t, err)
	defer unix.Close(fd)
	ok(t, unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB))
}

func TestTouch(t *testing.T) {
	b, d := testChunk(t, "touch me")
	s := miniStore(t, t.TempDir(), testOpts(t), d.Prefix())
	_, _, err := s.Insert(b, d)
	ok(t, err)
	mtime := old.Add(time.Hour)
	setTimes(t, s.ChunkPath(d), old, mtime)
	before := time.Now().Add(-time.Minute)

	ok(t, s.Touch(d))
	st := lstat(t, s.ChunkPath(d))
	if a := ts(st.Atim); a.Before(before) {
		t.Errorf("atime after Touch %v, want about now", a)
	}
	equal(t, "mtime", mtime, ts(st.Mtim).UTC())
}

func TestTouchMissing(t *testing.T) {
	_, d := testChunk(t, "never inserted")
	s := miniStore(t, t.TempDir(), testOpts(t), d.Prefix())
	err := s.Touch(d)
	if err == nil {
		t.Fatal("Touch of a missing chunk succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("Touch of a missing chunk: want fs.ErrNotExist and ENOENT, got %v", err)
	}
	pe, isPE := errors.AsType[*fs.PathError](err)
	if !isPE {
		t.Fatalf("Touch of a missing chunk: want *fs.PathError, got %T", err)
	}
	equal(t, "path", s.ChunkPath(d), pe.Path)
	equal(t, "op", "utimensat", pe.Op)
}

func TestTouchDoesNotFollowSymlinks(t *testing.T) {
	_, d := testChunk(t, "symlinked")
	base := t.TempDir()
	s := miniStore(t, base, testOpts(t), d.Prefix())
	target := filepath.Join(base, "target")
	ok(t, os.WriteFile(target, nil, 0o644))
	setTimes(t, target, old, old)
	ok(t, os.Symlink(target, s.ChunkPath(d)))
	_ = s.Touch(d) // may fail or touch the link itself, never the target
	equal(t, "target atime", old, ts(lstat(t, target).Atim).UTC())
}

func TestTouchBad(t *testing.T) {
	_, d := testChunk(t, "bad copies")
	s := miniStore(t, t.TempDir(), testOpts(t), d.Prefix())
	n, err := s.TouchBad(d)
	ok(t, err)
	equal(t, "touched without bad copies", 0, n)

	for _, n := range []string{".0.bad", ".3.bad", ".9.bad", ".10.bad", ".x.bad"} {
		p := s.ChunkPath(d) + n
		ok(t, os.WriteFile(p, nil, 0o644))
		setTimes(t, p, old, old)
	}
	n, err = s.TouchBad(d)
	ok(t, err)
	equal(t, "touched", 3, n)
	for _, n := range []string{".0.bad", ".3.bad", ".9.bad"} {
		if a := ts(lstat(t, s.ChunkPath(d)+n).Atim); !a.After(old) {
			t.Errorf("%s not touched: atime %v", n, a)
		}
	}
	for _, n := range []string{".10.bad", ".x.bad"} {
		equal(t, n+" atime", old, ts(lstat(t, s.ChunkPath(d)+n).Atim).UTC())
	}
}

func TestTouchFault(t *testing.T) {
	b, d := testChunk(t, "eio")
	f := &utimesFault{failAt: 1, err: unix.EIO}
	opts := testOpts(t)
	opts.Syscalls = f
	s := miniStore(t, t.TempDir(), opts, d.Prefix())
	_, _, err := s.Insert(b, d)
	ok(t, err)
	err = s.Touch(d)
	equal(t, "fault fired", int32(1), f.fired.Load())
	if !errors.Is(err, unix.EIO) || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Touch: want EIO, got %v", err)
	}
	if !strings.Contains(err.Error(), s.ChunkPath(d)) {
		t.Errorf("error %q does not name the chunk", err)
	}
	ok(t, s.Touch(d))
}
