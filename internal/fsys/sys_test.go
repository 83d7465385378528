package fsys

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/rtest"
)

// old is a time long before any test runs.
var old = time.Date(2000, 1, 2, 3, 4, 5, 6000, time.UTC)

func ts(t unix.Timespec) time.Time { return time.Unix(t.Unix()) }

func lstat(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	rtest.OK(t, unix.Lstat(p, &st))
	return &st
}

func setTimes(t *testing.T, p string, atime, mtime time.Time) {
	t.Helper()
	rtest.OK(t, os.Chtimes(p, atime, mtime))
}

// sysCall is one of the Real calls that have a stack-buffer fast path.
type sysCall struct {
	op   string
	call func(dirfd int, name string) error
}

func sysCalls() []sysCall {
	var st unix.Stat_t
	times := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	return []sysCall{
		{"openat", func(dirfd int, name string) error {
			fd, err := Real{}.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"fstatat", func(dirfd int, name string) error {
			return Real{}.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		}},
		{"utimensat", func(dirfd int, name string) error {
			return Real{}.UtimesNanoAt(dirfd, name, times, unix.AT_SYMLINK_NOFOLLOW)
		}},
	}
}

// TestRealSysNames runs the calls with names below and above nameBufSize
// (stack buffer and x/sys fallback): both must behave alike.
func TestRealSysNames(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("l", 200)
	edge := strings.Repeat("e", nameBufSize-1) // the longest name the stack buffer takes
	for _, n := range []string{"f", long, edge, strings.Repeat("e", nameBufSize)} {
		rtest.OK(t, os.WriteFile(filepath.Join(dir, n), nil, 0o644))
	}
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(dirfd)

	tests := []struct {
		name string
		give string
		want error // nil, or the errno
	}{
		{name: "short", give: "f"},
		{name: "edge", give: edge},
		{name: "edge+1", give: edge + "e"},
		{name: "long", give: long},
		{name: "short missing", give: "missing", want: unix.ENOENT},
		{name: "long missing", give: long + "x", want: unix.ENOENT},
		{name: "short with NUL", give: "f\x00", want: unix.EINVAL},
		{name: "long with NUL", give: long + "\x00", want: unix.EINVAL},
		{name: "empty", give: "", want: unix.ENOENT},
	}
	for _, tt := range tests {
		for _, c := range sysCalls() {
			t.Run(tt.name+"/"+c.op, func(t *testing.T) {
				err := c.call(dirfd, tt.give)
				if tt.want == nil {
					rtest.OK(t, err)
					return
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("want %v, got %v", tt.want, err)
				}
				pe, isPE := errors.AsType[*fs.PathError](err)
				if !isPE {
					t.Fatalf("want *fs.PathError, got %T", err)
				}
				rtest.Equal(t, "op", c.op, pe.Op)
				rtest.Equal(t, "path", tt.give, pe.Path)
			})
		}
	}
}

// TestRealSysErrorCopiesName: a name may alias a buffer the caller reuses
// (Syscalls), so the error must hold its own copy.
func TestRealSysErrorCopiesName(t *testing.T) {
	dirfd, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(dirfd)
	for _, size := range []int{8, 200} { // stack buffer and x/sys
		for _, c := range sysCalls() {
			buf := []byte(strings.Repeat("m", size))
			err := c.call(dirfd, unsafe.String(&buf[0], len(buf)))
			copy(buf, "XXXX")
			pe, isPE := errors.AsType[*fs.PathError](err)
			if !isPE || !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("%s: want *fs.PathError matching fs.ErrNotExist, got %v", c.op, err)
			}
			rtest.Equal(t, c.op+" path", strings.Repeat("m", size), pe.Path)
		}
	}
}

func TestRealSysFstatatMatchesXSys(t *testing.T) {
	dir := t.TempDir()
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "f"), []byte("twelve bytes"), 0o640))
	rtest.OK(t, os.Symlink("f", filepath.Join(dir, "link")))
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(dirfd)
	for _, name := range []string{"f", "link"} {
		for _, flags := range []int{0, unix.AT_SYMLINK_NOFOLLOW} {
			var got, want unix.Stat_t
			rtest.OK(t, Real{}.Fstatat(dirfd, name, &got, flags))
			rtest.OK(t, unix.Fstatat(dirfd, name, &want, flags))
			rtest.Equal(t, name+" stat", want, got)
		}
	}
}

func TestRealSysUtimesTimes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	rtest.OK(t, os.WriteFile(p, nil, 0o644))
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(dirfd)

	err = Real{}.UtimesNanoAt(dirfd, "f", []unix.Timespec{{Nsec: unix.UTIME_NOW}}, 0)
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("one timespec: want EINVAL, got %v", err)
	}
	setTimes(t, p, old, old)
	rtest.OK(t, Real{}.UtimesNanoAt(dirfd, "f", nil, 0)) // nil: both to now
	st := lstat(t, p)
	if !ts(st.Atim).After(old) || !ts(st.Mtim).After(old) {
		t.Errorf("nil times: want atime and mtime now, got %v, %v", ts(st.Atim), ts(st.Mtim))
	}
	setTimes(t, p, old, old)
	rtest.OK(t, Real{}.UtimesNanoAt(dirfd, "f", []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}, 0))
	st = lstat(t, p)
	rtest.Equal(t, "atime", old, ts(st.Atim).UTC())
	if !ts(st.Mtim).After(old) {
		t.Errorf("mtime not moved: %v", ts(st.Mtim))
	}
}

// TestRealFdCalls: Fstat, Fchmod, Pread and FcntlFlock (the fd calls
// package locking makes) work, and fail with an *fs.PathError naming no
// path that matches the errno.
func TestRealFdCalls(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	rtest.OK(t, os.WriteFile(p, []byte("12345"), 0o600))
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(fd)
	var sys Syscalls = Real{}

	rtest.OK(t, sys.Fchmod(fd, 0o644))
	var st unix.Stat_t
	rtest.OK(t, sys.Fstat(fd, &st))
	rtest.Equal(t, "mode", uint32(unix.S_IFREG|0o644), st.Mode)
	buf := make([]byte, 3)
	n, err := sys.Pread(fd, buf, 2)
	rtest.OK(t, err)
	rtest.Equal(t, "pread", "345", string(buf[:n]))
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	rtest.OK(t, sys.FcntlFlock(fd, unix.F_OFD_SETLK, &lk))
	lk = unix.Flock_t{Type: unix.F_UNLCK}
	rtest.OK(t, sys.FcntlFlock(fd, unix.F_OFD_SETLK, &lk))

	for op, err := range map[string]error{
		"fstat":  sys.Fstat(-1, &st),
		"fchmod": sys.Fchmod(-1, 0o644),
		"pread":  func() error { _, err := sys.Pread(-1, buf, 0); return err }(),
		"fcntl":  sys.FcntlFlock(-1, unix.F_OFD_SETLK, &lk),
	} {
		pe, isPE := errors.AsType[*fs.PathError](err)
		if !isPE || pe.Op != op || pe.Path != "" || !errors.Is(err, unix.EBADF) {
			t.Errorf("%s on fd -1: %#v, want *fs.PathError{Op: %q} matching EBADF", op, err, op)
		}
	}
}
