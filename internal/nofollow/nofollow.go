// Package nofollow opens files and directories below a directory file
// descriptor without ever following a symbolic link, so that a less
// privileged user who owns the tree (the backup user owns a datastore and
// its lock directory) cannot redirect a root process outside it, neither by
// planting a symlink nor by swapping one in while the process runs.
//
// # Resolution
//
// A name is a relative path of plain components ("ns/a/vm/100"): no
// leading "/", no ".", "..", or empty component. It is resolved from a
// directory fd:
//
//   - on Linux ≥ 5.6 with one openat2(2) call and RESOLVE_BENEATH |
//     RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: the kernel refuses a
//     symlink in any component, the last one included, and any escape;
//   - on older kernels (openat2 gives ENOSYS), component by component with
//     openat(2) and O_NOFOLLOW, each intermediate one O_DIRECTORY: the same
//     guarantee, one syscall per component.
//
// A symlink anywhere gives an error matching [ErrSymlink] whose
// *fs.PathError names the exact component that is one (found by a second,
// component-wise resolution, only on that error path).
//
// # The seam
//
// openat2 is not part of fsys.Syscalls, so [Open], [OpenDir] and [OpenFile]
// make their calls directly. [MkdirAll] and [Classify], whose callers hold
// a seam, make every call through the fsys.Syscalls they are given.
//
// # Files
//
// [OpenFile] opens regular files only, with O_NONBLOCK so that a FIFO or a
// device planted under a file's name cannot block the caller (and
// O_NOCTTY, so that a terminal cannot become a daemon's), and checks
// the opened file with fstat: anything but a regular file is closed again
// and reported as [ErrNotRegular]. O_NONBLOCK has no effect on regular
// files, so it is left set.
package nofollow

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"chunkgc/internal/eintr"
	"chunkgc/internal/fsys"
)

// ErrSymlink is matched by the error for a path with a symlink in it.
var ErrSymlink = errors.New("is a symbolic link (not followed)")

// ErrNotRegular is matched by the error of [OpenFile] for a file that is not
// a regular file (a FIFO, socket, device or directory).
var ErrNotRegular = errors.New("not a regular file")

// ErrNotDir is matched by the error for a component that must be a
// directory and is not (and is not a symlink either).
var ErrNotDir = errors.New("not a directory")

// ErrBadName is matched by the error for a name that is not a relative path
// of plain components.
var ErrBadName = errors.New("not a plain relative path")

// noOpenat2 is set once openat2 answered ENOSYS: the kernel predates it.
var noOpenat2 atomic.Bool

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// CheckName reports an error matching [ErrBadName] unless name is a relative
// path of plain components.
func CheckName(name string) error {
	if name == "" || name[0] == '/' {
		return fmt.Errorf("%q: %w", name, ErrBadName)
	}
	for c := range strings.SplitSeq(name, "/") {
		if c == "" || c == "." || c == ".." || strings.IndexByte(c, 0) >= 0 {
			return fmt.Errorf("%q: %w", name, ErrBadName)
		}
	}
	return nil
}

// join returns root/name for messages.
func join(root, name string) string {
	if root == "" {
		return name
	}
	if name == "" {
		return root
	}
	return strings.TrimSuffix(root, "/") + "/" + name
}

// Open opens name below the directory dirfd with flags (O_CLOEXEC and
// O_NOFOLLOW are added) and mode, following no symlink. root is the path of
// dirfd, used only in errors, which are *fs.PathError naming root/name (or
// the offending component).
func Open(dirfd int, root, name string, flags int, mode uint32) (int, error) {
	if err := CheckName(name); err != nil {
		return -1, &fs.PathError{Op: "open", Path: join(root, name), Err: err}
	}
	flags |= unix.O_CLOEXEC | unix.O_NOFOLLOW
	if !noOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolveFlags}
		if flags&(unix.O_CREAT|unix.O_TMPFILE) == 0 {
			how.Mode = 0 // openat2 refuses a mode without O_CREAT
		}
		fd, err := eintr.Retry2(func() (int, error) { return unix.Openat2(dirfd, name, &how) })
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			noOpenat2.Store(true)
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTDIR):
			// Name the component: resolve again step by step.
			return openSteps(dirfd, root, name, flags, mode)
		default:
			return -1, &fs.PathError{Op: "open", Path: join(root, name), Err: err}
		}
	}
	return openSteps(dirfd, root, name, flags, mode)
}

// openSteps resolves name one component at a time with O_NOFOLLOW.
func openSteps(dirfd int, root, name string, flags int, mode uint32) (int, error) {
	parts := strings.Split(name, "/")
	fd := dirfd
	closeFd := func() {
		if fd != dirfd {
			unix.Close(fd)
		}
	}
	for i, c := range parts {
		rel := strings.Join(parts[:i+1], "/")
		fl, m := flags, mode
		last := i == len(parts)-1
		if !last {
			fl, m = unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0
		}
		nfd, err := eintr.Retry2(func() (int, error) { return unix.Openat(fd, c, fl, m) })
		if err != nil {
			err = classify(fd, c, err, !last || fl&unix.O_DIRECTORY != 0)
			closeFd()
			return -1, &fs.PathError{Op: "open", Path: join(root, rel), Err: err}
		}
		closeFd()
		fd = nfd
	}
	return fd, nil
}

