package datastore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/internal/eintr"
	"chunkgc/locking"
)

// ErrProtected is returned (wrapped) by [Forget] when the snapshot holds a
// .protected marker: PBS refuses to remove such a snapshot, and so do we.
var ErrProtected = errors.New("snapshot is protected")

// Names inside group and snapshot directories.
const (
	ownerName     = "owner"
	protectedName = ".protected"
)

// forgetHooks are test hooks of Forget; nil ones are not called.
type forgetHooks struct {
	// beforeGroupRemoval runs with the group's exclusive lock held, after
	// the group was found to hold no snapshot and before anything in it is
	// removed: where seed 000's TOCTOU window would be.
	beforeGroupRemoval func()
	// beforeRmdir runs after the owner file was unlinked, just before the
	// rmdir of the group directory.
	beforeRmdir func()
}

// Forget removes snapshot s from the store at base, and then its group if
// that was the group's last snapshot (SPEC §7.6).
//
// The snapshot: under its exclusive lock (try once: a reader or writer
// holding it makes Forget fail with an error matching [locking.ErrLocked]),
// a snapshot with a .protected marker is refused with [ErrProtected];
// otherwise its directory is removed recursively (a missing one gives an
// error matching fs.ErrNotExist), and the lock file is removed while still
// held ([locking.Lock.RemoveAndUnlock]).
//
// The group: see the package doc, "Removal". Forget keeps the group, without
// error, when its lock is held (a writer is at work in it), when it still
// holds a snapshot or anything but its owner file, and when rmdir finds it
// not empty (a snapshot arrived).
func Forget(ctx context.Context, base string, lk *locking.Dir, s Snapshot, log *zap.Logger) error {
	return forget(ctx, base, lk, s, log, forgetHooks{})
}

func forget(ctx context.Context, base string, lk *locking.Dir, s Snapshot, log *zap.Logger, hooks forgetHooks) error {
	if log == nil {
		log = zap.NewNop()
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("forget snapshot %s: %w", s.RelPath(), err)
	}
	log = log.With(zap.String("snapshot", s.RelPath()))
	if err := removeSnapshot(ctx, base, lk, s); err != nil {
		return err
	}
	log.Info("snapshot removed")
	if err := removeGroupIfEmpty(ctx, base, lk, s.Group, log, hooks); err != nil {
		return fmt.Errorf("forget snapshot %s: snapshot removed, but: %w", s.RelPath(), err)
	}
	return nil
}

// check validates the snapshot's group and time.
func (s Snapshot) check() error {
	if err := s.Group.check(); err != nil {
		return err
	}
	if s.Time.IsZero() {
		return errors.New("no snapshot time")
	}
	return nil
}

