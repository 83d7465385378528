package faultfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

// fakeTB records what the Set's cleanup check reports.
type fakeTB struct {
	testing.TB
	cleanups []func()
	errors   []string
	fatals   []string
	skipped  bool
}

func (f *fakeTB) Helper()                   {}
func (f *fakeTB) Cleanup(fn func())         { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Skipped() bool             { return f.skipped }
func (f *fakeTB) Errorf(s string, a ...any) { f.errors = append(f.errors, fmt.Sprintf(s, a...)) }
func (f *fakeTB) Fatalf(s string, a ...any) { f.fatals = append(f.fatals, fmt.Sprintf(s, a...)) }

func (f *fakeTB) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func touch(s fsys.Syscalls, fd int, name string) error {
	return s.UtimesNanoAt(fd, name, nil, unix.AT_SYMLINK_NOFOLLOW)
}

// TestNth: a fault fires on the Nth selected call only, and its error is
// the *fs.PathError fsys.Real would return.
func TestNth(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a", "b.bad", "c.bad", "d.bad"} {
		rtest.OK(t, os.WriteFile(filepath.Join(dir, n), nil, 0o644))
	}
	fd := rtest.DirFD(t, dir)
	s := New(t, nil)
	f := s.Add(Fault{Op: UtimesNanoAt, Nth: 2, Name: "*.bad", Err: unix.EIO})

	rtest.OK(t, touch(s, fd, "a"))     // not selected
	rtest.OK(t, touch(s, fd, "b.bad")) // selected #1
	buf := []byte("c.bad")
	err := touch(s, fd, string(buf)) // selected #2: fires
	copy(buf, "xxxxx")               // the caller reuses its buffer
	rtest.ErrorIs(t, err, unix.EIO)
	pe, isPE := errors.AsType[*fs.PathError](err)
	if !isPE {
		t.Fatalf("want *fs.PathError, got %T", err)
	}
	rtest.Equal(t, "Op", "utimensat", pe.Op)
	rtest.Equal(t, "Path", "c.bad", pe.Path)
	rtest.OK(t, touch(s, fd, "d.bad")) // selected #3: once only
	rtest.Equal(t, "fired", 1, f.Fired())
	rtest.Equal(t, "calls", int64(4), s.Calls(UtimesNanoAt))
	rtest.Equal(t, "other op calls", int64(0), s.Calls(Unlinkat))
}

// TestRealShape: the injected error and fsys.Real's for the same errno are
// indistinguishable.
func TestRealShape(t *testing.T) {
	dir := t.TempDir()
	fd := rtest.DirFD(t, dir)
	realErr := touch(fsys.Real{}, fd, "missing")
	s := New(t, nil)
	s.Add(Fault{Op: UtimesNanoAt, Err: unix.ENOENT})
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "exists"), nil, 0o644))
	fakeErr := touch(s, fd, "missing")
	rtest.Equal(t, "error", fmt.Sprintf("%#v", realErr.(*fs.PathError).Err), fmt.Sprintf("%#v", fakeErr.(*fs.PathError).Err))
	rtest.Equal(t, "op", realErr.(*fs.PathError).Op, fakeErr.(*fs.PathError).Op)
	for _, target := range []error{fs.ErrNotExist, unix.ENOENT} {
		if !errors.Is(fakeErr, target) {
			t.Errorf("injected ENOENT does not match %v", target)
		}
	}
	// A file that exists "is missing" too: every call, as Nth 0 says.
	rtest.ErrorIs(t, touch(s, fd, "exists"), unix.ENOENT)
}

