package faultfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
)

// Op is one method of [fsys.Syscalls]. Its String is the syscall's name as
// fsys.Real's errors give it ("utimensat" for UtimesNanoAt, "getdents64" for
// Getdents, "lseek" for Seek).
type Op uint8

// The ops, one per method of fsys.Syscalls.
const (
	Openat Op = iota + 1
	Mkdirat
	Fchmodat
	Fchownat
	Fchown
	Fstatat
	Statx
	UtimesNanoAt
	Unlinkat
	Renameat
	Getdents
	Seek
	Flock
	Write
	Fsync
	Syncfs
	Fstatfs
	Fstat
	Fchmod
	Pread
	FcntlFlock
	numOps
)

var opNames = [numOps]string{
	Openat: "openat", Mkdirat: "mkdirat", Fchmodat: "fchmodat", Fchownat: "fchownat", Fchown: "fchown",
	Fstatat: "fstatat", Statx: "statx", UtimesNanoAt: "utimensat", Unlinkat: "unlinkat", Renameat: "renameat",
	Getdents: "getdents64", Seek: "lseek", Flock: "flock", Write: "write", Fsync: "fsync", Syncfs: "syncfs",
	Fstatfs: "fstatfs", Fstat: "fstat", Fchmod: "fchmod", Pread: "pread", FcntlFlock: "fcntl",
}

func (op Op) String() string {
	if op == 0 || op >= numOps {
		return "Op(" + strconv.Itoa(int(op)) + ")"
	}
	return opNames[op]
}

// named reports whether calls of op are given a name (relative to a dir fd);
// the others work on an fd alone.
func (op Op) named() bool {
	switch op {
	case Openat, Mkdirat, Fchmodat, Fchownat, Fstatat, Statx, UtimesNanoAt, Unlinkat, Renameat:
		return true
	}
	return false
}

// ErrMalformed, as the Err of a [Getdents] fault, makes the call succeed with a
// reply holding one corrupt linux_dirent64 record (its d_reclen shorter than
// the record header), as a buggy FUSE or network filesystem could return,
// instead of failing it with an errno.
var ErrMalformed = errors.New("faultfs: malformed linux_dirent64 record")

// Fault is one planned fault: which calls it selects, on which of them it
// fires, and what happens then. The zero values of the selectors select
// every call of Op.
type Fault struct {
	// Op is the syscall the fault watches.
	Op Op
	// Name selects calls whose name, as given to the call (relative to its
	// dir fd: "<digest>" for a touch in a prefix dir, "0a0b" for the
	// open of a prefix dir from .chunks), matches this path.Match glob;
	// for Renameat the name is the new name. Only for ops that take a name.
	Name string
	// Match, instead of Name, selects calls whose name it reports true
	// for. The name is valid only during the call.
	Match func(name string) bool
	// Path selects calls on a file whose full path matches this
	// path.Match glob: the path of the dir fd (from /proc/self/fd) joined
	// with the name, or the path of the fd for ops without a name (the
	// only way to select, say, the flock of one prefix dir). Resolving it
	// allocates, in every call of Op while the fault is armed.
	Path string
	// Nth is the selected call, counted from 1 since the fault was added,
	// on which the fault fires; 0 means from the first on.
	Nth int
	// Times is how many consecutive selected calls the fault fires on:
	// 0 means once when Nth > 0, and every selected call when Nth is 0.
	Times int
	// Err is the errno (or other error) the call fails with, wrapped as
	// *fs.PathError{Op: Op.String(), Path: name} like fsys.Real's; nil
	// makes the real call after Before. [ErrMalformed] is for Getdents only.
	Err error
	// Before, if set, runs each time the fault fires, before the call
	// fails or is made: it makes a real change at that precise call. It
	// gets the call's name (as for Name, "" for ops without one), valid
	// only during the call; it runs outside the Set's lock and may make
	// calls through the Set.
	Before func(name string)

	s              *Set
	matched, fired int    // under s.mu
	alt            *Fault // AddEither's other fault
}

// Fired returns how often the fault has fired so far.
func (f *Fault) Fired() int {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	return f.fired
}

