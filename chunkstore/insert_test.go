package chunkstore

import (
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
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/tuning"
)

func TestChunkPath(t *testing.T) {
	s := miniStore(t, t.TempDir(), testOpts(t))
	_, d := zeroChunk(t)
	want := s.Base() + "/.chunks/bb9f/bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"
	rtest.Equal(t, "ChunkPath", want, s.ChunkPath(d))
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
			rtest.OK(t, err)
			rtest.Equal(t, "pre-existing", false, pre)
			rtest.Equal(t, "size", int64(len(b)), size)
			got, err := os.ReadFile(s.ChunkPath(d))
			rtest.OK(t, err)
			if !bytes.Equal(b, got) {
				t.Fatal("chunk file does not hold the blob")
			}
			st := lstat(t, s.ChunkPath(d))
			if want := unix.S_IFREG | 0o644&^uint32(umask(t)); st.Mode != want {
				t.Errorf("chunk mode %o, want %o (0644 minus the umask)", st.Mode, want)
			}

			setTimes(t, s.ChunkPath(d), old, old)
			pre, size, err = s.Insert(b, d)
			rtest.OK(t, err)
			rtest.Equal(t, "pre-existing", true, pre)
			rtest.Equal(t, "size", int64(len(b)), size)
			st = lstat(t, s.ChunkPath(d))
			if !ts(st.Atim).After(old) {
				t.Errorf("Insert of a pre-existing chunk did not touch it: atime %v", ts(st.Atim))
			}
			rtest.Equal(t, "mtime", old, ts(st.Mtim).UTC())
			rtest.OK(t, s.SyncFS())
		})
	}
}

func umask(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	rtest.OK(t, err)
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
	rtest.OK(t, os.WriteFile(s.ChunkPath(d), nil, 0o644))
	pre, _, err := s.Insert(b, d)
	rtest.OK(t, err)
	rtest.Equal(t, "pre-existing", false, pre)
	got, err := os.ReadFile(s.ChunkPath(d))
	rtest.OK(t, err)
	rtest.Equal(t, "chunk size", len(b), len(got))
}

func TestInsertMissingPrefixDir(t *testing.T) {
	b, d := testChunk(t, "data")
	s := miniStore(t, t.TempDir(), testOpts(t))
	_, _, err := s.Insert(b, d)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Insert without a prefix dir: want fs.ErrNotExist, got %v", err)
	}
}

// TestInsertFaultRemovesTmp: whichever step after creating the tmp file
// fails, Insert returns the error and leaves neither the tmp file nor a
// chunk file.
func TestInsertFaultRemovesTmp(t *testing.T) {
	for _, op := range []faultfs.Op{faultfs.Write, faultfs.Fsync, faultfs.Fchown, faultfs.Renameat} {
		t.Run(op.String(), func(t *testing.T) {
			b, d := testChunk(t, "data "+op.String())
			opts := testOpts(t)
			opts.SyncLevel = tuning.SyncFile
			if op == faultfs.Fchown {
				// Owner.Active needs root; without it Insert does
				// not chown and the fault cannot fire.
				if os.Geteuid() != 0 {
					t.Skip("fchown happens only as root")
				}
				opts.Owner = fsys.Owner{UID: 34, GID: 34}
			}
			set := faultfs.New(t, nil)
			var tmp atomic.Value // string: the tmp name openat created
			set.Add(faultfs.Fault{Op: faultfs.Openat, Name: "*.tmp_*", Before: func(name string) { tmp.Store(strings.Clone(name)) }})
			f := set.Add(faultfs.Fault{Op: op, Nth: 1, Err: unix.EIO})
			opts.Syscalls = set
			s := miniStore(t, t.TempDir(), opts, d.Prefix())
			_, _, err := s.Insert(b, d)
			rtest.Equal(t, "fault fired", 1, f.Fired())
			if !errors.Is(err, unix.EIO) {
				t.Fatalf("Insert: want EIO, got %v", err)
			}
			tmpName, _ := tmp.Load().(string)
			if tmpName == "" {
				t.Fatal("Insert created no tmp file")
			}
			if !strings.Contains(err.Error(), s.chunks+"/"+prefixName(d.Prefix())+"/") {
				t.Errorf("error %q does not name the file", err)
			}
			for _, name := range []string{tmpName, d.String()} {
				if _, err := os.Lstat(filepath.Join(s.chunks, prefixName(d.Prefix()), name)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s after a failed Insert: %v", name, err)
				}
			}
		})
	}
}

