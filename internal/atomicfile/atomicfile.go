// Package atomicfile replaces a file so that a reader, or a crash, sees the
// old content or the new one, never a mix.
//
// # Protocol
//
// A temporary file <name>.tmp_<random> is created in the target's directory
// and filled; then chmod, chown (when asked), fsync, close, rename over the
// target, fsync of the directory. On any error the temporary file is
// removed. Temporary names end in ".tmp_<random>", so they never carry the
// suffix of an index (.fidx/.didx) and GC's walk does not take them for one.
//
// # Syscall seam
//
// [WriteAtSys] and [WriteBytesAtSys] make the calls of the protocol through
// an [fsys.Syscalls], so that a test can fail a precise one of them (the
// fsync of the temporary file, the rename) as it fails the calls of GC's
// mark and sweep; GC writes .gc-status so, through the store's seam. The
// openat of the temporary file, its fchmod, fchown and fsync, the renameat,
// the fsync of the directory and the unlinkat of a temporary file left by
// a failure go through the seam; so does the write of the content for
// WriteBytesAtSys. A fill callback writes through the *os.File, whose
// writes, like its close, are the os package's, outside the seam. The other
// functions use [fsys.Real], and Write and WriteBytes resolve the directory
// by path with x/sys directly.
//
// It is the one place the index writer, snapshot creation, .gc-status and
// the datastore config (package config) write files.
package atomicfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
)

// Write atomically replaces path with what fill writes into the open
// temporary file (which fill must not close). Errors name path. The
// directory is resolved as a path; the file is replaced as [WriteAt] does.
func Write(path string, perm os.FileMode, owner fsys.Owner, fill func(f *os.File) error) error {
	dir, name := filepath.Split(path)
	dir = filepath.Clean(dir)
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, &fs.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(dfd)
	return WriteAt(dfd, dir, name, perm, owner, fill)
}

// WriteBytes is Write with fixed content.
func WriteBytes(path string, data []byte, perm os.FileMode, owner fsys.Owner) error {
	return Write(path, perm, owner, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// SyncDir fsyncs a directory, making a rename or create in it durable.
func SyncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// WriteAt is Write for the file name in the directory open as dirfd (at
// dirPath, for errors), for directories a less privileged user may change
// while the caller works: the temporary file is created there with
// O_CREAT|O_EXCL|O_NOFOLLOW and renamed with renameat, so nothing is
// resolved through a path or a symlink. name must be a plain file name.
// Its syscalls are [fsys.Real]'s; [WriteAtSys] takes another seam.
func WriteAt(dirfd int, dirPath, name string, perm os.FileMode, owner fsys.Owner, fill func(f *os.File) error) error {
	return WriteAtSys(fsys.Real{}, dirfd, dirPath, name, perm, owner, fill)
}

// WriteBytesAt is WriteAt with fixed content.
func WriteBytesAt(dirfd int, dirPath, name string, data []byte, perm os.FileMode, owner fsys.Owner) error {
	return WriteBytesAtSys(fsys.Real{}, dirfd, dirPath, name, data, perm, owner)
}

// WriteAtSys is [WriteAt] with every step of the protocol but fill's
// writes and the close made through sys: the openat of the temporary
// file, its fchmod, fchown and fsync, the renameat, the fsync of the
// directory and, on failure, the unlinkat of the temporary file. fill
// writes through the *os.File, which does not go through sys; use
// [WriteBytesAtSys] to have the content written through sys as well.
func WriteAtSys(sys fsys.Syscalls, dirfd int, dirPath, name string, perm os.FileMode, owner fsys.Owner, fill func(f *os.File) error) error {
	return writeAt(sys, dirfd, dirPath, name, perm, owner, func(_ int, f *os.File) error { return fill(f) })
}

// WriteBytesAtSys is [WriteBytesAt] through sys: every syscall of the
// protocol, the write(2) of data included, goes through sys.
func WriteBytesAtSys(sys fsys.Syscalls, dirfd int, dirPath, name string, data []byte, perm os.FileMode, owner fsys.Owner) error {
	return writeAt(sys, dirfd, dirPath, name, perm, owner, func(fd int, f *os.File) error {
		return fsys.WithPath(fsys.WriteAll(sys, fd, data), f.Name())
	})
}

// writeAt is the protocol; fill gets the temporary file's fd and its
// *os.File, which owns the fd.
func writeAt(sys fsys.Syscalls, dirfd int, dirPath, name string, perm os.FileMode, owner fsys.Owner, fill func(fd int, f *os.File) error) (err error) {
	path := dirPath + "/" + name
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("write %s: invalid file name %q", path, name)
	}
	fd := -1
	var tmp string
	for range 100 {
		tmp = name + ".tmp_" + strings.ToLower(rand.Text())[:12]
		fd, err = sys.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", path, fsys.PathError("create", dirPath+"/"+tmp, err))
		}
		break
	}
	if fd < 0 {
		return fmt.Errorf("write %s: no free temporary name", path)
	}
	tmpPath := dirPath + "/" + tmp
	f := os.NewFile(uintptr(fd), tmpPath)
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				f.Close()
			}
			sys.Unlinkat(dirfd, tmp, 0)
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err := fill(fd, f); err != nil {
		return err
	}
	if err := sys.Fchmod(fd, uint32(perm.Perm())); err != nil { // perm's permission bits only
		return fsys.PathError("chmod", tmpPath, err)
	}
	if err := owner.Fchown(sys, fd); err != nil {
		return fsys.PathError("chown", tmpPath, err)
	}
	if err := sys.Fsync(fd); err != nil {
		return fsys.PathError("sync", tmpPath, err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return err
	}
	if err := sys.Renameat(dirfd, tmp, dirfd, name, 0); err != nil {
		return fsys.PathError("rename", path, err)
	}
	if err := sys.Fsync(dirfd); err != nil {
		return fsys.PathError("fsync", dirPath, err)
	}
	return nil
}
