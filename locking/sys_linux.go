package locking

import (
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

// This file holds the few steps every part of the package makes through its
// seam, an [fsys.Syscalls]: opening one entry of a held directory fd without
// following a symlink, closing.

// openEntry opens entry name (one plain component) of dirfd, whose path is
// dirPath, with flags plus O_CLOEXEC|O_NOFOLLOW, through sys. A symlink
// gives an error matching [nofollow.ErrSymlink], and with wantDir a
// non-directory one matching [nofollow.ErrNotDir]; errors are
// *fs.PathError{Op: "open"} naming dirPath/name, as nofollow.Open's.
func openEntry(sys fsys.Syscalls, dirfd int, dirPath, name string, flags int, mode uint32, wantDir bool) (int, error) {
	fd, err := sys.Openat(dirfd, name, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, mode)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: filepath.Join(dirPath, name), Err: nofollow.Classify(sys, dirfd, name, fsys.Errno(err), wantDir)}
	}
	return fd, nil
}

// openDirEntry opens directory name of dirfd (O_RDONLY|O_DIRECTORY) as
// openEntry does.
func openDirEntry(sys fsys.Syscalls, dirfd int, dirPath, name string) (int, error) {
	return openEntry(sys, dirfd, dirPath, name, unix.O_RDONLY|unix.O_DIRECTORY, 0, true)
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

// closeOwnFD closes *fd, the descriptor of the lock root or dir (what) at
// path, and sets it to -1: a second call returns an error matching
// fs.ErrClosed.
func closeOwnFD(fd *int, what, path string) error {
	if *fd < 0 {
		return fmt.Errorf("close %s %s: %w", what, path, fs.ErrClosed)
	}
	f := *fd
	*fd = -1
	return closeFD(f, path)
}
