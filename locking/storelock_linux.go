package locking

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
)

// StoreLockName is the store lock, <base>/.lock: PBS daemons hold classic
// POSIX read locks on it during a backup, GC an OFD write lock
// ([Dir.LockStore]). This package is its one owner: [CreateStoreLock] makes
// it, [Dir.LockStore] and [OFDLock] lock it.
const StoreLockName = ".lock"

// storeLockMode is the mode of the store lock: readable by all, so that a
// PBS daemon running as another user than its owner can open it.
const storeLockMode = 0o644

// CreateStoreLock makes the store lock <base>/.lock, relative to the
// store's base directory fd baseFD, through sys (nil: [fsys.Real]): an
// empty file of mode exactly 0644 (whatever the umask), created
// O_CREAT|O_EXCL|O_NOFOLLOW; an existing one is accepted if it is a regular
// file (not a symlink) with one link. When owner is [fsys.Owner.Active] it is
// chowned to owner, created or not. Errors name the path.
func CreateStoreLock(sys fsys.Syscalls, baseFD int, base string, owner fsys.Owner) error {
	sys = fsys.OrReal(sys)
	path := filepath.Join(base, StoreLockName)
	var st unix.Stat_t
	err := sys.Fstatat(baseFD, StoreLockName, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return createStoreLock(sys, baseFD, path, owner)
	case err != nil:
		return fsys.WithPath(err, path)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s exists and is not a regular file", path)
	}
	if err := checkLockStat(&st, path); err != nil {
		return err
	}
	if !owner.Active() {
		return nil
	}
	return chownStoreLock(sys, baseFD, base, path, owner)
}

// chownStoreLock chowns the existing store lock to owner through an fd
// that checkLockFile vouched for, never by name: a file swapped in after
// CreateStoreLock's fstatat (a hard link to a file outside the store, which
// the backup user owning the base could plant) is refused, not chowned.
func chownStoreLock(sys fsys.Syscalls, baseFD int, base, path string, owner fsys.Owner) error {
	fd, err := openEntry(sys, baseFD, base, StoreLockName, unix.O_RDONLY|unix.O_NONBLOCK, 0, false)
	if err != nil {
		return err
	}
	err = checkLockFile(sys, fd, path)
	if err == nil {
		if cerr := owner.Fchown(sys, fd); cerr != nil {
			err = fsys.PathError("fchown", path, cerr)
		}
	}
	return errors.Join(err, closeFD(fd, path))
}

// createStoreLock creates the missing store lock and sets its mode and
// owner through its fd.
func createStoreLock(sys fsys.Syscalls, baseFD int, path string, owner fsys.Owner) error {
	fd, err := sys.Openat(baseFD, StoreLockName, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, storeLockMode)
	if err != nil {
		return fsys.WithPath(err, path)
	}
	err = sys.Fchmod(fd, storeLockMode)
	if err == nil {
		err = owner.Fchown(sys, fd)
	}
	return errors.Join(fsys.WithPath(err, path), closeFD(fd, path))
}

// LockStore takes the store lock of the store whose base directory is open
// as baseFD (base is its path, for messages): a non-blocking OFD write lock
// (F_OFD_SETLK, F_WRLCK, whole file) on <base>/.lock, through d's seam.
// The file is opened O_RDWR|O_NONBLOCK|O_NOFOLLOW relative to baseFD and
// must be a regular file with one link, or LockStore fails with an error
// naming it. It is created if missing (0644; when running as root, owned
// like the base directory, so that PBS daemons running as the backup user
// can still open it). baseFD stays the caller's.
//
// The lock conflicts with the classic POSIX read locks PBS daemons hold on
// .lock during a backup: if any process holds one (or another OFD or POSIX
// lock), LockStore returns a [*LockedError]. Being an OFD lock, it belongs to
// the open file description, so closing some other fd of the same file in
// this process does not drop it (a classic POSIX lock would be dropped).
func (d *Dir) LockStore(baseFD int, base string) (*Lock, error) {
	return ofdLockAt(d.sys, baseFD, base, StoreLockName)
}

// OFDLock takes the OFD write lock of [Dir.LockStore] on path (a store's
// <base>/.lock, or another file), opening the directory of path by path,
// through [fsys.Real].
func OFDLock(path string) (*Lock, error) {
	sys := fsys.Real{}
	dirfd, dir, name, err := openParent(sys, path)
	if err != nil {
		return nil, err
	}
	defer closeFD(dirfd, dir)
	return ofdLockAt(sys, dirfd, dir, name)
}

// ofdLockAt is LockStore on name (one plain component) in dirfd, whose path
// is dirPath.
func ofdLockAt(sys fsys.Syscalls, dirfd int, dirPath, name string) (*Lock, error) {
	path := filepath.Join(dirPath, name)
	fd, err := openLockFile(sys, dirfd, dirPath, name, unix.O_RDWR, ownedLikeParent)
	if err != nil {
		return nil, err
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := sys.FcntlFlock(fd, unix.F_OFD_SETLK, &lk); err != nil {
		closeFD(fd, path)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, &LockedError{Path: path, Err: fsys.Errno(err)}
		}
		return nil, fsys.PathError("fcntl F_OFD_SETLK", path, err)
	}
	return &Lock{sys: sys, path: path, kind: kindOFD, dirfd: -1, name: name, fd: fd}, nil
}
