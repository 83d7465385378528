package locking

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

// DefaultRoot is the default lock root: it holds one lock directory per
// store, <DefaultRoot>/<store> (tmpfs-backed /run).
const DefaultRoot = "/run/chunkgc/locks"

// PBSRoot is the lock root of PBS ≥ 3.4. PBS creates it (and its parent
// /run/proxmox-backup) owned by the backup user; it is the one lock root
// [OpenRoot] accepts although root does not own it (see the package doc,
// "No escape").
const PBSRoot = "/run/proxmox-backup/locks"

// ErrUnsafeRoot is returned by [OpenRoot] (and [OpenDir]) when the process
// runs as root and the lock root, or the directory holding it, is owned by
// another user or writable by group or others, so that someone other than
// root could rename, replace or fill it. The error names the directory and
// the command that fixes it. The PBS layout ([PBSRoot]) is exempt.
var ErrUnsafeRoot = errors.New("unsafe lock root: users other than root can change it")

// Root is an open lock root: the directory that holds one lock directory
// per store. It keeps an O_DIRECTORY file descriptor of the root, opened
// without following a symlink in its last component, and every store
// directory is opened relative to that fd. See the package doc.
type Root struct {
	sys  fsys.Syscalls
	path string
	fd   int
	// pbsOwner is the owner of an accepted backup-owned PBS root, -1 for a
	// root-owned (or not checked) one.
	pbsOwner int
}

// RootOptions are the options of [OpenRootWith] and [OpenDirWith]. The zero
// RootOptions is what [OpenRoot] and [OpenDir] use.
type RootOptions struct {
	// Syscalls is the seam every syscall on the lock root, its lock
	// directories and their lock files goes through (close(2) aside),
	// including those of the Dirs, Locks and Writers made from the root
	// (nil: [fsys.Real]). Tests set it to a wrapper that fails a precise
	// call.
	Syscalls fsys.Syscalls
}

// OpenRoot opens the lock root path, creating it and its missing parents
// (0755; as root, root:root 0755 whatever the umask).
//
// The parents of path are resolved like any path (they are root's, above
// the lock tree: /run); the last component is opened relative to its
// parent with O_NOFOLLOW|O_DIRECTORY, and it is the opened fds that are
// checked, not the path. When running as root, the root must be owned by
// root and not writable by group or others, and so must its parent (a
// sticky parent such as /tmp may be writable by others); otherwise OpenRoot
// fails with an error matching [ErrUnsafeRoot] that names the directory and
// the fix. The exception is exactly the PBS layout: path [PBSRoot], owned by
// one non-root user, not writable by group or others, in a parent owned by
// root or that user and not writable by group or others. As another user,
// no ownership is checked: such a process cannot be led to do anything its
// user could not do anyway.
//
// Its syscalls go through [fsys.Real]; [OpenRootWith] takes another seam.
func OpenRoot(path string) (*Root, error) { return OpenRootWith(path, RootOptions{}) }

// OpenRootWith is [OpenRoot] with options.
func OpenRootWith(path string, opts RootOptions) (*Root, error) {
	sys := fsys.OrReal(opts.Syscalls)
	if path == "" {
		return nil, errors.New("open lock root: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open lock root %s: %w", path, err)
	}
	if abs == "/" {
		return nil, errors.New("open lock root: / cannot be a lock root")
	}
	// asRoot is not an [fsys.Owner] check: it asks whether the process is
	// root, whose lock tree (and what it creates above it) must be
	// changeable by root only; another user's is its own business.
	asRoot := os.Geteuid() == 0
	parent, name := filepath.Dir(abs), filepath.Base(abs)
	if err := mkdirParents(sys, parent, asRoot); err != nil {
		return nil, fmt.Errorf("open lock root %s: %w", abs, err)
	}
	pfd, err := sys.Openat(unix.AT_FDCWD, parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open lock root %s: %w", abs, fsys.PathError("open", parent, err))
	}
	defer unix.Close(pfd)
	var pst unix.Stat_t
	if err := sys.Fstat(pfd, &pst); err != nil {
		return nil, fmt.Errorf("open lock root %s: %w", abs, fsys.PathError("fstat", parent, err))
	}
	if asRoot && abs != PBSRoot && !trustedParent(&pst) {
		// Refuse before creating anything in it.
		return nil, unsafeDir(abs, parent, &pst)
	}
	fd, created, err := mkdirAt(sys, pfd, parent, name)
	if err != nil {
		return nil, fmt.Errorf("open lock root %s: %w", abs, err)
	}
	r := &Root{sys: sys, path: abs, fd: fd, pbsOwner: -1}
	if asRoot {
		if created {
			// Exactly 0755 whatever the umask: backup-user writers must be
			// able to reach their store's directory.
			if err := sys.Fchmod(fd, 0o755); err != nil {
				r.Close()
				return nil, fmt.Errorf("open lock root %s: %w", abs, fsys.PathError("fchmod", abs, err))
			}
		}
		if err := r.check(&pst, parent); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// trustedParent reports whether a lock root's parent with stat pst can be
// changed by root only: owned by root and not writable by group or others,
// or sticky (like /tmp: others may add entries but not rename or remove
// root's).
func trustedParent(pst *unix.Stat_t) bool {
	return pst.Uid == 0 && (pst.Mode&0o022 == 0 || pst.Mode&unix.S_ISVTX != 0)
}

// check validates, through the root's fd and the parent's fstat pst, the
// ownership and modes of the root and of its parent.
func (r *Root) check(pst *unix.Stat_t, parent string) error {
	var st unix.Stat_t
	if err := r.sys.Fstat(r.fd, &st); err != nil {
		return fmt.Errorf("open lock root %s: %w", r.path, fsys.PathError("fstat", r.path, err))
	}
	if r.path == PBSRoot && st.Uid != 0 && st.Mode&0o022 == 0 &&
		(pst.Uid == 0 || pst.Uid == st.Uid) && pst.Mode&0o022 == 0 {
		r.pbsOwner = int(st.Uid)
		return nil
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		return unsafeDir(r.path, r.path, &st)
	}
	if !trustedParent(pst) {
		return unsafeDir(r.path, parent, pst)
	}
	return nil
}

// unsafeDir is the ErrUnsafeRoot error for dir (the root or its parent).
func unsafeDir(root, dir string, st *unix.Stat_t) error {
	return fmt.Errorf("lock root %s: %s is owned by %d:%d with mode %04o: %w "+
		"(as root, chunkgc needs a lock root and parent owned by root and not writable by group or others; "+
		"fix: chown root:root %s && chmod 0755 %s)",
		root, dir, st.Uid, st.Gid, st.Mode&0o7777, ErrUnsafeRoot, shellQuote(dir), shellQuote(dir))
}

// shellQuote quotes s for a shell command line when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// mkdirParents creates directory p and its missing parents by path (they
// are above the lock root), 0755, through sys; as root, what it creates is
// made exactly 0755 whatever the umask.
func mkdirParents(sys fsys.Syscalls, p string, asRoot bool) error {
	var st unix.Stat_t
	err := sys.Fstatat(unix.AT_FDCWD, p, &st, 0)
	if err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return &fs.PathError{Op: "mkdir", Path: p, Err: unix.ENOTDIR}
		}
		return nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return fsys.PathError("stat", p, err)
	}
	if parent := filepath.Dir(p); parent != p {
		if err := mkdirParents(sys, parent, asRoot); err != nil {
			return err
		}
	}
	err = sys.Mkdirat(unix.AT_FDCWD, p, 0o755)
	if errors.Is(err, unix.EEXIST) {
		return mkdirParents(sys, p, asRoot) // someone else made it: check it is a directory
	}
	if err != nil {
		return fsys.PathError("mkdir", p, err)
	}
	if asRoot {
		if err := sys.Fchmodat(unix.AT_FDCWD, p, 0o755); err != nil {
			return fsys.PathError("chmod", p, err)
		}
	}
	return nil
}

