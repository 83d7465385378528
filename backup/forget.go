package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/datastore"
	"chunkgc/internal/fsys"
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

// Forget removes snapshot s from the store's tree, and then its group if
// that was the group's last snapshot (SPEC §7.6). Every syscall on the tree
// goes through the tree's seam ([datastore.Tree.Syscalls]).
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
// symlink (or not a directory) is an error matching
// [datastore.ErrUnexpectedEntry] that names it, and nothing is removed.
// Inside the snapshot, entries are removed by name relative to their
// directory's fd (unlinkat), so a symlink planted there is removed itself,
// never what it points to.
//
// The group: see the package doc, "Forget". Forget keeps the group, without
// error, when its lock is held (a writer is at work in it), when it still
// holds a snapshot or anything but its owner file, and when rmdir finds it
// not empty (a snapshot arrived).
func Forget(ctx context.Context, tree *datastore.Tree, lk *locking.Dir, s datastore.Snapshot, log *zap.Logger) error {
	return forget(ctx, tree, lk, s, nil, log, forgetHooks{})
}

// ForgetS3 is [Forget] in an S3 datastore whose local cache tree is: as
// PBS removes a snapshot, under the snapshot's lock and after the
// protection check it first deletes every object below
// <store>/.cnt/<snapshot>/ (listed, so also what PBS uploaded there), and
// only then the local directory (a failed delete keeps it); a group it
// removes loses its <store>/.cnt/<group>/owner object too, under the
// group's lock. A .cnt/ index left behind would reference chunks a later
// GC deletes.
func ForgetS3(ctx context.Context, tree *datastore.Tree, lk *locking.Dir, s datastore.Snapshot, s3 *S3Target, log *zap.Logger) error {
	return forget(ctx, tree, lk, s, s3, log, forgetHooks{})
}

// forget is Forget with test hooks: check, remove the snapshot, remove the
// group if that left it empty; s3 nil for a filesystem datastore.
func forget(ctx context.Context, tree *datastore.Tree, lk *locking.Dir, s datastore.Snapshot, s3 *S3Target, log *zap.Logger, hooks forgetHooks) error {
	if log == nil {
		log = zap.NewNop()
	}
	if err := s.Check(); err != nil {
		return fmt.Errorf("forget snapshot %s: %w", s.RelPath(), err)
	}
	log = log.With(zap.String("snapshot", s.RelPath()))
	if err := removeSnapshot(ctx, tree, lk, s, s3); err != nil {
		return err
	}
	log.Info("snapshot removed")
	if err := removeGroupIfEmpty(ctx, tree, lk, s.Group, s3, log, hooks); err != nil {
		return fmt.Errorf("forget snapshot %s: snapshot removed, but: %w", s.RelPath(), err)
	}
	return nil
}

// removeSnapshot removes the snapshot directory and its lock file under the
// snapshot's exclusive lock.
func removeSnapshot(ctx context.Context, tree *datastore.Tree, lk *locking.Dir, s datastore.Snapshot, s3 *S3Target) (err error) {
	dir := tree.Path(s.RelPath())
	lock, err := lk.LockSnapshot(ctx, s.NS, s.Type, s.ID, s.TimeString(), locking.Exclusive, 0)
	if err != nil {
		return fmt.Errorf("forget snapshot %s: %w", dir, err)
	}
	return whileLocked(lock, "forget snapshot "+dir, func() (bool, error) {
		gone, err := removeLockedSnapshot(ctx, tree, s, s3)
		if err != nil {
			return gone, fmt.Errorf("forget snapshot %s: %w", dir, err)
		}
		return gone, nil
	})
}

// removeLockedSnapshot removes the snapshot directory, unless it is
// protected; the caller holds the snapshot's lock. gone reports whether the
// directory is gone afterwards (removed, or missing, which is an error
// matching fs.ErrNotExist all the same).
func removeLockedSnapshot(ctx context.Context, tree *datastore.Tree, s datastore.Snapshot, s3 *S3Target) (gone bool, err error) {
	sys, dir := tree.Syscalls(), tree.Path(s.RelPath())
	gfd, err := tree.OpenDir(s.Group.RelPath())
	if err != nil {
		return errors.Is(err, fs.ErrNotExist), err
	}
	defer unix.Close(gfd)
	sfd, err := tree.OpenSubdir(gfd, s.RelPath())
	if err != nil {
		return errors.Is(err, fs.ErrNotExist), err
	}
	defer unix.Close(sfd)
	var st unix.Stat_t
	err = sys.Fstatat(sfd, protectedName, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		return false, ErrProtected
	case !errors.Is(err, unix.ENOENT):
		return false, fmt.Errorf("check protection: %w", fsys.WithPath(err, dir+"/"+protectedName))
	}
	if err := s3.deletePrefix(ctx, s.RelPath()+"/"); err != nil {
		return false, err
	}
	if err := removeDir(sys, gfd, s.TimeString(), sfd, dir); err != nil {
		return false, err
	}
	return true, nil
}

