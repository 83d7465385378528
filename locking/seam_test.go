package locking

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
)

// countingSys is an fsys.Syscalls that counts the calls of each op and
// fails every call of op fail with EIO.
type countingSys struct {
	fsys.Real
	fail string

	mu    sync.Mutex
	calls map[string]int
}

func (s *countingSys) call(op string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[op]++
	if op == s.fail {
		return &fs.PathError{Op: op, Err: unix.EIO}
	}
	return nil
}

func (s *countingSys) count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

func (s *countingSys) Openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	if err := s.call("openat"); err != nil {
		return -1, err
	}
	return s.Real.Openat(dirfd, name, flags, mode)
}

func (s *countingSys) Mkdirat(dirfd int, name string, mode uint32) error {
	if err := s.call("mkdirat"); err != nil {
		return err
	}
	return s.Real.Mkdirat(dirfd, name, mode)
}

func (s *countingSys) Fstat(fd int, st *unix.Stat_t) error {
	if err := s.call("fstat"); err != nil {
		return err
	}
	return s.Real.Fstat(fd, st)
}

func (s *countingSys) Fstatat(dirfd int, name string, st *unix.Stat_t, flags int) error {
	if err := s.call("fstatat"); err != nil {
		return err
	}
	return s.Real.Fstatat(dirfd, name, st, flags)
}

func (s *countingSys) Flock(fd, how int) error {
	if err := s.call("flock"); err != nil {
		return err
	}
	return s.Real.Flock(fd, how)
}

func (s *countingSys) FcntlFlock(fd, cmd int, lk *unix.Flock_t) error {
	if err := s.call("fcntl"); err != nil {
		return err
	}
	return s.Real.FcntlFlock(fd, cmd, lk)
}

func (s *countingSys) Getdents(fd int, buf []byte) (int, error) {
	if err := s.call("getdents64"); err != nil {
		return 0, err
	}
	return s.Real.Getdents(fd, buf)
}

func (s *countingSys) Renameat(olddirfd int, oldname string, newdirfd int, newname string, flags uint) error {
	if err := s.call("renameat"); err != nil {
		return err
	}
	return s.Real.Renameat(olddirfd, oldname, newdirfd, newname, flags)
}

func (s *countingSys) Write(fd int, p []byte) (int, error) {
	if err := s.call("write"); err != nil {
		return 0, err
	}
	return s.Real.Write(fd, p)
}

func (s *countingSys) Unlinkat(dirfd int, name string, flags int) error {
	if err := s.call("unlinkat"); err != nil {
		return err
	}
	return s.Real.Unlinkat(dirfd, name, flags)
}

func (s *countingSys) Pread(fd int, p []byte, offset int64) (int, error) {
	if err := s.call("pread"); err != nil {
		return 0, err
	}
	return s.Real.Pread(fd, p, offset)
}

// TestSeamCarriesEveryCall: a Dir opened with RootOptions.Syscalls makes
// its calls through that seam, for the lock tree and the store lock alike,
// and so do the Locks and Writers it hands out.
func TestSeamCarriesEveryCall(t *testing.T) {
	sys := &countingSys{}
	d, err := OpenDirWith(filepath.Join(t.TempDir(), "locks", "store"), fsys.Keep, RootOptions{Syscalls: sys})
	rtest.OK(t, err)
	defer d.Close()
	gc, err := d.GCLock()
	rtest.OK(t, err)
	g, err := d.LockGroup(context.Background(), []string{"ns"}, "vm", "100", Exclusive, time.Second)
	rtest.OK(t, err)
	w, err := d.RegisterWriter(time.Unix(0, 42))
	rtest.OK(t, err)
	oldest, live, found, err := d.OldestWriter(nil)
	rtest.OK(t, err)
	rtest.Equal(t, "oldest writer", time.Unix(0, 42), oldest)
	rtest.Equal(t, "live writers", 1, live)
	rtest.Equal(t, "found", true, found)
	base := t.TempDir()
	sl, err := d.LockStore(rtest.DirFD(t, base), base)
	rtest.OK(t, err)
	rtest.OK(t, w.Close())
	rtest.OK(t, g.RemoveAndUnlock())
	rtest.OK(t, sl.Unlock())
	rtest.OK(t, gc.Unlock())
	for _, op := range []string{"openat", "mkdirat", "fstat", "fstatat", "flock", "fcntl", "getdents64", "renameat", "write", "unlinkat", "pread"} {
		if sys.count(op) == 0 {
			t.Errorf("no %s call went through the seam", op)
		}
	}
}