func (f *Fault) String() string {
	var b strings.Builder
	b.WriteString(f.Op.String())
	if f.Nth > 0 {
		fmt.Fprintf(&b, " call #%d", f.Nth)
	} else {
		b.WriteString(" every call")
	}
	if f.Times > 1 {
		fmt.Fprintf(&b, " (%d times)", f.Times)
	} else if f.Nth == 0 && f.Times == 1 {
		b.WriteString(" (once)")
	}
	switch {
	case f.Name != "":
		fmt.Fprintf(&b, " on name %q", f.Name)
	case f.Match != nil:
		b.WriteString(" on names Match selects")
	}
	if f.Path != "" {
		fmt.Fprintf(&b, " on path %q", f.Path)
	}
	switch {
	case f.Err != nil:
		fmt.Fprintf(&b, " fails with %v", describeErr(f.Err))
	default:
		b.WriteString(" runs its Before hook")
	}
	return b.String()
}

func describeErr(err error) string {
	if e, isErrno := err.(unix.Errno); isErrno {
		if name := unix.ErrnoName(e); name != "" {
			return name
		}
	}
	return err.Error()
}

// selects reports whether the fault selects a call of its op with name at
// full path p (computed by path when the fault needs it).
func (f *Fault) selects(name string, p func() string) bool {
	if f.Name != "" {
		if m, _ := path.Match(f.Name, name); !m {
			return false
		}
	}
	if f.Match != nil && !f.Match(name) {
		return false
	}
	if f.Path != "" {
		if m, _ := path.Match(f.Path, p()); !m {
			return false
		}
	}
	return true
}

// due counts a selected call and reports whether the fault fires on it.
func (f *Fault) due() bool {
	f.matched++
	first, times := max(f.Nth, 1), f.Times
	if times == 0 && f.Nth > 0 {
		times = 1
	}
	if f.matched < first || times > 0 && f.matched >= first+times {
		return false
	}
	f.fired++
	return true
}

// Set is an [fsys.Syscalls] that passes every call to the Syscalls it wraps
// unless one of its faults fires on it. Make it with [New].
type Set struct {
	t     testing.TB
	base  fsys.Syscalls
	calls [numOps]atomic.Int64
	armed [numOps]atomic.Int32 // faults per op, so an unwatched op takes no lock

	mu     sync.Mutex
	faults []*Fault
}

var _ fsys.Syscalls = (*Set)(nil)

// New returns an empty fault set over base (fsys.Real{} when nil). At t's
// cleanup it fails t, naming them, if any fault added to it never fired
// (unless t was skipped).
func New(t testing.TB, base fsys.Syscalls) *Set {
	t.Helper()
	if base == nil {
		base = fsys.Real{}
	}
	s := &Set{t: t, base: base}
	t.Cleanup(s.check)
	return s
}

// check is the cleanup check: every fault fired.
func (s *Set) check() {
	if s.t.Skipped() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.faults {
		if f.fired == 0 && (f.alt == nil || f.alt.fired == 0) {
			s.t.Errorf("faultfs: a planned fault never fired, so the test asserted nothing about it: %v (%d calls selected, %d %s calls in all)",
				f, f.matched, s.calls[f.Op].Load(), f.Op)
		}
	}
}

// Add plans fault f and returns it (to ask it [Fault.Fired]). Its Nth
// counts from now. A fault that could never fire, or that does nothing,
// fails the test at once.
func (s *Set) Add(f Fault) *Fault {
	s.t.Helper()
	if err := f.validate(); err != nil {
		s.t.Fatalf("faultfs: %v: %v", &f, err)
		return nil
	}
	p := &f
	p.s, p.matched, p.fired = s, 0, 0
	s.mu.Lock()
	s.faults = append(s.faults, p)
	s.mu.Unlock()
	s.armed[f.Op].Add(1)
	return p
}

// AddEither plans faults a and b for a step that makes one call or the
// other (which, the test cannot choose): the cleanup check is met when
// either fired. Fired on each tells which.
func (s *Set) AddEither(a, b Fault) (*Fault, *Fault) {
	s.t.Helper()
	pa, pb := s.Add(a), s.Add(b)
	s.mu.Lock()
	pa.alt, pb.alt = pb, pa
	s.mu.Unlock()
	return pa, pb
}