// removeGroupIfEmpty removes the directory of group g if it holds no
// snapshot any more, under the group's exclusive lock, taken try-once: a
// group whose lock is held is in use and stays. The group's lock file is
// removed (while held) only when the directory is gone; a kept group keeps
// it.
func removeGroupIfEmpty(ctx context.Context, tree *datastore.Tree, lk *locking.Dir, g datastore.Group, s3 *S3Target, log *zap.Logger, hooks forgetHooks) (err error) {
	gdir := tree.Path(g.RelPath())
	lock, err := lk.LockGroup(ctx, g.NS, g.Type, g.ID, locking.Exclusive, 0)
	if errors.Is(err, locking.ErrLocked) || errors.Is(err, locking.ErrReplaced) {
		log.Info("group in use, not checking whether it is empty", zap.String("group", g.RelPath()), zap.Error(err))
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove empty group %s: %w", gdir, err)
	}
	return whileLocked(lock, "remove empty group "+gdir, func() (bool, error) {
		gone, err := removeLockedGroup(tree, g, log, hooks)
		if err == nil && gone {
			err = s3.deleteOwner(ctx, g)
		}
		return gone, err
	})
}

// removeLockedGroup removes the directory of group g if it holds nothing
// but its owner file; the caller holds the group's lock. gone reports
// whether the directory is gone afterwards.
//
// Reasoning (seed 000). Every cooperating writer takes the group's exclusive
// lock before it creates a snapshot, so under that lock no snapshot can
// arrive, and a listing that shows none stays true. But writers that do not
// share our lock directory (a PBS with other lock settings, a writer from
// before a reboot with old locking) can, so the listing is only a shortcut
// and the removal itself must be the check: rmdir, which fails with
// ENOTEMPTY when anything arrived, never a recursive delete (see
// [groupDir.remove]).
func removeLockedGroup(tree *datastore.Tree, g datastore.Group, log *zap.Logger, hooks forgetHooks) (gone bool, err error) {
	d, err := openGroup(tree, g)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil // the group is gone already
	}
	if err != nil {
		return false, fmt.Errorf("remove empty group: %w", err)
	}
	defer d.close()
	other, err := d.otherEntry()
	if errors.Is(err, unix.ENOENT) {
		return true, nil // removed after the open, by someone outside the lock protocol
	}
	if err != nil {
		return false, fmt.Errorf("remove empty group: %w", err)
	}
	if other != "" {
		log.Info("group holds no snapshot but other entries, kept", zap.String("group", g.RelPath()), zap.String("entry", other))
		return false, nil
	}
	if hooks.beforeGroupRemoval != nil {
		hooks.beforeGroupRemoval()
	}
	return d.remove(log, hooks)
}

// groupDir is a group directory held open for its removal: the fds of its
// type directory (vm, ct, host), through which the rmdir goes so that a
// renamed path cannot redirect it, and of the group directory itself.
type groupDir struct {
	sys  fsys.Syscalls
	g    datastore.Group
	path string
	tfd  int
	gfd  int
}

// openGroup opens the type directory of g from the tree's fd and the group
// directory from that, neither following a symlink. A missing one matches
// fs.ErrNotExist.
func openGroup(tree *datastore.Tree, g datastore.Group) (*groupDir, error) {
	typeRel := g.Type
	if !g.NS.IsRoot() {
		typeRel = g.NS.RelPath() + "/" + g.Type
	}
	tfd, err := tree.OpenDir(typeRel)
	if err != nil {
		return nil, err
	}
	gfd, err := tree.OpenSubdir(tfd, g.RelPath())
	if err != nil {
		unix.Close(tfd)
		return nil, err
	}
	return &groupDir{sys: tree.Syscalls(), g: g, path: tree.Path(g.RelPath()), tfd: tfd, gfd: gfd}, nil
}

func (d *groupDir) close() {
	unix.Close(d.gfd)
	unix.Close(d.tfd)
}

// errStopListing stops a listing that found what it looked for.
var errStopListing = errors.New("stop listing")

