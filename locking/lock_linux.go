package locking

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/eintr"
	"chunkgc/internal/nofollow"
)

// Mode is the kind of a flock: [Shared] or [Exclusive]. The zero Mode is
// invalid.
type Mode uint8

const (
	// Shared is flock LOCK_SH: readers; any number may hold it together.
	Shared Mode = iota + 1
	// Exclusive is flock LOCK_EX: writing or removing; one holder only.
	Exclusive
)

func (m Mode) String() string {
	switch m {
	case Shared:
		return "shared"
	case Exclusive:
		return "exclusive"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

func (m Mode) how() (int, error) {
	switch m {
	case Shared:
		return unix.LOCK_SH, nil
	case Exclusive:
		return unix.LOCK_EX, nil
	}
	return 0, fmt.Errorf("invalid lock mode %d", uint8(m))
}

// kind is what a Lock holds.
type kind uint8

const (
	kindFlockShared kind = iota + 1
	kindFlockExclusive
	kindOFD
)

// Lock is a held kernel lock on a file: a flock (from [Flock] and [Dir]) or
// an OFD write lock (from [OFDLock]). It owns an open file descriptor; the
// lock lasts until Unlock or RemoveAndUnlock, or until the process dies.
// Its methods are safe for concurrent use.
type Lock struct {
	path string
	kind kind
	// dirfd is an O_DIRECTORY fd of the lock file's parent and name its
	// name there: RemoveAndUnlock double-stats and unlinks relative to it.
	// -1 for an OFD lock, which never removes its file.
	dirfd int
	name  string

	mu sync.Mutex
	fd int // -1 once released
}

// Path returns the path of the lock file.
func (l *Lock) Path() string { return l.path }

// take returns the fd and marks the lock released, or fails with
// fs.ErrClosed if it already was.
func (l *Lock) take(op string) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fd := l.fd
	if fd < 0 {
		return -1, fmt.Errorf("%s %s: %w", op, l.path, fs.ErrClosed)
	}
	l.fd = -1
	return fd, nil
}

// Unlock releases the lock and closes its file descriptor. A second call
// returns an error matching fs.ErrClosed.
func (l *Lock) Unlock() error {
	fd, err := l.take("unlock")
	if err != nil {
		return err
	}
	return l.release(fd)
}

func (l *Lock) release(fd int) error {
	var unlockErr error
	if l.kind == kindOFD {
		lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0}
		if err := eintr.Retry(func() error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk) }); err != nil {
			unlockErr = &fs.PathError{Op: "fcntl F_OFD_SETLK F_UNLCK", Path: l.path, Err: err}
		}
	} else {
		if err := eintr.Retry(func() error { return unix.Flock(fd, unix.LOCK_UN) }); err != nil {
			unlockErr = &fs.PathError{Op: "flock LOCK_UN", Path: l.path, Err: err}
		}
	}
	// Closing releases the lock too (it is the last fd of its open file
	// description), so the lock is gone even when LOCK_UN failed.
	err := errors.Join(unlockErr, closeFD(fd, l.path))
	if l.dirfd >= 0 {
		err = errors.Join(err, closeFD(l.dirfd, filepath.Dir(l.path)))
	}
	return err
}

// RemoveAndUnlock removes the lock file while still holding the lock, then
// releases it (SPEC §7.6). Only an exclusive flock may remove its file; for
// any other lock it removes nothing, releases the lock and returns an error.
// When the path no longer names the locked file (someone broke the protocol)
// it removes nothing and returns an error matching [ErrReplaced].
func (l *Lock) RemoveAndUnlock() error {
	fd, err := l.take("remove lock")
	if err != nil {
		return err
	}
	var rmErr error
	switch {
	case l.kind != kindFlockExclusive:
		rmErr = fmt.Errorf("remove lock %s: not an exclusive flock", l.path)
	default:
		rmErr = removeIfSame(fd, l.dirfd, l.name, l.path)
	}
	return errors.Join(rmErr, l.release(fd))
}