// TestTimes: Nth 0 fires on every selected call, Times bounds it.
func TestTimes(t *testing.T) {
	dir := t.TempDir()
	fd := rtest.DirFD(t, dir)
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o644))
	tests := []struct {
		name      string
		nth, time int
		want      string // per call: x fails, . succeeds
	}{
		{"every", 0, 0, "xxxxx"},
		{"first two", 0, 2, "xx..."},
		{"second once", 2, 0, ".x..."},
		{"from the second, three", 2, 3, ".xxx."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(t, nil)
			s.Add(Fault{Op: Fstatat, Nth: tt.nth, Times: tt.time, Err: unix.ESTALE})
			var got strings.Builder
			for range 5 {
				var st unix.Stat_t
				if err := s.Fstatat(fd, "f", &st, 0); err != nil {
					rtest.ErrorIs(t, err, unix.ESTALE)
					got.WriteByte('x')
				} else {
					got.WriteByte('.')
				}
			}
			rtest.Equal(t, "calls", tt.want, got.String())
		})
	}
}

// TestUnfiredFaultFailsTest: the cleanup check names a fault that never
// fired, and stays quiet for one that did and for a skipped test.
func TestUnfiredFaultFailsTest(t *testing.T) {
	tb := &fakeTB{TB: t}
	s := New(tb, nil)
	s.Add(Fault{Op: Unlinkat, Nth: 3, Name: "*.bad", Err: unix.EIO})
	fired := s.Add(Fault{Op: Fsync, Err: unix.EIO})
	rtest.ErrorIs(t, s.Fsync(-1), unix.EIO)
	rtest.Equal(t, "fired", 1, fired.Fired())
	tb.cleanup()
	rtest.Equal(t, "reports", 1, len(tb.errors))
	rtest.Contains(t, "report", tb.errors[0], "never fired", `unlinkat call #3 on name "*.bad" fails with EIO`)

	skipped := &fakeTB{TB: t, skipped: true}
	New(skipped, nil).Add(Fault{Op: Unlinkat, Err: unix.EIO})
	skipped.cleanup()
	rtest.Equal(t, "reports of a skipped test", 0, len(skipped.errors))
}

// TestEither: of two faults planned with AddEither, one firing meets the
// cleanup check; neither firing fails it, naming both.
func TestEither(t *testing.T) {
	tb := &fakeTB{TB: t}
	s := New(tb, nil)
	a, b := s.AddEither(Fault{Op: Openat, Name: "0a0b", Err: unix.EIO}, Fault{Op: Statx, Name: "0a0b", Err: unix.EIO})
	var stx unix.Statx_t
	rtest.ErrorIs(t, s.Statx(unix.AT_FDCWD, "0a0b", 0, unix.STATX_TYPE, &stx), unix.EIO)
	rtest.Equal(t, "openat fired", 0, a.Fired())
	rtest.Equal(t, "statx fired", 1, b.Fired())
	tb.cleanup()
	rtest.Equal(t, "reports when one fired", 0, len(tb.errors))

	tb = &fakeTB{TB: t}
	s = New(tb, nil)
	s.AddEither(Fault{Op: Openat, Name: "0a0b", Err: unix.EIO}, Fault{Op: Statx, Name: "0a0b", Err: unix.EIO})
	tb.cleanup()
	rtest.Equal(t, "reports when neither fired", 2, len(tb.errors))
}

// TestAddRefuses: a fault that cannot fire or does nothing fails at once.
func TestAddRefuses(t *testing.T) {
	for _, f := range []Fault{
		{Op: 0, Err: unix.EIO},
		{Op: numOps, Err: unix.EIO},
		{Op: Unlinkat},
		{Op: Unlinkat, Nth: -1, Err: unix.EIO},
		{Op: Unlinkat, Name: "a", Match: func(string) bool { return true }, Err: unix.EIO},
		{Op: Flock, Name: "0a0a", Err: unix.EIO},
		{Op: Unlinkat, Name: "[", Err: unix.EIO},
		{Op: Unlinkat, Err: ErrMalformed},
	} {
		tb := &fakeTB{TB: t}
		New(tb, nil).Add(f)
		if len(tb.fatals) != 1 {
			t.Errorf("Add(%v) was accepted", &f)
		}
	}
}

