package locking

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
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
// an OFD write lock (from [OFDLock] and [Dir.LockStore]). It owns an open
// file descriptor; the lock lasts until Unlock or RemoveAndUnlock, or until
// the process dies. Its methods are safe for concurrent use.
type Lock struct {
	sys  fsys.Syscalls // the seam it was taken through
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
		if err := l.sys.FcntlFlock(fd, unix.F_OFD_SETLK, &lk); err != nil {
			unlockErr = fsys.PathError("fcntl F_OFD_SETLK F_UNLCK", l.path, err)
		}
	} else {
		if err := l.sys.Flock(fd, unix.LOCK_UN); err != nil {
			unlockErr = fsys.PathError("flock LOCK_UN", l.path, err)
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
		rmErr = removeIfSame(l.sys, fd, l.dirfd, l.name, l.path)
	}
	return errors.Join(rmErr, l.release(fd))
}

// removeIfSame unlinks name in dirfd (path, for messages) if it still names
// the file open as fd.
func removeIfSame(sys fsys.Syscalls, fd, dirfd int, name, path string) error {
	same, err := sameFile(sys, fd, dirfd, name, path)
	if err != nil {
		return err
	}
	if !same {
		return fmt.Errorf("remove lock %s: %w", path, ErrReplaced)
	}
	if err := sys.Unlinkat(dirfd, name, 0); err != nil {
		return fsys.PathError("unlink", path, err)
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
//
// Its syscalls go through [fsys.Real].
func Flock(ctx context.Context, path string, mode Mode, timeout time.Duration) (*Lock, error) {
	f := newFlocker(fsys.Real{}, fsys.Keep)
	return f.lock(ctx, path, mode, timeout)
}

// openParent opens the directory holding path, by path, through sys and
// returns its fd, its path and the base name of path.
func openParent(sys fsys.Syscalls, path string) (int, string, string, error) {
	dir, name := filepath.Dir(path), filepath.Base(path)
	if name == "/" || name == "." || name == ".." {
		return -1, "", "", fmt.Errorf("lock %s: not a file name", path)
	}
	fd, err := sys.Openat(unix.AT_FDCWD, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", "", fsys.PathError("open", dir, err)
	}
	return fd, dir, name, nil
}

// flocker takes flocks. Its unexported knobs are for tests.
type flocker struct {
	sys   fsys.Syscalls
	owner fsys.Owner // of the lock files it creates (when Active)

	minPoll, maxPoll time.Duration // backoff bounds while waiting

	// Test hooks, nil in production: beforeFlock runs between opening the
	// file and each flock attempt on it, afterBusy after an attempt found the
	// lock held (n counts them from 1), afterReplaced after a double-stat
	// found the file replaced.
	beforeFlock   func()
	afterBusy     func(n int)
	afterReplaced func()
}

func newFlocker(sys fsys.Syscalls, owner fsys.Owner) flocker {
	return flocker{sys: sys, owner: owner, minPoll: time.Millisecond, maxPoll: 50 * time.Millisecond}
}

// lock is lockAt for a path whose directory is opened by path.
func (f *flocker) lock(ctx context.Context, path string, mode Mode, timeout time.Duration) (*Lock, error) {
	dirfd, dir, name, err := openParent(f.sys, path)
	if err != nil {
		return nil, err
	}
	return f.lockAt(ctx, dirfd, dir, name, mode, timeout)
}

// attempt is one lockAt call: the lock file it waits on and how long.
type attempt struct {
	f        *flocker
	ctx      context.Context
	dirfd    int
	dirPath  string
	name     string
	path     string
	how      int // LOCK_SH or LOCK_EX
	kind     kind
	timeout  time.Duration
	deadline time.Time // zero for a try-once attempt
	delay    time.Duration
	busy     int
	fd       int // the open lock file, -1 for none
}

// lockAt flocks name in the directory dirfd (whose path is dirPath, for
// messages). It takes ownership of dirfd: the returned Lock keeps it, and
// it is closed on error.
//
// Each round opens the file at path (or creates it) unless it holds it
// already, tries the flock, and on success double-stats; a busy lock or a
// replaced file is waited for with backoff until the timeout (see [Flock]).
func (f *flocker) lockAt(ctx context.Context, dirfd int, dirPath, name string, mode Mode, timeout time.Duration) (l *Lock, err error) {
	a := &attempt{f: f, ctx: ctx, dirfd: dirfd, dirPath: dirPath, name: name,
		path: filepath.Join(dirPath, name), timeout: timeout, delay: f.minPoll, fd: -1}
	defer a.cleanup(&l)
	if a.how, err = mode.how(); err != nil {
		return nil, fmt.Errorf("lock %s: %w", a.path, err)
	}
	a.kind = kindFlockShared
	if mode == Exclusive {
		a.kind = kindFlockExclusive
	}
	if ctx.Err() != nil {
		return nil, waitError(ctx, a.path)
	}
	if timeout > 0 {
		a.deadline = time.Now().Add(timeout)
	}
	for {
		l, done, err := a.round()
		if done || err != nil {
			return l, err
		}
	}
}

// cleanup closes what an attempt holds unless it made *l, which owns them.
func (a *attempt) cleanup(l **Lock) {
	if *l != nil {
		return
	}
	a.dropFile()
	closeFD(a.dirfd, a.dirPath)
}

// dropFile closes the lock file the attempt holds, if any.
func (a *attempt) dropFile() {
	if a.fd >= 0 {
		closeFD(a.fd, a.path)
		a.fd = -1
	}
}

// round opens the lock file if needed and tries the flock once. It returns
// the Lock when taken, done with an error when the attempt ends, and
// neither to go round again.
func (a *attempt) round() (*Lock, bool, error) {
	if a.fd < 0 {
		fd, err := openLockFile(a.f.sys, a.dirfd, a.dirPath, a.name, unix.O_RDONLY, ownedBy(a.f.owner))
		if err != nil {
			return nil, true, err
		}
		a.fd = fd
	}
	if a.f.beforeFlock != nil {
		a.f.beforeFlock()
	}
	err := a.f.sys.Flock(a.fd, a.how|unix.LOCK_NB)
	switch {
	case err == nil:
		return a.locked()
	case errors.Is(err, unix.EWOULDBLOCK):
		return nil, false, a.busyWait(err)
	default:
		return nil, true, fsys.PathError("flock", a.path, err)
	}
}

// locked is the double-stat after a successful flock: the Lock when the file
// is still at path, otherwise (someone removed it while holding the lock,
// and whoever holds the file there now must not share it with us) nil with
// the file dropped, to look again while there is time, or [ErrReplaced].
func (a *attempt) locked() (*Lock, bool, error) {
	same, err := sameFile(a.f.sys, a.fd, a.dirfd, a.name, a.path)
	if err != nil {
		return nil, true, err
	}
	if same {
		l := &Lock{sys: a.f.sys, path: a.path, kind: a.kind, dirfd: a.dirfd, name: a.name, fd: a.fd}
		a.fd = -1
		return l, true, nil
	}
	a.dropFile()
	if a.f.afterReplaced != nil {
		a.f.afterReplaced()
	}
	if a.timeout <= 0 || !time.Now().Before(a.deadline) {
		return nil, true, fmt.Errorf("lock %s: %w", a.path, ErrReplaced)
	}
	if a.ctx.Err() != nil {
		return nil, true, waitError(a.ctx, a.path)
	}
	return nil, false, nil
}

// busyWait handles a held lock (err is the EWOULDBLOCK): a [*LockedError]
// for a try-once attempt or when the timeout ran out, otherwise a sleep of
// the next backoff step, after dropping the file if it is no longer at path
// (the holder may have removed it and not released it yet: wait on the file
// at path then, not on the old one). It returns nil to go round again.
func (a *attempt) busyWait(err error) error {
	if a.timeout <= 0 {
		return &LockedError{Path: a.path, Err: fsys.Errno(err)}
	}
	left := time.Until(a.deadline)
	if left <= 0 {
		return &LockedError{Path: a.path, Err: fmt.Errorf("still held after %v: %w", a.timeout, fsys.Errno(err))}
	}
	same, err := sameFile(a.f.sys, a.fd, a.dirfd, a.name, a.path)
	if err != nil {
		return err
	}
	if !same {
		a.dropFile()
	}
	a.busy++
	if a.f.afterBusy != nil {
		a.f.afterBusy(a.busy)
	}
	if err := sleepCtx(a.ctx, min(a.delay, left)); err != nil {
		return waitError(a.ctx, a.path)
	}
	a.delay = min(2*a.delay, a.f.maxPoll)
	return nil
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

// lockFileOwner says who owns a lock file [openLockFile] creates.
type lockFileOwner struct {
	// owner is chowned to when it is [fsys.Owner.Active], unless likeParent.
	owner fsys.Owner
	// likeParent: as root, the owner of the directory the file is created
	// in (the store's .lock, which PBS daemons running as the owner of the
	// store must be able to open).
	likeParent bool
}

// ownedBy is the lockFileOwner for files chowned to o.
func ownedBy(o fsys.Owner) lockFileOwner { return lockFileOwner{owner: o} }

// ownedLikeParent is the lockFileOwner for files owned like their directory.
var ownedLikeParent = lockFileOwner{likeParent: true}

// openLockFile opens name in dirfd through sys with acc (O_RDONLY or O_RDWR)
// plus O_NOFOLLOW|O_NONBLOCK (a FIFO must not block), creating it 0644 with
// O_CREAT|O_EXCL if missing, and checks the opened fd with checkLockFile.
// A file it creates is chowned through its fd as owner says; a file that
// already exists keeps its owner.
func openLockFile(sys fsys.Syscalls, dirfd int, dirPath, name string, acc int, owner lockFileOwner) (int, error) {
	path := filepath.Join(dirPath, name)
	flags := acc | unix.O_NONBLOCK
	for {
		fd, err := openEntry(sys, dirfd, dirPath, name, flags, 0, false)
		if err == nil {
			if err := checkLockFile(sys, fd, path); err != nil {
				closeFD(fd, path)
				return -1, err
			}
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, err
		}
		fd, err = openEntry(sys, dirfd, dirPath, name, flags|unix.O_CREAT|unix.O_EXCL, 0o644, false)
		if errors.Is(err, unix.EEXIST) {
			continue // created by someone else just now: open theirs
		}
		if err != nil {
			return -1, fmt.Errorf("create lock file: %w", err)
		}
		if err := chownCreated(sys, fd, dirfd, path, owner); err != nil {
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
func checkLockFile(sys fsys.Syscalls, fd int, path string) error {
	var st unix.Stat_t
	if err := sys.Fstat(fd, &st); err != nil {
		return fsys.PathError("fstat", path, err)
	}
	return checkLockStat(&st, path)
}

// checkLockStat is checkLockFile's check of the stat st of the file at path.
func checkLockStat(st *unix.Stat_t, path string) error {
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

// chownCreated gives the file just created as fd in dirfd to owner (see
// lockFileOwner).
func chownCreated(sys fsys.Syscalls, fd, dirfd int, path string, owner lockFileOwner) error {
	o := owner.owner
	if owner.likeParent {
		var st unix.Stat_t
		if err := sys.Fstat(dirfd, &st); err != nil {
			return fsys.PathError("fstat", filepath.Dir(path), err)
		}
		o = fsys.OwnerOf(&st)
	}
	if err := o.Fchown(sys, fd); err != nil {
		return fsys.PathError("fchown", path, err)
	}
	return nil
}

// sameFile is the double-stat: it reports whether name in dirfd (path, for
// messages) still names the file open as fd: fstat(fd) against
// fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW), same device and inode, and
// that file still linked.
func sameFile(sys fsys.Syscalls, fd, dirfd int, name, path string) (bool, error) {
	var fst, pst unix.Stat_t
	if err := sys.Fstat(fd, &fst); err != nil {
		return false, fsys.PathError("fstat", path, err)
	}
	err := sys.Fstatat(dirfd, name, &pst, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fsys.PathError("stat", path, err)
	}
	return fst.Nlink > 0 && fst.Dev == pst.Dev && fst.Ino == pst.Ino, nil
}
