package fsys

import (
	"io/fs"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Syscalls is every syscall chunkgc makes on a store's files (chunkstore's
// chunks and prefix dirs, datastore's tree and index walk, backup's ingest and
// forget, locking's lock files and lock dirs), except close(2) and what
// internal/nofollow and internal/atomicfile do themselves. Real is the
// default; tests pass a fault set (chunkgc/internal/testkit/faultfs) that
// wraps Real and injects an errno (or a real change to the files) at a
// precise call. Names are relative to the dirfd given; errors are
// *fs.PathError naming the relative name (empty for fd-only calls), which the
// caller rewrites to the full path.
//
// A name may alias a buffer its caller reuses once the call returns (see
// [Toucher] and [PrefixDir.StatBytes], which pass names built in place
// without copying them to the heap). An implementation must not keep a name
// beyond the call, except as the Path of the *fs.PathError it returns, which
// every caller replaces at once by the full path (Real clones it anyway).
type Syscalls interface {
	Openat(dirfd int, name string, flags int, mode uint32) (int, error)
	Mkdirat(dirfd int, name string, mode uint32) error
	Fchmodat(dirfd int, name string, mode uint32) error
	Fchownat(dirfd int, name string, uid, gid, flags int) error
	Fchown(fd, uid, gid int) error
	Fstatat(dirfd int, name string, st *unix.Stat_t, flags int) error
	Statx(dirfd int, name string, flags, mask int, stx *unix.Statx_t) error
	UtimesNanoAt(dirfd int, name string, ts []unix.Timespec, flags int) error
	Unlinkat(dirfd int, name string, flags int) error
	// Renameat is renameat2(2): flags 0 or unix.RENAME_NOREPLACE.
	Renameat(olddirfd int, oldname string, newdirfd int, newname string, flags uint) error
	Getdents(fd int, buf []byte) (int, error)
	Seek(fd int, offset int64, whence int) (int64, error)
	Flock(fd, how int) error
	Write(fd int, p []byte) (int, error)
	Fsync(fd int) error
	Syncfs(fd int) error
	Fstatfs(fd int, st *unix.Statfs_t) error
	Fstat(fd int, st *unix.Stat_t) error
	Fchmod(fd int, mode uint32) error
	Pread(fd int, p []byte, offset int64) (int, error)
	FcntlFlock(fd int, cmd int, lk *unix.Flock_t) error
}

// OrReal returns sys, or [Real] when sys is nil: the default of every
// option that takes a seam.
func OrReal(sys Syscalls) Syscalls {
	if sys == nil {
		return Real{}
	}
	return sys
}

// Real makes the syscalls through x/sys/unix, retrying EINTR (x/sys does
// not, and FUSE and NFS can return it) and turning every errno into an
// *fs.PathError.
type Real struct{}

var _ Syscalls = Real{}

func pathErr(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &fs.PathError{Op: op, Path: name, Err: err}
}

func (Real) Openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	if len(name) >= nameBufSize {
		for {
			fd, err := unix.Openat(dirfd, name, flags, mode)
			if err != unix.EINTR {
				return fd, pathErr("openat", strings.Clone(name), err)
			}
		}
	}
	var buf [nameBufSize]byte
	p, e := cName(&buf, name)
	if e != 0 {
		return -1, errnoPathErr("openat", name, e)
	}
	for {
		// As unix.Openat, which adds O_LARGEFILE (0 on 64-bit architectures).
		fd, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags|unix.O_LARGEFILE), uintptr(mode), 0, 0)
		switch e {
		case 0:
			return int(fd), nil
		case unix.EINTR: // interrupted: again
		default:
			return -1, errnoPathErr("openat", name, e)
		}
	}
}

func (Real) Mkdirat(dirfd int, name string, mode uint32) error {
	for {
		err := unix.Mkdirat(dirfd, name, mode)
		if err != unix.EINTR {
			return pathErr("mkdirat", name, err)
		}
	}
}

func (Real) Fchmodat(dirfd int, name string, mode uint32) error {
	for {
		err := unix.Fchmodat(dirfd, name, mode, 0)
		if err != unix.EINTR {
			return pathErr("fchmodat", name, err)
		}
	}
}

func (Real) Fchownat(dirfd int, name string, uid, gid, flags int) error {
	for {
		err := unix.Fchownat(dirfd, name, uid, gid, flags)
		if err != unix.EINTR {
			return pathErr("fchownat", name, err)
		}
	}
}

func (Real) Fchown(fd, uid, gid int) error {
	for {
		err := unix.Fchown(fd, uid, gid)
		if err != unix.EINTR {
			return pathErr("fchown", "", err)
		}
	}
}

// nameBufSize bounds the names Real NUL-terminates in a buffer on its own
// stack for openat, fstatat, statx and utimensat, the calls of GC's per-prefix and
// per-chunk loops: a chunk name relative to .chunks, "xxxx/<64 hex
// digits>.N.bad", is 75 bytes, a tmp file name 85. Longer names go through
// x/sys, which copies them to the heap.
const nameBufSize = 128

// cName copies name and a NUL into buf and returns a pointer to it, or
// EINVAL when name holds a NUL itself (as x/sys's BytePtrFromString does).
// name must be shorter than nameBufSize. buf stays on the caller's stack:
// the pointer only reaches the kernel as a uintptr syscall argument
// (TestHotPathsDoNotAllocate, BenchmarkTouch and BenchmarkPrefixStat
// assert 0 allocs/op).
func cName(buf *[nameBufSize]byte, name string) (*byte, unix.Errno) {
	if strings.IndexByte(name, 0) >= 0 {
		return nil, unix.EINVAL
	}
	buf[copy(buf[:], name)] = 0
	return &buf[0], 0
}

