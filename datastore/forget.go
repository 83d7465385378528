package datastore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/internal/eintr"
	"chunkgc/internal/nofollow"
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
// that was the group's last snapshot (SPEC §7.6). It is [Tree.Forget] on
// the tree of base.
func Forget(ctx context.Context, base string, lk *locking.Dir, s Snapshot, log *zap.Logger) error {
	return forget(ctx, base, lk, s, log, forgetHooks{})
}

func forget(ctx context.Context, base string, lk *locking.Dir, s Snapshot, log *zap.Logger, hooks forgetHooks) error {
	t, err := OpenTree(base)
	if err != nil {
		return fmt.Errorf("forget snapshot %s: %w", s.RelPath(), err)
	}
	defer t.Close()
	return t.forget(ctx, lk, s, log, hooks)
}

// Forget removes snapshot s from the tree, and then its group if that was
// the group's last snapshot (SPEC §7.6).
//
// The snapshot: under its exclusive lock (try once: a reader or writer
// holding it makes Forget fail with an error matching [locking.ErrLocked]),
// a snapshot with a .protected marker is refused with [ErrProtected];
// otherwise its directory is removed recursively (a missing one gives an
// error matching fs.ErrNotExist), and the lock file is removed while still
// held ([locking.Lock.RemoveAndUnlock]).
//
// Everything goes through directory fds opened without following a
// symlink: a namespace, type, group or snapshot component that is a
// symlink (or not a directory) is an error matching [ErrUnexpectedEntry]
// that names it, and nothing is removed. Inside the snapshot, entries are
// removed by name relative to their directory's fd (unlinkat), so a
// symlink planted there is removed itself, never what it points to.
//
// The group: see the package doc, "Removal". Forget keeps the group, without
// error, when its lock is held (a writer is at work in it), when it still
// holds a snapshot or anything but its owner file, and when rmdir finds it
// not empty (a snapshot arrived).
func (t *Tree) Forget(ctx context.Context, lk *locking.Dir, s Snapshot, log *zap.Logger) error {
	return t.forget(ctx, lk, s, log, forgetHooks{})
}

func (t *Tree) forget(ctx context.Context, lk *locking.Dir, s Snapshot, log *zap.Logger, hooks forgetHooks) error {
	if log == nil {
		log = zap.NewNop()
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("forget snapshot %s: %w", s.RelPath(), err)
	}
	log = log.With(zap.String("snapshot", s.RelPath()))
	if err := t.removeSnapshot(ctx, lk, s); err != nil {
		return err
	}
	log.Info("snapshot removed")
	if err := t.removeGroupIfEmpty(ctx, lk, s.Group, log, hooks); err != nil {
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
func (t *Tree) removeSnapshot(ctx context.Context, lk *locking.Dir, s Snapshot) (err error) {
	dir := t.path(s.RelPath())
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
	gfd, err := t.openDir(s.Group.RelPath())
	if errors.Is(err, fs.ErrNotExist) {
		removed = true // nothing to remove, but the lock file we may just have created
		return fmt.Errorf("forget snapshot %s: %w", dir, err)
	}
	if err != nil {
		return fmt.Errorf("forget snapshot %s: %w", dir, err)
	}
	defer unix.Close(gfd)
	sfd, err := openSubdir(gfd, s.TimeString(), dir, wantSnapshot)
	if errors.Is(err, fs.ErrNotExist) {
		removed = true
		return fmt.Errorf("forget snapshot: %w", err)
	}
	if err != nil {
		return fmt.Errorf("forget snapshot: %w", err)
	}
	defer unix.Close(sfd)
	var st unix.Stat_t
	err = eintr.Retry(func() error { return unix.Fstatat(sfd, protectedName, &st, unix.AT_SYMLINK_NOFOLLOW) })
	switch {
	case err == nil:
		return fmt.Errorf("forget snapshot %s: %w", dir, ErrProtected)
	case !errors.Is(err, unix.ENOENT):
		return fmt.Errorf("forget snapshot %s: check protection: %w", dir, &fs.PathError{Op: "fstatat", Path: dir + "/" + protectedName, Err: err})
	}
	if err := removeContents(sfd, dir, 0); err != nil {
		return fmt.Errorf("forget snapshot %s: %w", dir, err)
	}
	err = eintr.Retry(func() error { return unix.Unlinkat(gfd, s.TimeString(), unix.AT_REMOVEDIR) })
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("forget snapshot: %w", &fs.PathError{Op: "rmdir", Path: dir, Err: err})
	}
	removed = true
	return nil
}

// maxRemoveDepth bounds the directory nesting removeContents descends: a
// snapshot holds files, and at most a few directory levels (PBS has none).
const maxRemoveDepth = 64

// removeContents removes everything in the directory open as fd (at path,
// for messages), by name relative to fd: files and symlinks with unlinkat,
// directories by opening them with O_NOFOLLOW, emptying them the same way
// and unlinkat(AT_REMOVEDIR). It never follows a symlink: a symlink is a
// name to unlink, wherever it points. An entry that vanishes meanwhile is
// fine; one swapped for a symlink between the unlink that said EISDIR and
// the open is unlinked on the next round.
func removeContents(fd int, path string, depth int) error {
	if depth > maxRemoveDepth {
		return fmt.Errorf("remove %s: directories nested deeper than %d levels", path, maxRemoveDepth)
	}
	ents, err := readDirents(fd, path, make([]byte, direntBufSize))
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := removeEntry(fd, path, e.name, depth); err != nil {
			return err
		}
	}
	return nil
}