func (f *Fault) validate() error {
	switch {
	case f.Op == 0 || f.Op >= numOps:
		return errors.New("no such op")
	case f.Nth < 0 || f.Times < 0:
		return errors.New("negative Nth or Times")
	case f.Err == nil && f.Before == nil:
		return errors.New("neither Err nor Before: the fault does nothing")
	case f.Name != "" && f.Match != nil:
		return errors.New("both Name and Match: choose one")
	case (f.Name != "" || f.Match != nil) && !f.Op.named():
		return fmt.Errorf("%s takes no name: select by Path (the fd's path) instead", f.Op)
	case errors.Is(f.Err, ErrMalformed) && f.Op != Getdents:
		return errors.New("a malformed reply is for getdents only")
	}
	for _, g := range []string{f.Name, f.Path} {
		if _, err := path.Match(g, ""); err != nil {
			return fmt.Errorf("glob %q: %w", g, err)
		}
	}
	return nil
}

// Calls returns how many calls of op the Set has seen, faulted or not.
func (s *Set) Calls(op Op) int64 { return s.calls[op].Load() }

// fault counts a call of op and returns the error it must fail with, if a
// fault fires on it. fd is the dir fd (or the fd for ops without a name).
func (s *Set) fault(op Op, fd int, name string) error {
	s.calls[op].Add(1)
	if s.armed[op].Load() == 0 {
		return nil
	}
	return s.fire(op, fd, name)
}

func (s *Set) fire(op Op, fd int, name string) error {
	var full string
	resolved := false
	fullPath := func() string {
		if !resolved {
			full, resolved = resolve(fd, name), true
		}
		return full
	}
	var (
		hooks [4]func(string)
		extra []func(string)
		n     int
		err   error
	)
	s.mu.Lock()
	for _, f := range s.faults {
		if f.Op != op || !f.selects(name, fullPath) || !f.due() {
			continue
		}
		if f.Before != nil {
			if n < len(hooks) {
				hooks[n] = f.Before
				n++
			} else {
				extra = append(extra, f.Before)
			}
		}
		if err == nil && f.Err != nil {
			err = f.Err
		}
	}
	s.mu.Unlock()
	for _, h := range hooks[:n] {
		h(name)
	}
	for _, h := range extra {
		h(name)
	}
	if err == nil || err == ErrMalformed {
		return err
	}
	return &fs.PathError{Op: op.String(), Path: strings.Clone(name), Err: err}
}

// resolve returns the full path of name relative to dir fd fd.
func resolve(fd int, name string) string {
	if strings.HasPrefix(name, "/") {
		return path.Clean(name)
	}
	var dir string
	if fd == unix.AT_FDCWD {
		dir, _ = os.Getwd()
	} else {
		dir, _ = os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	}
	if name == "" {
		return dir
	}
	return path.Join(dir, name)
}

func (s *Set) Openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	if err := s.fault(Openat, dirfd, name); err != nil {
		return -1, err
	}
	return s.base.Openat(dirfd, name, flags, mode)
}

func (s *Set) Mkdirat(dirfd int, name string, mode uint32) error {
	if err := s.fault(Mkdirat, dirfd, name); err != nil {
		return err
	}
	return s.base.Mkdirat(dirfd, name, mode)
}

func (s *Set) Fchmodat(dirfd int, name string, mode uint32) error {
	if err := s.fault(Fchmodat, dirfd, name); err != nil {
		return err
	}
	return s.base.Fchmodat(dirfd, name, mode)
}

func (s *Set) Fchownat(dirfd int, name string, uid, gid, flags int) error {
	if err := s.fault(Fchownat, dirfd, name); err != nil {
		return err
	}
	return s.base.Fchownat(dirfd, name, uid, gid, flags)
}

func (s *Set) Fchown(fd, uid, gid int) error {
	if err := s.fault(Fchown, fd, ""); err != nil {
		return err
	}
	return s.base.Fchown(fd, uid, gid)
}

func (s *Set) Fstatat(dirfd int, name string, st *unix.Stat_t, flags int) error {
	if err := s.fault(Fstatat, dirfd, name); err != nil {
		return err
	}
	return s.base.Fstatat(dirfd, name, st, flags)
}