// Classify turns the error of an O_NOFOLLOW open of entry c of dirfd into
// [ErrSymlink] or [ErrNotDir] (wrapping the errno's meaning in the message)
// where the entry is a symlink or, when wantDir, not a directory; other
// errors are returned as they are. It is for callers that make the open
// themselves (through a seam, or with a name built without allocating); its
// one fstatat goes through sys.
func Classify(sys fsys.Syscalls, dirfd int, c string, err error, wantDir bool) error {
	if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
		return err
	}
	var st unix.Stat_t
	if sys.Fstatat(dirfd, c, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return err
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return ErrSymlink
	case wantDir && st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%w (%s)", ErrNotDir, TypeName(st.Mode))
	}
	return err
}

func classify(dirfd int, c string, err error, wantDir bool) error {
	return Classify(fsys.Real{}, dirfd, c, err, wantDir)
}

// OpenDir opens directory name below dirfd (O_RDONLY|O_DIRECTORY), following
// no symlink. A name that is not a directory matches [ErrNotDir].
func OpenDir(dirfd int, root, name string) (int, error) {
	fd, err := Open(dirfd, root, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		if pe, ok := errors.AsType[*fs.PathError](err); ok && errors.Is(pe.Err, unix.ENOTDIR) {
			pe.Err = ErrNotDir
		}
		return -1, err
	}
	return fd, nil
}

// OpenFile opens the regular file name below dirfd for reading (O_RDONLY,
// O_NONBLOCK), following no symlink; see the package doc. The *os.File is
// named root/name.
func OpenFile(dirfd int, root, name string) (*os.File, error) {
	return OpenFileFlags(dirfd, root, name, unix.O_RDONLY, 0)
}

// OpenFileFlags is OpenFile with other access flags (O_RDWR, O_CREAT, …);
// O_NONBLOCK and O_NOCTTY are always added.
func OpenFileFlags(dirfd int, root, name string, flags int, mode uint32) (*os.File, error) {
	path := join(root, name)
	fd, err := Open(dirfd, root, name, flags|unix.O_NONBLOCK|unix.O_NOCTTY, mode)
	if err != nil {
		return nil, err
	}
	if err := CheckRegular(fd, path); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// CheckRegular fstats fd and returns an *fs.PathError naming path and
// matching [ErrNotRegular] unless it is a regular file.
func CheckRegular(fd int, path string) error {
	var st unix.Stat_t
	if err := eintr.Retry(func() error { return unix.Fstat(fd, &st) }); err != nil {
		return &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, TypeName(st.Mode))}
	}
	return nil
}

// TypeName names the file type of a stat mode, for messages.
func TypeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}

// MkdirAll opens directory name (a relative path of plain components) below
// dirfd, whose path is root, creating each missing component with mode, and
// returns an fd of it. Every call goes through sys. Components it creates
// are chowned to owner through their fd when owner is [fsys.Owner.Active]
// (one that already exists keeps its owner). It follows no symlink: an
// existing component that is a symlink or not a directory is an error
// naming it.
func MkdirAll(sys fsys.Syscalls, dirfd int, root, name string, mode uint32, owner fsys.Owner) (int, error) {
	if err := CheckName(name); err != nil {
		return -1, &fs.PathError{Op: "mkdir", Path: join(root, name), Err: err}
	}
	parts := strings.Split(name, "/")
	fd := dirfd
	for i, c := range parts {
		nfd, err := mkdirOne(sys, fd, c, mode, owner)
		if fd != dirfd {
			unix.Close(fd)
		}
		if err != nil {
			return -1, &fs.PathError{Op: "mkdir", Path: join(root, strings.Join(parts[:i+1], "/")), Err: fsys.Errno(err)}
		}
		fd = nfd
	}
	return fd, nil
}

// mkdirOne opens directory c of dirfd, creating it if missing.
func mkdirOne(sys fsys.Syscalls, dirfd int, c string, mode uint32, owner fsys.Owner) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC | unix.O_NOFOLLOW
	for range 8 {
		fd, err := sys.Openat(dirfd, c, flags, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, Classify(sys, dirfd, c, fsys.Errno(err), true)
		}
		err = sys.Mkdirat(dirfd, c, mode)
		if errors.Is(err, unix.EEXIST) {
			continue // someone else made it: open theirs
		}
		if err != nil {
			return -1, err
		}
		fd, err = sys.Openat(dirfd, c, flags, 0)
		if err != nil {
			return -1, Classify(sys, dirfd, c, fsys.Errno(err), true)
		}
		if err := owner.Fchown(sys, fd); err != nil {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	}
	return -1, unix.ELOOP // created and removed again 8 times in a row
}
