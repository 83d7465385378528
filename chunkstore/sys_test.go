package chunkstore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysCall is one of the RealSyscalls calls that have a stack-buffer fast path.
type sysCall struct {
	op   string
	call func(dirfd int, name string) error
}

func sysCalls() []sysCall {
	var st unix.Stat_t
	times := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	return []sysCall{
		{"openat", func(dirfd int, name string) error {
			fd, err := RealSyscalls{}.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		}},
		{"fstatat", func(dirfd int, name string) error {
			return RealSyscalls{}.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		}},
		{"utimensat", func(dirfd int, name string) error {
			return RealSyscalls{}.UtimesNanoAt(dirfd, name, times, unix.AT_SYMLINK_NOFOLLOW)
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
		ok(t, os.WriteFile(filepath.Join(dir, n), nil, 0o644))
	}
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	ok(t, err)
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
					ok(t, err)
					return
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("want %v, got %v", tt.want, err)
				}
				pe, isPE := errors.AsType[*fs.PathError](err)
				if !isPE {
					t.Fatalf("want *fs.PathError, got %T", err)
				}
				equal(t, "op", c.op, pe.Op)
				equal(t, "path", tt.give, pe.Path)
			})
		}
	}
}

// TestRealSysErrorCopiesName: a name may alias a buffer the caller reuses
// (Syscalls), so the error must hold its own copy.
func TestRealSysErrorCopiesName(t *testing.T) {
	dirfd, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	ok(t, err)
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
			equal(t, c.op+" path", strings.Repeat("m", size), pe.Path)
		}
	}
}

func TestRealSysFstatatMatchesXSys(t *testing.T) {
	dir := t.TempDir()
	ok(t, os.WriteFile(filepath.Join(dir, "f"), []byte("twelve bytes"), 0o640))
	ok(t, os.Symlink("f", filepath.Join(dir, "link")))
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	ok(t, err)
	defer unix.Close(dirfd)
	for _, name := range []string{"f", "link"} {
		for _, flags := range []int{0, unix.AT_SYMLINK_NOFOLLOW} {
			var got, want unix.Stat_t
			ok(t, RealSyscalls{}.Fstatat(dirfd, name, &got, flags))
			ok(t, unix.Fstatat(dirfd, name, &want, flags))
			equal(t, name+" stat", want, got)
		}
	}
}

func TestRealSysUtimesTimes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	ok(t, os.WriteFile(p, nil, 0o644))
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	ok(t, err)
	defer unix.Close(dirfd)

	err = RealSyscalls{}.UtimesNanoAt(dirfd, "f", []unix.Timespec{{Nsec: unix.UTIME_NOW}}, 0)
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("one timespec: want EINVAL, got %v", err)
	}
	setTimes(t, p, old, old)
	ok(t, RealSyscalls{}.UtimesNanoAt(dirfd, "f", nil, 0)) // nil: both to now
	st := lstat(t, p)
	if !ts(st.Atim).After(old) || !ts(st.Mtim).After(old) {
		t.Errorf("nil times: want atime and mtime now, got %v, %v", ts(st.Atim), ts(st.Mtim))
	}
	setTimes(t, p, old, old)
	ok(t, RealSyscalls{}.UtimesNanoAt(dirfd, "f", []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}, 0))
	st = lstat(t, p)
	equal(t, "atime", old, ts(st.Atim).UTC())
	if !ts(st.Mtim).After(old) {
		t.Errorf("mtime not moved: %v", ts(st.Mtim))
	}
}

// TestToucher touches several chunks with one Toucher, whose name buffer
// is reused from touch to touch.
func TestToucher(t *testing.T) {
	s := miniStore(t, t.TempDir(), testOpts(t))
	tc := s.NewToucher()
	for _, data := range []string{"toucher 1", "toucher 2", "toucher 3"} {
		b, d := testChunk(t, data)
		ok(t, os.MkdirAll(filepath.Join(s.chunks, prefixName(d.Prefix())), 0o750))
		_, _, err := s.Insert(b, d)
		ok(t, err)
		setTimes(t, s.ChunkPath(d), old, old)
		ok(t, os.WriteFile(s.ChunkPath(d)+".4.bad", nil, 0o644))
		setTimes(t, s.ChunkPath(d)+".4.bad", old, old)

		_, missing := testChunk(t, data+" never inserted")
		ok(t, os.MkdirAll(filepath.Join(s.chunks, prefixName(missing.Prefix())), 0o750))
		errMissing := tc.Touch(missing)
		ok(t, tc.Touch(d))
		n, err := tc.TouchBad(d)
		ok(t, err)
		equal(t, "bad copies touched", 1, n)

		for _, p := range []string{s.ChunkPath(d), s.ChunkPath(d) + ".4.bad"} {
			st := lstat(t, p)
			if !ts(st.Atim).After(old) {
				t.Errorf("%s not touched", p)
			}
			equal(t, p+" mtime", old, ts(st.Mtim).UTC())
		}
		// The error of the earlier touch still names its own chunk,
		// although the buffer has held other names since.
		pe, isPE := errors.AsType[*fs.PathError](errMissing)
		if !isPE || !errors.Is(errMissing, fs.ErrNotExist) {
			t.Fatalf("touch of a missing chunk: want *fs.PathError matching fs.ErrNotExist, got %v", errMissing)
		}
		equal(t, "path", s.ChunkPath(missing), pe.Path)
	}
}