func (s *Set) Statx(dirfd int, name string, flags, mask int, stx *unix.Statx_t) error {
	if err := s.fault(Statx, dirfd, name); err != nil {
		return err
	}
	return s.base.Statx(dirfd, name, flags, mask, stx)
}

func (s *Set) UtimesNanoAt(dirfd int, name string, ts []unix.Timespec, flags int) error {
	if err := s.fault(UtimesNanoAt, dirfd, name); err != nil {
		return err
	}
	return s.base.UtimesNanoAt(dirfd, name, ts, flags)
}

func (s *Set) Unlinkat(dirfd int, name string, flags int) error {
	if err := s.fault(Unlinkat, dirfd, name); err != nil {
		return err
	}
	return s.base.Unlinkat(dirfd, name, flags)
}

// Renameat is selected, and its errors named, by the new name (as
// fsys.Real names it).
func (s *Set) Renameat(olddirfd int, oldname string, newdirfd int, newname string, flags uint) error {
	if err := s.fault(Renameat, newdirfd, newname); err != nil {
		return err
	}
	return s.base.Renameat(olddirfd, oldname, newdirfd, newname, flags)
}

// Getdents fails, or with [ErrMalformed] returns a corrupt record.
func (s *Set) Getdents(fd int, buf []byte) (int, error) {
	if err := s.fault(Getdents, fd, ""); err != nil {
		if err == ErrMalformed {
			return malformed(buf)
		}
		return 0, err
	}
	return s.base.Getdents(fd, buf)
}

// malformed fills buf with one linux_dirent64 record whose d_reclen (4) is
// shorter than the 19-byte header.
func malformed(buf []byte) (int, error) {
	const n = 24
	if len(buf) < n {
		return 0, &fs.PathError{Op: Getdents.String(), Err: unix.EINVAL}
	}
	clear(buf[:n])
	binary.NativeEndian.PutUint64(buf, 1)      // d_ino: a live entry
	binary.NativeEndian.PutUint16(buf[16:], 4) // d_reclen
	return n, nil
}

func (s *Set) Seek(fd int, offset int64, whence int) (int64, error) {
	if err := s.fault(Seek, fd, ""); err != nil {
		return -1, err
	}
	return s.base.Seek(fd, offset, whence)
}

func (s *Set) Flock(fd, how int) error {
	if err := s.fault(Flock, fd, ""); err != nil {
		return err
	}
	return s.base.Flock(fd, how)
}

func (s *Set) Write(fd int, p []byte) (int, error) {
	if err := s.fault(Write, fd, ""); err != nil {
		return 0, err
	}
	return s.base.Write(fd, p)
}

func (s *Set) Fsync(fd int) error {
	if err := s.fault(Fsync, fd, ""); err != nil {
		return err
	}
	return s.base.Fsync(fd)
}

func (s *Set) Syncfs(fd int) error {
	if err := s.fault(Syncfs, fd, ""); err != nil {
		return err
	}
	return s.base.Syncfs(fd)
}

func (s *Set) Fstatfs(fd int, st *unix.Statfs_t) error {
	if err := s.fault(Fstatfs, fd, ""); err != nil {
		return err
	}
	return s.base.Fstatfs(fd, st)
}

func (s *Set) Fstat(fd int, st *unix.Stat_t) error {
	if err := s.fault(Fstat, fd, ""); err != nil {
		return err
	}
	return s.base.Fstat(fd, st)
}

func (s *Set) Fchmod(fd int, mode uint32) error {
	if err := s.fault(Fchmod, fd, ""); err != nil {
		return err
	}
	return s.base.Fchmod(fd, mode)
}

func (s *Set) Pread(fd int, p []byte, offset int64) (int, error) {
	if err := s.fault(Pread, fd, ""); err != nil {
		return 0, err
	}
	return s.base.Pread(fd, p, offset)
}

func (s *Set) FcntlFlock(fd int, cmd int, lk *unix.Flock_t) error {
	if err := s.fault(FcntlFlock, fd, ""); err != nil {
		return err
	}
	return s.base.FcntlFlock(fd, cmd, lk)
}