// TestSeamFaults: an errno the seam returns comes back from the lock
// operation, matching the errno and naming the full path.
func TestSeamFaults(t *testing.T) {
	for _, c := range []struct {
		fail, name string
		op         func(d *Dir, base string, baseFD int) error
	}{
		{"fcntl", ".lock", func(d *Dir, base string, baseFD int) error {
			_, err := d.LockStore(baseFD, base)
			return err
		}},
		{"flock", "gc", func(d *Dir, _ string, _ int) error {
			_, err := d.GCLock()
			return err
		}},
		{"renameat", "writers/.tmp-", func(d *Dir, _ string, _ int) error {
			_, err := d.RegisterWriter(time.Now())
			return err
		}},
	} {
		t.Run(c.fail, func(t *testing.T) {
			sys := &countingSys{}
			d, err := OpenDirWith(filepath.Join(t.TempDir(), "store"), fsys.Keep, RootOptions{Syscalls: sys})
			rtest.OK(t, err)
			defer d.Close()
			base := t.TempDir()
			sys.fail = c.fail
			err = c.op(d, base, rtest.DirFD(t, base))
			rtest.ErrorIs(t, err, unix.EIO)
			pe, isPE := errors.AsType[*fs.PathError](err)
			if !isPE || !strings.HasPrefix(pe.Path, "/") || !strings.Contains(pe.Path, c.name) {
				t.Fatalf("error %v does not name the full path of %s", err, c.name)
			}
		})
	}
}

// TestCreateStoreLock: a missing .lock is made empty 0644; an existing
// regular file is accepted; a symlink, a directory or a hard-linked file is
// refused, naming the path.
func TestCreateStoreLock(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, StoreLockName)
	rtest.OK(t, CreateStoreLock(nil, rtest.DirFD(t, base), base, fsys.Keep))
	var st unix.Stat_t
	rtest.OK(t, unix.Lstat(path, &st))
	rtest.Equal(t, ".lock mode", uint32(unix.S_IFREG|0o644), st.Mode)
	rtest.Equal(t, ".lock size", int64(0), st.Size)
	rtest.OK(t, CreateStoreLock(nil, rtest.DirFD(t, base), base, fsys.Keep)) // again: accepted

	for name, plant := range map[string]func(path string) error{
		"symlink":   func(p string) error { return unix.Symlink("/etc/passwd", p) },
		"directory": func(p string) error { return unix.Mkdir(p, 0o755) },
		"hard link": func(p string) error {
			other := filepath.Join(filepath.Dir(filepath.Dir(p)), "other")
			if err := unix.Mknod(other, unix.S_IFREG|0o644, 0); err != nil {
				return err
			}
			return unix.Link(other, p)
		},
	} {
		t.Run(name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "base")
			rtest.OK(t, unix.Mkdir(base, 0o755))
			path := filepath.Join(base, StoreLockName)
			rtest.OK(t, plant(path))
			err := CreateStoreLock(fsys.Real{}, rtest.DirFD(t, base), base, fsys.Keep)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("CreateStoreLock over a %s: %v, want an error naming %s", name, err, path)
			}
			if name == "hard link" {
				rtest.ErrorIs(t, err, ErrLinked)
			}
		})
	}
}

// TestCreateStoreLockChownsNoSwappedFile: as root, an existing .lock is
// chowned to the owner through an fd that was checked, not by name. The
// backup user owns the base, so between CreateStoreLock's stat and the
// chown it can swap .lock for a hard link to a file outside the store; that
// file must be refused and keep its owner. The swap is staged at the open
// with a faultfs hook (the race cannot be won on demand otherwise).
func TestCreateStoreLockChownsNoSwappedFile(t *testing.T) {
	rtest.RequireRoot(t)
	dir := t.TempDir()
	base := filepath.Join(dir, "base")
	rtest.OK(t, unix.Mkdir(base, 0o755))
	outside := filepath.Join(dir, "outside")
	rtest.OK(t, unix.Mknod(outside, unix.S_IFREG|0o600, 0))
	path := filepath.Join(base, StoreLockName)
	rtest.OK(t, unix.Mknod(path, unix.S_IFREG|0o644, 0))

	set := faultfs.New(t, nil)
	set.Add(faultfs.Fault{Op: faultfs.Openat, Name: StoreLockName, Nth: 1, Before: func(string) {
		rtest.OK(t, unix.Unlink(path))
		rtest.OK(t, unix.Link(outside, path))
	}})
	err := CreateStoreLock(set, rtest.DirFD(t, base), base, fsys.Owner{UID: 34, GID: 34})
	rtest.ErrorIs(t, err, ErrLinked)
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
	var st unix.Stat_t
	rtest.OK(t, unix.Stat(outside, &st))
	rtest.Equal(t, "owner of the file outside the store", "0:0", fsys.OwnerOf(&st).String())
}