// removeIfSame unlinks name in dirfd (path, for messages) if it still names
// the file open as fd.
func removeIfSame(fd, dirfd int, name, path string) error {
	same, err := sameFile(fd, dirfd, name, path)
	if err != nil {
		return err
	}
	if !same {
		return fmt.Errorf("remove lock %s: %w", path, ErrReplaced)
	}
	if err := eintr.Retry(func() error { return unix.Unlinkat(dirfd, name, 0) }); err != nil {
		return &fs.PathError{Op: "unlink", Path: path, Err: err}
	}
	return nil
}

// Flock opens path (creating it 0644 if missing) and takes a flock on it in
// mode. The directory of path is opened by path like any other (it is the
// caller's to trust); the lock file itself is opened relative to it as a
// [Dir] opens its lock files: O_NOFOLLOW, O_NONBLOCK, and it must be a
// regular file with one link, or Flock fails with an error naming it.
//
// With timeout 0 it tries once (LOCK_NB) and returns a [*LockedError] if the
// lock is held. With timeout > 0 it retries until it gets the lock, the
// timeout runs out (*LockedError) or ctx is done (ctx.Err(), with the cause).
// Waiting polls with LOCK_NB and an exponential backoff from 1 ms to 50 ms on
// a timer that a select races against ctx.Done(), in the calling goroutine:
// a blocking flock cannot be interrupted from Go without signals, and a
// goroutine parked in one would outlive a cancelled call.
//
// After every successful flock it double-stats (see the package doc): if the
// path is gone or names another inode, it drops that lock and retries on the
// file now at path, or, if there is no time left to, returns [ErrReplaced].
func Flock(ctx context.Context, path string, mode Mode, timeout time.Duration) (*Lock, error) {
	f := newFlocker(-1, -1)
	return f.lock(ctx, path, mode, timeout)
}

