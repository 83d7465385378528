package locking

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/eintr"
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
	return errors.Join(unlockErr, closeFD(fd, l.path))
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
		rmErr = removeIfSame(fd, l.path)
	}
	return errors.Join(rmErr, l.release(fd))
}

// removeIfSame unlinks path if it still names the file open as fd.
func removeIfSame(fd int, path string) error {
	same, err := sameFile(fd, path)
	if err != nil {
		return err
	}
	if !same {
		return fmt.Errorf("remove lock %s: %w", path, ErrReplaced)
	}
	if err := eintr.Retry(func() error { return unix.Unlink(path) }); err != nil {
		return &fs.PathError{Op: "unlink", Path: path, Err: err}
	}
	return nil
}

// Flock opens path (creating it 0644 if missing; O_CLOEXEC, O_NOFOLLOW) and
// takes a flock on it in mode.
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

func (f *flocker) lock(ctx context.Context, path string, mode Mode, timeout time.Duration) (*Lock, error) {
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
			if fd, err = openLockFile(path, unix.O_RDONLY, f.uid, f.gid); err != nil {
				return nil, err
			}
		}
		if f.beforeFlock != nil {
			f.beforeFlock()
		}
		err := eintr.Retry(func() error { return unix.Flock(fd, how|unix.LOCK_NB) })
		switch {
		case err == nil:
			same, err := sameFile(fd, path)
			if err != nil {
				return nil, err
			}
			if same {
				k := kindFlockShared
				if mode == Exclusive {
					k = kindFlockExclusive
				}
				l := &Lock{path: path, kind: k, fd: fd}
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
			same, err := sameFile(fd, path)
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
// file) on path, the store's <base>/.lock, opening it read-write and creating
// it if missing (0644; when running as root, owned like its parent directory,
// so that PBS daemons running as the backup user can still open it).
//
// The lock conflicts with the classic POSIX read locks PBS daemons hold on
// .lock during a backup: if any process holds one (or another OFD or POSIX
// lock), OFDLock returns a [*LockedError]. Being an OFD lock, it belongs to
// the open file description, so closing some other fd of the same file in
// this process does not drop it (a classic POSIX lock would be dropped).
func OFDLock(path string) (*Lock, error) {
	fd, err := openLockFile(path, unix.O_RDWR, ownerOfParent, ownerOfParent)
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
	return &Lock{path: path, kind: kindOFD, fd: fd}, nil
}

// ownerOfParent as uid and gid of openLockFile means: chown a created file
// to the owner of its parent directory.
const ownerOfParent = -2

// openLockFile opens path with acc (O_RDONLY or O_RDWR), creating it 0644
// if missing. A file it creates is chowned to uid:gid when running as root
// and uid is not -1 (ownerOfParent: the parent directory's owner). A file
// that already exists keeps its owner.
func openLockFile(path string, acc int, uid, gid int) (int, error) {
	const flags = unix.O_CLOEXEC | unix.O_NOFOLLOW
	for {
		fd, err := eintr.Retry2(func() (int, error) { return unix.Open(path, acc|flags, 0) })
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		fd, err = eintr.Retry2(func() (int, error) { return unix.Open(path, acc|flags|unix.O_CREAT|unix.O_EXCL, 0o644) })
		if errors.Is(err, unix.EEXIST) {
			continue // created by someone else just now: open theirs
		}
		if err != nil {
			return -1, &fs.PathError{Op: "create", Path: path, Err: err}
		}
		if err := chownCreated(fd, path, uid, gid); err != nil {
			closeFD(fd, path)
			return -1, err
		}
		return fd, nil
	}
}

// chownCreated gives the file just created as fd to uid:gid when root.
func chownCreated(fd int, path string, uid, gid int) error {
	if uid == -1 || os.Geteuid() != 0 {
		return nil
	}
	if uid == ownerOfParent {
		var st unix.Stat_t
		dir := filepath.Dir(path)
		if err := eintr.Retry(func() error { return unix.Stat(dir, &st) }); err != nil {
			return &fs.PathError{Op: "stat", Path: dir, Err: err}
		}
		uid, gid = int(st.Uid), int(st.Gid)
	}
	if err := eintr.Retry(func() error { return unix.Fchown(fd, uid, gid) }); err != nil {
		return &fs.PathError{Op: "fchown", Path: path, Err: err}
	}
	return nil
}

// sameFile is the double-stat: it reports whether path still names the file
// open as fd (same device and inode, and that file still linked).
func sameFile(fd int, path string) (bool, error) {
	var fst, pst unix.Stat_t
	if err := eintr.Retry(func() error { return unix.Fstat(fd, &fst) }); err != nil {
		return false, &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	err := eintr.Retry(func() error { return unix.Fstatat(unix.AT_FDCWD, path, &pst, unix.AT_SYMLINK_NOFOLLOW) })
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