// mkdirAt opens directory name of dirfd (O_NOFOLLOW), creating it 0755 if
// missing, and reports whether it created it.
func mkdirAt(sys fsys.Syscalls, dirfd int, dirPath, name string) (fd int, created bool, err error) {
	for range 8 {
		dfd, oerr := openDirEntry(sys, dirfd, dirPath, name)
		if oerr == nil {
			return dfd, created, nil
		}
		if !errors.Is(oerr, unix.ENOENT) {
			return -1, false, oerr
		}
		err = sys.Mkdirat(dirfd, name, 0o755)
		switch {
		case err == nil:
			created = true
		case errors.Is(err, unix.EEXIST):
			created = false
		default:
			return -1, false, fsys.PathError("mkdir", filepath.Join(dirPath, name), err)
		}
	}
	return -1, false, &fs.PathError{Op: "mkdir", Path: filepath.Join(dirPath, name), Err: unix.ELOOP}
}

// Path returns the lock root's path (absolute, clean).
func (r *Root) Path() string { return r.path }

// Store opens (creating it if missing) the lock directory of the store
// named name, <root>/<name>, and its writer registry <root>/<name>/writers,
// relative to the root's fd without following a symlink. name must be one
// plain path component. When owner is [fsys.Owner.Active] (running as root
// and owner.UID >= 0), the store directory and everything the [Dir] creates
// in it, now or later, is chowned to owner (GID -1 leaves the group)
// through its fd; existing entries keep their owner. As another user, or
// with [fsys.Keep], ownership is left alone.
//
// In an accepted PBS root (see [OpenRoot]) owned by another user than
// owner, Store fails: PBS and chunkgc would disagree on who owns the lock
// tree.
func (r *Root) Store(name string, owner fsys.Owner) (*Dir, error) {
	path := filepath.Join(r.path, name)
	if err := nofollow.CheckName(name); err != nil || strings.Contains(name, "/") {
		return nil, fmt.Errorf("open lock dir %s: store name %q is not one plain path component", path, name)
	}
	if r.fd < 0 {
		return nil, fmt.Errorf("open lock dir %s: %w", path, fs.ErrClosed)
	}
	if !owner.Active() {
		owner = fsys.Keep
	}
	if r.pbsOwner >= 0 && owner.UID >= 0 && owner.UID != r.pbsOwner {
		return nil, fmt.Errorf("open lock dir %s: PBS lock root %s is owned by uid %d, not by the store owner %d", path, r.path, r.pbsOwner, owner.UID)
	}
	fd, err := nofollow.MkdirAll(r.sys, r.fd, r.path, name, 0o755, owner)
	if err != nil {
		return nil, fmt.Errorf("open lock dir %s: %w", path, err)
	}
	d := &Dir{sys: r.sys, path: path, fd: fd, owner: owner, fl: newFlocker(r.sys, owner)}
	wfd, err := nofollow.MkdirAll(r.sys, fd, path, writersDir, 0o755, owner)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("open lock dir %s: %w", path, err)
	}
	unix.Close(wfd)
	return d, nil
}

// Close closes the root's file descriptor. [Dir]s opened from it stay
// usable. A second call returns an error matching fs.ErrClosed.
func (r *Root) Close() error {
	return closeOwnFD(&r.fd, "lock root", r.path)
}
