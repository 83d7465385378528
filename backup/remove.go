package backup

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
)

// direntBufSize is the getdents buffer: 8 KiB, as os.File.ReadDir uses.
const direntBufSize = 8 << 10

// maxRemoveDepth bounds the directory nesting removeContents descends: a
// snapshot holds files, and at most a few directory levels (PBS has none).
const maxRemoveDepth = 64

// removeDir empties the directory open as fd (at path), which is entry name
// of the directory open as parentFD, and removes it from parentFD. A
// directory that is gone by the rmdir is fine.
func removeDir(sys fsys.Syscalls, parentFD int, name string, fd int, path string) error {
	if err := removeContents(sys, fd, path, 0); err != nil {
		return err
	}
	err := sys.Unlinkat(parentFD, name, unix.AT_REMOVEDIR)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fsys.WithPath(err, path)
	}
	return nil
}

// removeContents removes everything in the directory open as fd (at path,
// for messages), by name relative to fd: files and symlinks with unlinkat,
// directories by opening them with O_NOFOLLOW, emptying them the same way
// and unlinkat(AT_REMOVEDIR). It never follows a symlink: a symlink is a
// name to unlink, wherever it points. An entry that vanishes meanwhile is
// fine; one swapped for a symlink between the unlink that said EISDIR and
// the open is unlinked on the next round.
func removeContents(sys fsys.Syscalls, fd int, path string, depth int) error {
	if depth > maxRemoveDepth {
		return fmt.Errorf("remove %s: directories nested deeper than %d levels", path, maxRemoveDepth)
	}
	// List in full first: removing entries while getdents walks the
	// directory may skip some.
	names, err := fsys.ReadNames(sys, fd, path)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := removeEntry(sys, fd, path, name, depth); err != nil {
			return err
		}
	}
	return nil
}

// removeEntry removes entry name of the directory open as fd (at path).
func removeEntry(sys fsys.Syscalls, fd int, path, name string, depth int) error {
	p := path + "/" + name
	for range 8 {
		err := sys.Unlinkat(fd, name, 0)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case !errors.Is(err, unix.EISDIR):
			return fsys.WithPath(err, p)
		}
		cfd, err := sys.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			continue // no directory any more: unlink it as a name
		case err != nil:
			return fsys.WithPath(err, p)
		}
		err = removeContents(sys, cfd, p, depth+1)
		unix.Close(cfd)
		if err != nil {
			return err
		}
		err = sys.Unlinkat(fd, name, unix.AT_REMOVEDIR)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.ENOTDIR):
			continue // swapped for a non-directory meanwhile
		default:
			return fsys.WithPath(err, p)
		}
	}
	return fmt.Errorf("remove %s: it keeps changing type", p)
}