// TestInsertHoldsSharedPrefixLock: at the fstatat Insert makes under its
// lock, the prefix dir is flocked shared: an exclusive try-lock from another
// fd fails and a shared one succeeds.
func TestInsertHoldsSharedPrefixLock(t *testing.T) {
	b, d := testChunk(t, "locked")
	base := t.TempDir()
	dirPath := filepath.Join(base, ".chunks", prefixName(d.Prefix()))
	set := faultfs.New(t, nil)
	f := set.Add(faultfs.Fault{Op: faultfs.Fstatat, Before: func(string) {
		fd, err := unix.Open(dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
			t.Errorf("LOCK_EX|LOCK_NB while Insert checks the chunk: want EWOULDBLOCK, got %v", err)
		}
		if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
			t.Errorf("LOCK_SH|LOCK_NB while Insert checks the chunk: %v", err)
		}
	}})
	opts := testOpts(t)
	opts.Syscalls = set
	s := miniStore(t, base, opts, d.Prefix())
	for range 2 { // new, then pre-existing
		_, _, err := s.Insert(b, d)
		rtest.OK(t, err)
	}
	rtest.Equal(t, "lock checks", 2, f.Fired())

	// And it lets go: GC's exclusive lock is free afterwards.
	dir, err := s.OpenPrefix(d.Prefix())
	rtest.OK(t, err)
	defer dir.Close()
	fd, err := unix.Open(dirPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(fd)
	rtest.OK(t, unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB))
}

func TestTouch(t *testing.T) {
	s, d := oneChunk(t, "touch me", testOpts(t))
	mtime := old.Add(time.Hour)
	setTimes(t, s.ChunkPath(d), old, mtime)
	before := time.Now().Add(-time.Minute)

	rtest.OK(t, s.Touch(d))
	st := lstat(t, s.ChunkPath(d))
	if a := ts(st.Atim); a.Before(before) {
		t.Errorf("atime after Touch %v, want about now", a)
	}
	rtest.Equal(t, "mtime", mtime, ts(st.Mtim).UTC())
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
	rtest.Equal(t, "path", s.ChunkPath(d), pe.Path)
	rtest.Equal(t, "op", "utimensat", pe.Op)
}

func TestTouchDoesNotFollowSymlinks(t *testing.T) {
	_, d := testChunk(t, "symlinked")
	base := t.TempDir()
	s := miniStore(t, base, testOpts(t), d.Prefix())
	target := filepath.Join(base, "target")
	rtest.OK(t, os.WriteFile(target, nil, 0o644))
	setTimes(t, target, old, old)
	rtest.OK(t, os.Symlink(target, s.ChunkPath(d)))
	_ = s.Touch(d) // may fail or touch the link itself, never the target
	rtest.Equal(t, "target atime", old, ts(lstat(t, target).Atim).UTC())
}

func TestTouchBad(t *testing.T) {
	_, d := testChunk(t, "bad copies")
	s := miniStore(t, t.TempDir(), testOpts(t), d.Prefix())
	n, err := s.TouchBad(d)
	rtest.OK(t, err)
	rtest.Equal(t, "touched without bad copies", 0, n)

	for _, n := range []string{".0.bad", ".3.bad", ".9.bad", ".10.bad", ".x.bad"} {
		p := s.ChunkPath(d) + n
		rtest.OK(t, os.WriteFile(p, nil, 0o644))
		setTimes(t, p, old, old)
	}
	n, err = s.TouchBad(d)
	rtest.OK(t, err)
	rtest.Equal(t, "touched", 3, n)
	for _, n := range []string{".0.bad", ".3.bad", ".9.bad"} {
		if a := ts(lstat(t, s.ChunkPath(d)+n).Atim); !a.After(old) {
			t.Errorf("%s not touched: atime %v", n, a)
		}
	}
	for _, n := range []string{".10.bad", ".x.bad"} {
		rtest.Equal(t, n+" atime", old, ts(lstat(t, s.ChunkPath(d)+n).Atim).UTC())
	}
}

func TestTouchFault(t *testing.T) {
	s, set, d := faultChunk(t, "eio")
	f := set.Add(faultfs.Fault{Op: faultfs.UtimesNanoAt, Nth: 1, Err: unix.EIO})
	err := s.Touch(d)
	rtest.Equal(t, "fault fired", 1, f.Fired())
	if !errors.Is(err, unix.EIO) || errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Touch: want EIO, got %v", err)
	}
	if !strings.Contains(err.Error(), s.ChunkPath(d)) {
		t.Errorf("error %q does not name the chunk", err)
	}
	rtest.OK(t, s.Touch(d))
}