// openParent opens the directory holding path, by path, and returns its fd,
// its path and the base name of path.
func openParent(path string) (int, string, string, error) {
	dir, name := filepath.Dir(path), filepath.Base(path)
	if name == "/" || name == "." || name == ".." {
		return -1, "", "", fmt.Errorf("lock %s: not a file name", path)
	}
	fd, err := eintr.Retry2(func() (int, error) {
		return unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return -1, "", "", &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, dir, name, nil
}

// flocker takes flocks. Its unexported knobs are for tests.
type flocker struct {
	uid, gid int // owner of lock files it creates; -1: leave as created

	minPoll, maxPoll time.Duration // backoff bounds while waiting

	// Test hooks, nil in production: beforeFlock runs between opening the
	// file and each flock attempt on it, afterBusy after an attempt found the
	// lock held (n counts them from 1), afterReplaced after a double-stat
	// found the file replaced.
	beforeFlock   func()
	afterBusy     func(n int)
	afterReplaced func()
}

func newFlocker(uid, gid int) flocker {
	return flocker{uid: uid, gid: gid, minPoll: time.Millisecond, maxPoll: 50 * time.Millisecond}
}

// lock is lockAt for a path whose directory is opened by path.
func (f *flocker) lock(ctx context.Context, path string, mode Mode, timeout time.Duration) (*Lock, error) {
	dirfd, dir, name, err := openParent(path)
	if err != nil {
		return nil, err
	}
	return f.lockAt(ctx, dirfd, dir, name, mode, timeout)
}

// lockAt flocks name in the directory dirfd (whose path is dirPath, for
// messages). It takes ownership of dirfd: the returned Lock keeps it, and
// it is closed on error.
func (f *flocker) lockAt(ctx context.Context, dirfd int, dirPath, name string, mode Mode, timeout time.Duration) (l *Lock, err error) {
	path := filepath.Join(dirPath, name)
	defer func() {
		if l == nil {
			closeFD(dirfd, dirPath)
		}
	}()
	how, err := mode.how()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if ctx.Err() != nil {
		return nil, waitError(ctx, path)
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	delay := f.minPoll
	busy := 0
	fd := -1
	defer func() {
		if fd >= 0 {
			closeFD(fd, path)
		}
	}()
	for {
		if fd < 0 {
			if fd, err = openLockFile(dirfd, dirPath, name, unix.O_RDONLY, f.uid, f.gid); err != nil {
				return nil, err
			}
		}
		if f.beforeFlock != nil {
			f.beforeFlock()
		}
		err := eintr.Retry(func() error { return unix.Flock(fd, how|unix.LOCK_NB) })
		switch {
		case err == nil:
			same, err := sameFile(fd, dirfd, name, path)
			if err != nil {
				return nil, err
			}
			if same {
				k := kindFlockShared
				if mode == Exclusive {
					k = kindFlockExclusive
				}
				l := &Lock{path: path, kind: k, dirfd: dirfd, name: name, fd: fd}
				fd = -1
				return l, nil
			}
			// We locked an inode that is no longer at path: whoever removed
			// it did so while holding the lock, and whoever holds the file
			// there now must not share it with us. Drop it and look again.
			closeFD(fd, path)
			fd = -1
			if f.afterReplaced != nil {
				f.afterReplaced()
			}
			if timeout <= 0 || !time.Now().Before(deadline) {
				return nil, fmt.Errorf("lock %s: %w", path, ErrReplaced)
			}
			if ctx.Err() != nil {
				return nil, waitError(ctx, path)
			}
		case errors.Is(err, unix.EWOULDBLOCK):
			if timeout <= 0 {
				return nil, &LockedError{Path: path, Err: err}
			}
			left := time.Until(deadline)
			if left <= 0 {
				return nil, &LockedError{Path: path, Err: fmt.Errorf("still held after %v: %w", timeout, err)}
			}
			// The holder may have removed the file and not released it
			// yet; wait on the file at path then, not on the old one.
			same, err := sameFile(fd, dirfd, name, path)
			if err != nil {
				return nil, err
			}
			if !same {
				closeFD(fd, path)
				fd = -1
			}
			busy++
			if f.afterBusy != nil {
				f.afterBusy(busy)
			}
			if err := sleepCtx(ctx, min(delay, left)); err != nil {
				return nil, waitError(ctx, path)
			}
			delay = min(2*delay, f.maxPoll)
		default:
			return nil, &fs.PathError{Op: "flock", Path: path, Err: err}
		}
	}
}

// sleepCtx waits for d or until ctx is done, whichever is first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitError is the error for a wait on path that ctx ended; it matches
// ctx.Err() and, when different, the cause.
func waitError(ctx context.Context, path string) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("wait for lock %s: %w: %w", path, err, cause)
	}
	return fmt.Errorf("wait for lock %s: %w", path, err)
}

// OFDLock takes a non-blocking OFD write lock (F_OFD_SETLK, F_WRLCK, whole
// file) on path, the store's <base>/.lock: it opens the directory of path by
// path and calls [OFDLockAt]. Prefer OFDLockAt with the store's base fd.
func OFDLock(path string) (*Lock, error) {
	dirfd, dir, name, err := openParent(path)
	if err != nil {
		return nil, err
	}
	defer closeFD(dirfd, dir)
	return OFDLockAt(dirfd, dir, name)
}

// OFDLockAt takes a non-blocking OFD write lock (F_OFD_SETLK, F_WRLCK, whole
// file) on name in the directory dirfd (the store's base fd and ".lock";
// dirPath is the directory's path, for messages). The file is opened
// O_RDWR|O_NONBLOCK|O_NOFOLLOW relative to dirfd and must be a regular file
// with one link, or OFDLockAt fails with an error naming it. It is created
// if missing (0644; when running as root, owned like the directory, fstat
// of dirfd, so that PBS daemons running as the backup user can still open
// it). dirfd stays the caller's.
//
// The lock conflicts with the classic POSIX read locks PBS daemons hold on
// .lock during a backup: if any process holds one (or another OFD or POSIX
// lock), OFDLockAt returns a [*LockedError]. Being an OFD lock, it belongs to
// the open file description, so closing some other fd of the same file in
// this process does not drop it (a classic POSIX lock would be dropped).
func OFDLockAt(dirfd int, dirPath, name string) (*Lock, error) {
	path := filepath.Join(dirPath, name)
	if err := nofollow.CheckName(name); err != nil || strings.Contains(name, "/") {
		return nil, fmt.Errorf("lock %s: %q is not a file name", path, name)
	}
	fd, err := openLockFile(dirfd, dirPath, name, unix.O_RDWR, ownerOfParent, ownerOfParent)
	if err != nil {
		return nil, err
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	err = eintr.Retry(func() error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk) })
	if err != nil {
		closeFD(fd, path)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, &LockedError{Path: path, Err: err}
		}
		return nil, &fs.PathError{Op: "fcntl F_OFD_SETLK", Path: path, Err: err}
	}
	return &Lock{path: path, kind: kindOFD, dirfd: -1, name: name, fd: fd}, nil
}