// TestToucherFault: the Toucher goes through the seam.
func TestToucherFault(t *testing.T) {
	b, d := testChunk(t, "toucher eio")
	f := &utimesFault{failAt: 2, err: unix.EIO}
	opts := testOpts(t)
	opts.Syscalls = f
	s := miniStore(t, t.TempDir(), opts, d.Prefix())
	_, _, err := s.Insert(b, d)
	ok(t, err)
	tc := s.NewToucher()
	ok(t, tc.Touch(d))
	err = tc.Touch(d)
	equal(t, "fault fired", int32(1), f.fired.Load())
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("Touch: want EIO, got %v", err)
	}
	if pe, isPE := errors.AsType[*fs.PathError](err); !isPE || pe.Path != s.ChunkPath(d) {
		t.Errorf("Touch: want *fs.PathError naming %s, got %v", s.ChunkPath(d), err)
	}
	ok(t, tc.Touch(d))
}

// fstatatFault fails the failAt-th Fstatat call with err.
type fstatatFault struct {
	RealSyscalls
	failAt       int32
	err          unix.Errno
	calls, fired atomic.Int32
}

func (f *fstatatFault) Fstatat(dirfd int, name string, st *unix.Stat_t, flags int) error {
	if f.calls.Add(1) == f.failAt {
		f.fired.Add(1)
		return &fs.PathError{Op: "fstatat", Path: name, Err: f.err}
	}
	return f.RealSyscalls.Fstatat(dirfd, name, st, flags)
}

func TestStatBytes(t *testing.T) {
	b, d := testChunk(t, "stat bytes")
	f := &fstatatFault{err: unix.EIO}
	opts := testOpts(t)
	opts.Syscalls = f
	s := miniStore(t, t.TempDir(), opts, d.Prefix())
	_, _, err := s.Insert(b, d)
	ok(t, err)
	dir, err := s.OpenPrefix(d.Prefix())
	ok(t, err)
	defer dir.Close()

	name := d.AppendHex(nil)
	var got, want unix.Stat_t
	ok(t, dir.StatBytes(name, &got))
	ok(t, dir.Stat(d.String(), &want))
	equal(t, "stat", want, got)

	missing := []byte(strings.Repeat("0", len(name)))
	err = dir.StatBytes(missing, &got)
	copy(missing, "ffff") // the caller may reuse its buffer at once
	pe, isPE := errors.AsType[*fs.PathError](err)
	if !isPE || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("StatBytes of a missing entry: want *fs.PathError matching fs.ErrNotExist, got %v", err)
	}
	equal(t, "path", filepath.Join(s.chunks, prefixName(d.Prefix()), strings.Repeat("0", len(name))), pe.Path)
	equal(t, "op", "fstatat", pe.Op)

	f.failAt = f.calls.Load() + 1
	err = dir.StatBytes(name, &got)
	equal(t, "fault fired", int32(1), f.fired.Load())
	if !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), s.ChunkPath(d)) {
		t.Fatalf("StatBytes: want EIO naming %s, got %v", s.ChunkPath(d), err)
	}
}

// TestHotPathsDoNotAllocate: what GC's mark and sweep call per chunk makes no
// heap allocation; opening a prefix dir makes one (the PrefixDir).
func TestHotPathsDoNotAllocate(t *testing.T) {
	b, d := testChunk(t, "no allocs")
	s := miniStore(t, t.TempDir(), testOpts(t), d.Prefix())
	_, _, err := s.Insert(b, d)
	ok(t, err)
	dir, err := s.OpenPrefix(d.Prefix())
	ok(t, err)
	defer dir.Close()
	tc := s.NewToucher()
	name := d.AppendHex(nil)
	var st unix.Stat_t
	tests := []struct {
		name string
		give func()
		want float64
	}{
		{"Toucher.Touch", func() { ok(t, tc.Touch(d)) }, 0},
		// No bad copies: ten ENOENT errors, each a PathError and its name.
		{"Toucher.TouchBad", func() { _, err := tc.TouchBad(d); ok(t, err) }, 2 * maxBad},
		{"PrefixDir.StatBytes", func() { ok(t, dir.StatBytes(name, &st)) }, 0},
		{"OpenPrefix", func() { dir, err := s.OpenPrefix(d.Prefix()); ok(t, err); ok(t, dir.Close()) }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, tt.give); got > tt.want {
				t.Errorf("%v allocs per call, want at most %v", got, tt.want)
			}
		})
	}
}