// removeSnapshot removes the snapshot directory and its lock file under the
// snapshot's exclusive lock.
func removeSnapshot(ctx context.Context, base string, lk *locking.Dir, s Snapshot) (err error) {
	dir := filepath.Join(base, s.RelPath())
	lock, err := lk.LockSnapshot(ctx, s.NS, s.Type, s.ID, s.TimeString(), locking.Exclusive, 0)
	if err != nil {
		return fmt.Errorf("forget snapshot %s: %w", dir, err)
	}
	removed := false
	defer func() {
		if uerr := release(lock, removed); uerr != nil {
			err = errors.Join(err, fmt.Errorf("forget snapshot %s: %w", dir, uerr))
		}
	}()
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		removed = true // nothing to remove, but the lock file we may just have created
		return fmt.Errorf("forget snapshot: %w", err)
	}
	if err != nil {
		return fmt.Errorf("forget snapshot: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("forget snapshot %s: not a directory (%s)", dir, fi.Mode().Type())
	}
	_, err = os.Lstat(filepath.Join(dir, protectedName))
	switch {
	case err == nil:
		return fmt.Errorf("forget snapshot %s: %w", dir, ErrProtected)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("forget snapshot %s: check protection: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("forget snapshot %s: %w", dir, err)
	}
	removed = true
	return nil
}

// removeGroupIfEmpty removes the directory of group g if it holds no
// snapshot any more.
//
// Reasoning (seed 000). Every cooperating writer takes the group's exclusive
// lock before it creates a snapshot, so under that lock no snapshot can
// arrive, and a listing that shows none stays true. But writers that do not
// share our lock directory (a PBS with other lock settings, a writer from
// before a reboot with old locking) can, so the listing is only a shortcut
// and the removal itself must be the check: rmdir, which fails with
// ENOTEMPTY when anything arrived, never a recursive delete.
//
// rmdir needs the directory empty, and a group holds its owner file. So:
// read owner, unlink it, rmdir. If rmdir fails, the group is kept and owner
// is put back with its old content and ownership, created O_EXCL so that an
// owner file a newcomer wrote in between is left alone. A non-cooperating
// writer can thus see the group without owner for the few microseconds
// between unlink and restore; it can never lose a snapshot. The alternative
// order, rmdir first, cannot work while owner is there, and renaming owner
// away to a hidden name would still leave the directory non-empty.
//
// The group's lock file is removed (while held) only when the directory is
// gone; a kept group keeps it.
func removeGroupIfEmpty(ctx context.Context, base string, lk *locking.Dir, g Group, log *zap.Logger, hooks forgetHooks) (err error) {
	gdir := filepath.Join(base, g.RelPath())
	lock, err := lk.LockGroup(ctx, g.NS, g.Type, g.ID, locking.Exclusive, 0)
	if errors.Is(err, locking.ErrLocked) || errors.Is(err, locking.ErrReplaced) {
		log.Info("group in use, not checking whether it is empty", zap.String("group", g.RelPath()), zap.Error(err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove empty group %s: %w", gdir, err)
	}
	removed := false
	defer func() {
		if uerr := release(lock, removed); uerr != nil {
			err = errors.Join(err, fmt.Errorf("remove empty group %s: %w", gdir, uerr))
		}
	}()

	snaps, err := ListSnapshots(base, g)
	if err != nil {
		return fmt.Errorf("remove empty group: %w", err)
	}
	if len(snaps) > 0 {
		return nil
	}
	// The type directory (vm, ct, host) holds the group; removals go
	// through its fd so that a renamed path cannot redirect them.
	typeDir := filepath.Dir(gdir)
	tfd, err := openDir(unix.AT_FDCWD, typeDir, typeDir)
	if errors.Is(err, unix.ENOENT) {
		removed = true // the group is gone already
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove empty group: %w", err)
	}
	defer unix.Close(tfd)
	gfd, err := openDir(tfd, g.ID, gdir)
	if errors.Is(err, unix.ENOENT) {
		removed = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove empty group: %w", err)
	}
	defer unix.Close(gfd)

	ents, err := readDirents(gfd, gdir, make([]byte, direntBufSize))
	if errors.Is(err, unix.ENOENT) {
		removed = true // removed after the open, by someone outside the lock protocol
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove empty group: %w", err)
	}
	for _, e := range ents {
		if e.name != ownerName {
			log.Info("group holds no snapshot but other entries, kept",
				zap.String("group", g.RelPath()), zap.String("entry", e.name))
			return nil
		}
	}

	if hooks.beforeGroupRemoval != nil {
		hooks.beforeGroupRemoval()
	}

	owner, err := takeOwnerFile(gfd, gdir)
	if err != nil {
		return fmt.Errorf("remove empty group: %w", err)
	}
	if hooks.beforeRmdir != nil {
		hooks.beforeRmdir()
	}
	err = eintr.Retry(func() error { return unix.Unlinkat(tfd, g.ID, unix.AT_REMOVEDIR) })
	switch {
	case err == nil:
		removed = true
		log.Info("removed empty group", zap.String("group", g.RelPath()))
		return nil
	case errors.Is(err, unix.ENOENT):
		removed = true
		return nil
	case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
		log.Info("group got new entries while being removed, kept", zap.String("group", g.RelPath()))
		if rerr := owner.restore(gfd); rerr != nil {
			return fmt.Errorf("keep group %s: %w", gdir, rerr)
		}
		return nil
	default:
		rmErr := &fs.PathError{Op: "rmdir", Path: gdir, Err: err}
		return fmt.Errorf("remove empty group: %w", errors.Join(rmErr, owner.restore(gfd)))
	}
}

// ownerFile is a group's owner file as it was before takeOwnerFile removed
// it.
type ownerFile struct {
	path     string
	present  bool
	data     []byte
	mode     uint32
	uid, gid int
}

// takeOwnerFile reads and unlinks the owner file of the group directory
// open as gfd. A missing owner file is not an error.
func takeOwnerFile(gfd int, gdir string) (ownerFile, error) {
	o := ownerFile{path: filepath.Join(gdir, ownerName)}
	fd, err := eintr.Retry2(func() (int, error) {
		return unix.Openat(gfd, ownerName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if errors.Is(err, unix.ENOENT) {
		return o, nil
	}
	if err != nil {
		return o, &fs.PathError{Op: "open", Path: o.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), o.path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return o, &fs.PathError{Op: "fstat", Path: o.path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return o, fmt.Errorf("%s: not a regular file", o.path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return o, fmt.Errorf("read owner: %w", err)
	}
	o.present, o.data = true, data
	o.mode, o.uid, o.gid = st.Mode&0o7777, int(st.Uid), int(st.Gid)
	err = eintr.Retry(func() error { return unix.Unlinkat(gfd, ownerName, 0) })
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return o, &fs.PathError{Op: "unlink", Path: o.path, Err: err}
	}
	return o, nil
}

// restore puts the owner file back into the group directory open as gfd,
// unless it was not there or someone created a new one meanwhile.
func (o ownerFile) restore(gfd int) error {
	if !o.present {
		return nil
	}
	fd, err := eintr.Retry2(func() (int, error) {
		return unix.Openat(gfd, ownerName, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, o.mode)
	})
	if errors.Is(err, unix.EEXIST) {
		return nil // a newcomer wrote its own
	}
	if err != nil {
		return fmt.Errorf("restore owner: %w", &fs.PathError{Op: "create", Path: o.path, Err: err})
	}
	f := os.NewFile(uintptr(fd), o.path)
	_, werr := f.Write(o.data)
	if werr == nil && os.Geteuid() == 0 {
		werr = f.Chown(o.uid, o.gid)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("restore owner: %w", werr)
	}
	return nil
}

// openDir opens directory name relative to dirfd without following a
// symlink; path names it in errors.
func openDir(dirfd int, name, path string) (int, error) {
	fd, err := eintr.Retry2(func() (int, error) {
		return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

// release drops a snapshot or group lock. The lock file goes only with what
// it guards: if the directory is still there, whoever removes it next needs
// the same lock file, so it stays.
func release(lock *locking.Lock, removed bool) error {
	if removed {
		return lock.RemoveAndUnlock()
	}
	return lock.Unlock()
}