// ownerOfParent as uid and gid of openLockFile means: chown a created file
// to the owner of its parent directory.
const ownerOfParent = -2

// openLockFile opens name in dirfd with acc (O_RDONLY or O_RDWR) plus
// O_NOFOLLOW|O_NONBLOCK (a FIFO must not block), creating it 0644 with
// O_CREAT|O_EXCL if missing, and checks the opened fd with checkLockFile.
// A file it creates is chowned through its fd to uid:gid when running as
// root and uid is not -1 (ownerOfParent: dirfd's owner). A file that
// already exists keeps its owner.
func openLockFile(dirfd int, dirPath, name string, acc int, uid, gid int) (int, error) {
	path := filepath.Join(dirPath, name)
	flags := acc | unix.O_NONBLOCK
	for {
		fd, err := nofollow.Open(dirfd, dirPath, name, flags, 0)
		if err == nil {
			if err := checkLockFile(fd, path); err != nil {
				closeFD(fd, path)
				return -1, err
			}
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, err
		}
		fd, err = nofollow.Open(dirfd, dirPath, name, flags|unix.O_CREAT|unix.O_EXCL, 0o644)
		if errors.Is(err, unix.EEXIST) {
			continue // created by someone else just now: open theirs
		}
		if err != nil {
			return -1, fmt.Errorf("create lock file: %w", err)
		}
		if err := chownCreated(fd, dirfd, path, uid, gid); err != nil {
			closeFD(fd, path)
			return -1, err
		}
		return fd, nil
	}
}

// checkLockFile fstats the lock file open as fd: it must be a regular file
// (not a FIFO, socket or device someone planted) and have no second link
// (a hard link could make the lock file also a file outside the lock
// directory). A file with no link left was removed after we opened it: the
// double-stat sees that and retries.
func checkLockFile(fd int, path string) error {
	var st unix.Stat_t
	if err := eintr.Retry(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &fs.PathError{Op: "open lock file", Path: path,
			Err: fmt.Errorf("%w (%s)", nofollow.ErrNotRegular, nofollow.TypeName(st.Mode))}
	}
	if st.Nlink > 1 { // 0: removed meanwhile, which the double-stat handles
		return &fs.PathError{Op: "open lock file", Path: path,
			Err: fmt.Errorf("%w: %d hard links (a lock file has one)", ErrLinked, st.Nlink)}
	}
	return nil
}

// chownCreated gives the file just created as fd in dirfd to uid:gid when
// root (ownerOfParent: to the owner of dirfd).
func chownCreated(fd, dirfd int, path string, uid, gid int) error {
	if uid == -1 || os.Geteuid() != 0 {
		return nil
	}
	if uid == ownerOfParent {
		var st unix.Stat_t
		if err := eintr.Retry(func() error { return unix.Fstat(dirfd, &st) }); err != nil {
			return &fs.PathError{Op: "fstat", Path: filepath.Dir(path), Err: err}
		}
		uid, gid = int(st.Uid), int(st.Gid)
	}
	if err := eintr.Retry(func() error { return unix.Fchown(fd, uid, gid) }); err != nil {
		return &fs.PathError{Op: "fchown", Path: path, Err: err}
	}
	return nil
}

// sameFile is the double-stat: it reports whether name in dirfd (path, for
// messages) still names the file open as fd: fstat(fd) against
// fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW), same device and inode, and
// that file still linked.
func sameFile(fd, dirfd int, name, path string) (bool, error) {
	var fst, pst unix.Stat_t
	if err := eintr.Retry(func() error { return unix.Fstat(fd, &fst) }); err != nil {
		return false, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	err := eintr.Retry(func() error { return unix.Fstatat(dirfd, name, &pst, unix.AT_SYMLINK_NOFOLLOW) })
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return fst.Nlink > 0 && fst.Dev == pst.Dev && fst.Ino == pst.Ino, nil
}

func closeFD(fd int, path string) error {
	// close is not retried on EINTR: Linux has released the fd either way.
	if err := unix.Close(fd); err != nil {
		return &fs.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}