// TestPath selects by the full path: the flock of one directory's fd.
func TestPath(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"0a0a", "0b0b"} {
		rtest.OK(t, os.Mkdir(filepath.Join(dir, d), 0o755))
	}
	a, b := rtest.DirFD(t, filepath.Join(dir, "0a0a")), rtest.DirFD(t, filepath.Join(dir, "0b0b"))
	s := New(t, nil)
	s.Add(Fault{Op: Flock, Path: dir + "/0b0b", Err: unix.ENOLCK})
	s.Add(Fault{Op: Openat, Path: dir + "/*/x", Err: unix.EACCES})
	rtest.OK(t, s.Flock(a, unix.LOCK_SH))
	rtest.ErrorIs(t, s.Flock(b, unix.LOCK_SH), unix.ENOLCK)
	_, err := s.Openat(a, "x", unix.O_RDONLY, 0)
	rtest.ErrorIs(t, err, unix.EACCES)
}

// TestBefore: the hook runs at the firing call, before the real call, and
// a fault without Err makes the call for real.
func TestBefore(t *testing.T) {
	dir := t.TempDir()
	fd := rtest.DirFD(t, dir)
	s := New(t, nil)
	var seen []string
	s.Add(Fault{Op: Openat, Match: func(n string) bool { return strings.HasSuffix(n, ".tmp") }, Before: func(name string) {
		seen = append(seen, strings.Clone(name))
		rtest.OK(t, os.WriteFile(filepath.Join(dir, name), []byte("made by the hook"), 0o644))
	}})
	nfd, err := s.Openat(fd, "x.tmp", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err) // exists: the hook created it
	unix.Close(nfd)
	_, err = s.Openat(fd, "y", unix.O_RDONLY, 0)
	rtest.ErrorIs(t, err, fs.ErrNotExist)
	rtest.Equal(t, "hook names", []string{"x.tmp"}, seen)
}

// TestMalformed: a getdents reply fsys.ReadDirents refuses as EIO.
func TestMalformed(t *testing.T) {
	dir := t.TempDir()
	fd := rtest.DirFD(t, dir)
	s := New(t, nil)
	s.Add(Fault{Op: Getdents, Err: ErrMalformed})
	err := fsys.ReadDirents(s, fd, func() string { return dir }, make([]byte, 4096), func([]byte, uint8) error { return nil })
	rtest.ErrorIs(t, err, unix.EIO)
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the dir", err)
	}
}

// TestConcurrent: with many goroutines, a fault fires on exactly as many
// calls as planned (run with -race).
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	fd := rtest.DirFD(t, dir)
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o644))
	s := New(t, nil)
	f := s.Add(Fault{Op: UtimesNanoAt, Nth: 10, Times: 25, Err: unix.EIO})
	var (
		mu     sync.Mutex
		failed int
		wg     sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if err := touch(s, fd, "f"); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	rtest.Equal(t, "failed calls", 25, failed)
	rtest.Equal(t, "fired", 25, f.Fired())
	rtest.Equal(t, "calls", int64(400), s.Calls(UtimesNanoAt))
}

// TestUnfaultedDoesNotAllocate: a call of an op no fault watches costs no
// allocation, with faults on other ops armed.
func TestUnfaultedDoesNotAllocate(t *testing.T) {
	dir := t.TempDir()
	fd := rtest.DirFD(t, dir)
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "f"), nil, 0o644))
	s := New(t, nil)
	s.Add(Fault{Op: Unlinkat, Err: unix.EIO, Before: func(string) {}})
	rtest.ErrorIs(t, s.Unlinkat(fd, "f", 0), unix.EIO)
	var sys fsys.Syscalls = s
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	name := []byte("f")
	var st unix.Stat_t
	allocs := testing.AllocsPerRun(100, func() {
		n := string(name) // no allocation for a 1-byte string
		rtest.OK(t, sys.UtimesNanoAt(fd, n, ts, unix.AT_SYMLINK_NOFOLLOW))
		rtest.OK(t, sys.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW))
	})
	rtest.Equal(t, "allocs per call", 0.0, allocs)
}