// otherEntry returns the first entry of the group directory, in directory
// order, that is not its owner file (a snapshot above all), or "" if there
// is none. A group directory removed after its open gives ENOENT.
func (d *groupDir) otherEntry() (string, error) {
	var other string
	err := fsys.ReadDirents(d.sys, d.gfd, func() string { return d.path }, make([]byte, direntBufSize), func(name []byte, _ uint8) error {
		if string(name) != ownerName {
			other = string(name)
			return errStopListing
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopListing) {
		return "", err
	}
	return other, nil
}

// remove removes the group directory, which the caller found to hold its
// owner file only, by rmdir: rmdir needs the directory empty, so owner is
// read and unlinked first. If rmdir fails, the group is kept and owner is
// put back with its old content and ownership, created O_EXCL so that an
// owner file a newcomer wrote in between is left alone. A non-cooperating
// writer can thus see the group without owner for the few microseconds
// between unlink and restore; it can never lose a snapshot. The alternative
// order, rmdir first, cannot work while owner is there, and renaming owner
// away to a hidden name would still leave the directory non-empty.
func (d *groupDir) remove(log *zap.Logger, hooks forgetHooks) (gone bool, err error) {
	owner, err := takeOwnerFile(d.sys, d.gfd, d.path)
	if err != nil {
		return false, fmt.Errorf("remove empty group: %w", err)
	}
	if hooks.beforeRmdir != nil {
		hooks.beforeRmdir()
	}
	err = d.sys.Unlinkat(d.tfd, d.g.ID, unix.AT_REMOVEDIR)
	switch {
	case err == nil:
		log.Info("removed empty group", zap.String("group", d.g.RelPath()))
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return true, nil
	case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
		log.Info("group got new entries while being removed, kept", zap.String("group", d.g.RelPath()))
		if rerr := owner.restore(d.sys, d.gfd); rerr != nil {
			return false, fmt.Errorf("keep group %s: %w", d.path, rerr)
		}
		return false, nil
	default:
		return false, fmt.Errorf("remove empty group: %w", errors.Join(fsys.WithPath(err, d.path), owner.restore(d.sys, d.gfd)))
	}
}

// ownerFile is a group's owner file as it was before takeOwnerFile removed
// it.
type ownerFile struct {
	path    string
	present bool
	data    []byte
	mode    uint32
	owner   fsys.Owner
}

// maxOwnerSize bounds the owner file takeOwnerFile reads back: it holds a
// user or token id, a few dozen bytes.
const maxOwnerSize = 64 << 10

// takeOwnerFile reads and unlinks the owner file of the group directory
// open as gfd (at gdir). A missing owner file is not an error; one that is
// a symlink or not a regular file (opened O_NONBLOCK, so a FIFO cannot
// block) is an error naming it, and so is one larger than maxOwnerSize.
func takeOwnerFile(sys fsys.Syscalls, gfd int, gdir string) (ownerFile, error) {
	o := ownerFile{path: gdir + "/" + ownerName}
	f, err := nofollow.OpenFile(gfd, gdir, ownerName)
	if errors.Is(err, fs.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return o, datastore.Doubt(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := sys.Fstatat(int(f.Fd()), "", &st, unix.AT_EMPTY_PATH); err != nil {
		return o, fsys.WithPath(err, o.path)
	}
	data, err := nofollow.ReadAll(f, maxOwnerSize)
	if err != nil {
		return o, fmt.Errorf("owner file, not an owner: %w", err)
	}
	o.present, o.data, o.mode, o.owner = true, data, st.Mode&0o7777, fsys.OwnerOf(&st)
	err = sys.Unlinkat(gfd, ownerName, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return o, fsys.WithPath(err, o.path)
	}
	return o, nil
}

// restore puts the owner file back into the group directory open as gfd,
// with its old content, mode and (when [fsys.Owner.Active]) owner, unless
// it was not there or someone created a new one meanwhile.
func (o ownerFile) restore(sys fsys.Syscalls, gfd int) error {
	if !o.present {
		return nil
	}
	fd, err := sys.Openat(gfd, ownerName, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, o.mode)
	if errors.Is(err, unix.EEXIST) {
		return nil // a newcomer wrote its own
	}
	if err != nil {
		return fmt.Errorf("restore owner: %w", fsys.WithPath(err, o.path))
	}
	werr := fsys.WriteAll(sys, fd, o.data)
	if werr == nil {
		werr = o.owner.Fchown(sys, fd)
	}
	if werr == nil {
		werr = sys.Fsync(fd)
	}
	if cerr := unix.Close(fd); werr == nil && cerr != nil {
		werr = &fs.PathError{Op: "close", Err: cerr}
	}
	if werr != nil {
		return fmt.Errorf("restore owner: %w", fsys.WithPath(werr, o.path))
	}
	return nil
}

// whileLocked runs remove, which reports whether the directory it removes
// is gone, under lock and then releases lock with [release]; what names the
// step in an error of the release, which joins remove's.
func whileLocked(lock *locking.Lock, what string, remove func() (gone bool, err error)) (err error) {
	gone := false
	defer func() {
		if uerr := release(lock, gone); uerr != nil {
			err = errors.Join(err, fmt.Errorf("%s: %w", what, uerr))
		}
	}()
	gone, err = remove()
	return err
}

// release drops a snapshot or group lock. The lock file goes only with what
// it guards: if the directory is still there, whoever removes it next needs
// the same lock file, so it stays.
func release(lock *locking.Lock, gone bool) error {
	if gone {
		return lock.RemoveAndUnlock()
	}
	return lock.Unlock()
}
