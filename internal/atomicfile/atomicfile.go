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
// It is the one place the index writer, snapshot creation, .gc-status and
// the datastore config (package config) write files.
package atomicfile

import (
	"chunkgc/internal/fsys"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
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
func WriteAt(dirfd int, dirPath, name string, perm os.FileMode, owner fsys.Owner, fill func(f *os.File) error) (err error) {
	path := dirPath + "/" + name
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("write %s: invalid file name %q", path, name)
	}
	var f *os.File
	var tmp string
	for range 100 {
		tmp = name + ".tmp_" + strings.ToLower(rand.Text())[:12]
		fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", path, &fs.PathError{Op: "create", Path: dirPath + "/" + tmp, Err: err})
		}
		f = os.NewFile(uintptr(fd), dirPath+"/"+tmp)
		break
	}
	if f == nil {
		return fmt.Errorf("write %s: no free temporary name", path)
	}
	closed := false
	defer func() {
		if err != nil {
			if !closed {
				f.Close()
			}
			unix.Unlinkat(dirfd, tmp, 0)
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err := fill(f); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if owner.Active() {
		if err := f.Chown(owner.UID, owner.GID); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	closed = true
	if err := f.Close(); err != nil {
		return err
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, name); err != nil {
		return &fs.PathError{Op: "rename", Path: path, Err: err}
	}
	if err := unix.Fsync(dirfd); err != nil {
		return &fs.PathError{Op: "fsync", Path: dirPath, Err: err}
	}
	return nil
}

// WriteBytesAt is WriteAt with fixed content.
func WriteBytesAt(dirfd int, dirPath, name string, data []byte, perm os.FileMode, owner fsys.Owner) error {
	return WriteAt(dirfd, dirPath, name, perm, owner, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}
