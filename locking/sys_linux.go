package locking

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

// This file holds the few steps every part of the package makes through its
// seam, an [fsys.Syscalls]: opening one entry of a held directory fd without
// following a symlink, creating a directory path below one, closing.

// errnoOf returns the errno (or other cause) of an error from the seam,
// without the *fs.PathError that names the relative name.
func errnoOf(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// pathError is the *fs.PathError of op on path for an error from the seam.
func pathError(op, path string, err error) error {
	return &fs.PathError{Op: op, Path: path, Err: errnoOf(err)}
}

// openEntry opens entry name (one plain component) of dirfd, whose path is
// dirPath, with flags plus O_CLOEXEC|O_NOFOLLOW, through sys. A symlink
// gives an error matching [nofollow.ErrSymlink], and with wantDir a
// non-directory one matching [nofollow.ErrNotDir]; errors are
// *fs.PathError{Op: "open"} naming dirPath/name, as nofollow.Open's.
func openEntry(sys fsys.Syscalls, dirfd int, dirPath, name string, flags int, mode uint32, wantDir bool) (int, error) {
	fd, err := sys.Openat(dirfd, name, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, mode)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: filepath.Join(dirPath, name), Err: classify(sys, dirfd, name, errnoOf(err), wantDir)}
	}
	return fd, nil
}

// openDirEntry opens directory name of dirfd (O_RDONLY|O_DIRECTORY) as
// openEntry does.
func openDirEntry(sys fsys.Syscalls, dirfd int, dirPath, name string) (int, error) {
	return openEntry(sys, dirfd, dirPath, name, unix.O_RDONLY|unix.O_DIRECTORY, 0, true)
}

// classify turns errno, the error of an O_NOFOLLOW open of entry c of
// dirfd, into [nofollow.ErrSymlink] or (when wantDir) [nofollow.ErrNotDir]
// where the entry is a symlink or not a directory, as nofollow does, but
// with the fstatat through sys.
func classify(sys fsys.Syscalls, dirfd int, c string, errno error, wantDir bool) error {
	if !errors.Is(errno, unix.ELOOP) && !errors.Is(errno, unix.ENOTDIR) {
		return errno
	}
	var st unix.Stat_t
	if sys.Fstatat(dirfd, c, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return errno
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return nofollow.ErrSymlink
	case wantDir && st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%w (%s)", nofollow.ErrNotDir, nofollow.TypeName(st.Mode))
	}
	return errno
}

// mkdirAll opens directory name (a relative path of plain components) below
// dirfd, whose path is root, creating each missing component with mode, and
// returns an fd of it: nofollow.MkdirAll through sys. Components it creates
// are chowned to owner through their fd when owner is [fsys.Owner.Active]
// (one that already exists keeps its owner). It follows no symlink: an
// existing component that is a symlink or not a directory is an error
// naming it.
func mkdirAll(sys fsys.Syscalls, dirfd int, root, name string, mode uint32, owner fsys.Owner) (int, error) {
	if err := nofollow.CheckName(name); err != nil {
		return -1, &fs.PathError{Op: "mkdir", Path: filepath.Join(root, name), Err: err}
	}
	parts := strings.Split(name, "/")
	fd := dirfd
	for i, c := range parts {
		nfd, err := mkdirOne(sys, fd, c, mode, owner)
		if fd != dirfd {
			unix.Close(fd)
		}
		if err != nil {
			return -1, &fs.PathError{Op: "mkdir", Path: filepath.Join(root, strings.Join(parts[:i+1], "/")), Err: err}
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
			return -1, classify(sys, dirfd, c, errnoOf(err), true)
		}
		err = sys.Mkdirat(dirfd, c, mode)
		if errors.Is(err, unix.EEXIST) {
			continue // someone else made it: open theirs
		}
		if err != nil {
			return -1, errnoOf(err)
		}
		fd, err = sys.Openat(dirfd, c, flags, 0)
		if err != nil {
			return -1, classify(sys, dirfd, c, errnoOf(err), true)
		}
		if err := owner.Fchown(sys, fd); err != nil {
			unix.Close(fd)
			return -1, errnoOf(err)
		}
		return fd, nil
	}
	return -1, unix.ELOOP // created and removed again 8 times in a row
}

// closeFD closes fd; an error names path. close(2) is not part of the seam
// (as in chunkstore): it is not retried on EINTR, Linux has released the fd
// either way.
func closeFD(fd int, path string) error {
	if err := unix.Close(fd); err != nil {
		return &fs.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

// orReal returns sys, or fsys.Real when it is nil.
func orReal(sys fsys.Syscalls) fsys.Syscalls {
	if sys == nil {
		return fsys.Real{}
	}
	return sys
}