// removeEntry removes entry name of the directory open as fd (at path).
func removeEntry(fd int, path, name string, depth int) error {
	p := path + "/" + name
	for range 8 {
		err := eintr.Retry(func() error { return unix.Unlinkat(fd, name, 0) })
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case !errors.Is(err, unix.EISDIR):
			return &fs.PathError{Op: "unlink", Path: p, Err: err}
		}
		cfd, err := eintr.Retry2(func() (int, error) {
			return unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		})
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			continue // no directory any more: unlink it as a name
		case err != nil:
			return &fs.PathError{Op: "open", Path: p, Err: err}
		}
		err = removeContents(cfd, p, depth+1)
		unix.Close(cfd)
		if err != nil {
			return err
		}
		err = eintr.Retry(func() error { return unix.Unlinkat(fd, name, unix.AT_REMOVEDIR) })
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.ENOTDIR):
			continue // swapped for a non-directory meanwhile
		default:
			return &fs.PathError{Op: "rmdir", Path: p, Err: err}
		}
	}
	return fmt.Errorf("remove %s: it keeps changing type", p)
}

// openSubdir opens directory name of the directory open as dirfd (path
// names it, for messages) without following a symlink. A missing one
// matches fs.ErrNotExist; one that is a symlink or no directory is an
// error matching [ErrUnexpectedEntry], saying the tree expects want.
func openSubdir(dirfd int, name, path, want string) (int, error) {
	fd, err := eintr.Retry2(func() (int, error) {
		return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err == nil {
		return fd, nil
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		var st unix.Stat_t
		if serr := eintr.Retry(func() error { return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) }); serr == nil {
			typ := dtype(st.Mode)
			if typ == unix.DT_DIR { // swapped back: it was no directory at the open
				typ = dtOther
				if errors.Is(err, unix.ELOOP) {
					typ = unix.DT_LNK
				}
			}
			return -1, unexpected("open", path, typ, want)
		}
	}
	return -1, &fs.PathError{Op: "open", Path: path, Err: err}
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
// The type directory and the group directory are opened from the tree's fd
// without following a symlink, and every removal is relative to them.
//
// The group's lock file is removed (while held) only when the directory is
// gone; a kept group keeps it.
func (t *Tree) removeGroupIfEmpty(ctx context.Context, lk *locking.Dir, g Group, log *zap.Logger, hooks forgetHooks) (err error) {
	gdir := t.path(g.RelPath())
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

	// The type directory (vm, ct, host) holds the group; removals go
	// through its fd so that a renamed path cannot redirect them.
	tfd, err := t.openDir(relJoin(g.NS.RelPath(), g.Type))
	if errors.Is(err, fs.ErrNotExist) {
		removed = true // the group is gone already
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove empty group: %w", err)
	}
	defer unix.Close(tfd)
	gfd, err := openSubdir(tfd, g.ID, gdir, wantGroup)
	if errors.Is(err, fs.ErrNotExist) {
		removed = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove empty group: %w", err)
	}
	defer unix.Close(gfd)

	// Under the lock, any entry but owner (a snapshot above all) keeps the
	// group: the shortcut. rmdir below is the check.
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

// maxOwnerSize bounds the owner file takeOwnerFile reads back: it holds a
// user or token id, a few dozen bytes.
const maxOwnerSize = 64 << 10

// takeOwnerFile reads and unlinks the owner file of the group directory
// open as gfd. A missing owner file is not an error; one that is a symlink
// or not a regular file (opened O_NONBLOCK, so a FIFO cannot block) is an
// error naming it, and so is one larger than maxOwnerSize.
func takeOwnerFile(gfd int, gdir string) (ownerFile, error) {
	o := ownerFile{path: gdir + "/" + ownerName}
	f, err := nofollow.OpenFile(gfd, gdir, ownerName)
	if errors.Is(err, fs.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return o, doubt(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return o, &fs.PathError{Op: "fstat", Path: o.path, Err: err}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxOwnerSize+1))
	if err != nil {
		return o, fmt.Errorf("read owner: %w", err)
	}
	if len(data) > maxOwnerSize {
		return o, fmt.Errorf("owner file %s: larger than %d bytes, not an owner", o.path, maxOwnerSize)
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

// release drops a snapshot or group lock. The lock file goes only with what
// it guards: if the directory is still there, whoever removes it next needs
// the same lock file, so it stays.
func release(lock *locking.Lock, removed bool) error {
	if removed {
		return lock.RemoveAndUnlock()
	}
	return lock.Unlock()
}