// errnoPathErr is pathErr for a raw errno from unix.Syscall6. The name is
// cloned: it may alias a buffer the caller reuses (see Syscalls).
func errnoPathErr(op, name string, e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return &fs.PathError{Op: op, Path: strings.Clone(name), Err: e}
}

func (Real) Fstatat(dirfd int, name string, st *unix.Stat_t, flags int) error {
	if !fastFstatat || len(name) >= nameBufSize {
		for {
			err := unix.Fstatat(dirfd, name, st, flags)
			if err != unix.EINTR {
				return pathErr("fstatat", strings.Clone(name), err)
			}
		}
	}
	var buf [nameBufSize]byte
	p, e := cName(&buf, name)
	if e != 0 {
		return errnoPathErr("fstatat", name, e)
	}
	for {
		_, _, e := unix.Syscall6(sysFstatat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(st)), uintptr(flags), 0, 0)
		if e != unix.EINTR {
			return errnoPathErr("fstatat", name, e)
		}
	}
}

func (Real) Statx(dirfd int, name string, flags, mask int, stx *unix.Statx_t) error {
	if len(name) >= nameBufSize {
		for {
			err := unix.Statx(dirfd, name, flags, mask, stx)
			if err != unix.EINTR {
				return pathErr("statx", strings.Clone(name), err)
			}
		}
	}
	var buf [nameBufSize]byte
	p, e := cName(&buf, name)
	if e != 0 {
		return errnoPathErr("statx", name, e)
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags), uintptr(mask), uintptr(unsafe.Pointer(stx)), 0)
		if e != unix.EINTR {
			return errnoPathErr("statx", name, e)
		}
	}
}

func (Real) UtimesNanoAt(dirfd int, name string, ts []unix.Timespec, flags int) error {
	if len(name) >= nameBufSize {
		for {
			err := unix.UtimesNanoAt(dirfd, name, ts, flags)
			if err != unix.EINTR {
				return pathErr("utimensat", strings.Clone(name), err)
			}
		}
	}
	// As unix.UtimesNanoAt: nil times means now for both; otherwise exactly two.
	var times unsafe.Pointer
	if ts != nil {
		if len(ts) != 2 {
			return errnoPathErr("utimensat", name, unix.EINVAL)
		}
		times = unsafe.Pointer(&ts[0])
	}
	var buf [nameBufSize]byte
	p, e := cName(&buf, name)
	if e != 0 {
		return errnoPathErr("utimensat", name, e)
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(times), uintptr(flags), 0, 0)
		if e != unix.EINTR {
			return errnoPathErr("utimensat", name, e)
		}
	}
}

func (Real) Unlinkat(dirfd int, name string, flags int) error {
	for {
		err := unix.Unlinkat(dirfd, name, flags)
		if err != unix.EINTR {
			return pathErr("unlinkat", name, err)
		}
	}
}

func (Real) Renameat(olddirfd int, oldname string, newdirfd int, newname string, flags uint) error {
	for {
		err := unix.Renameat2(olddirfd, oldname, newdirfd, newname, flags)
		if err != unix.EINTR {
			return pathErr("renameat", newname, err)
		}
	}
}

func (Real) Getdents(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Getdents(fd, buf)
		if err != unix.EINTR {
			return n, pathErr("getdents64", "", err)
		}
	}
}

func (Real) Seek(fd int, offset int64, whence int) (int64, error) {
	for {
		off, err := unix.Seek(fd, offset, whence)
		if err != unix.EINTR {
			return off, pathErr("lseek", "", err)
		}
	}
}

func (Real) Flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			return pathErr("flock", "", err)
		}
	}
}

func (Real) Write(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Write(fd, p)
		if err != unix.EINTR {
			return n, pathErr("write", "", err)
		}
	}
}

func (Real) Fsync(fd int) error {
	for {
		err := unix.Fsync(fd)
		if err != unix.EINTR {
			return pathErr("fsync", "", err)
		}
	}
}

func (Real) Syncfs(fd int) error {
	for {
		err := unix.Syncfs(fd)
		if err != unix.EINTR {
			return pathErr("syncfs", "", err)
		}
	}
}

func (Real) Fstatfs(fd int, st *unix.Statfs_t) error {
	for {
		err := unix.Fstatfs(fd, st)
		if err != unix.EINTR {
			return pathErr("fstatfs", "", err)
		}
	}
}

func (Real) Fstat(fd int, st *unix.Stat_t) error {
	for {
		err := unix.Fstat(fd, st)
		if err != unix.EINTR {
			return pathErr("fstat", "", err)
		}
	}
}

func (Real) Fchmod(fd int, mode uint32) error {
	for {
		err := unix.Fchmod(fd, mode)
		if err != unix.EINTR {
			return pathErr("fchmod", "", err)
		}
	}
}

func (Real) Pread(fd int, p []byte, offset int64) (int, error) {
	for {
		n, err := unix.Pread(fd, p, offset)
		if err != unix.EINTR {
			return n, pathErr("pread", "", err)
		}
	}
}

// FcntlFlock is fcntl(fd, cmd, lk) for the record locks (F_OFD_SETLK,
// F_SETLK, F_GETLK, …).
func (Real) FcntlFlock(fd int, cmd int, lk *unix.Flock_t) error {
	for {
		err := unix.FcntlFlock(uintptr(fd), cmd, lk)
		if err != unix.EINTR {
			return pathErr("fcntl", "", err)
		}
	}
}
