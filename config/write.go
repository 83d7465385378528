package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"chunkgc/internal/atomicfile"
	"chunkgc/internal/fsys"
)

// mode is the permission of a config file [File.WriteFile] writes: root
// writes it, the owner's group (the backup group) reads it.
const mode fs.FileMode = 0o640

// WriteFile replaces the config file at path atomically with
// [atomicfile.Write]: a temporary file in the same directory, written,
// chmod 0640, chowned to owner when [fsys.Owner.Active], fsynced, then
// renamed over path, and the directory fsynced; on error no temporary file
// is left behind. The parent directory is created (0755) when missing.
//
// When path is a symlink, even a dangling one, the file it points to is
// written and the link stays, so a PBS /etc/proxmox-backup that is a link
// (or holds one) keeps its layout.
func (f *File) WriteFile(path string, owner fsys.Owner) error {
	target, err := followLinks(path)
	if err != nil {
		return fmt.Errorf("write datastore config %s: %w", target, err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("write datastore config %s: %w", target, err)
	}
	if err := atomicfile.WriteBytes(target, f.Bytes(), mode, owner); err != nil {
		return fmt.Errorf("write datastore config %s: %w", target, err)
	}
	return nil
}

// followLinks returns the file a chain of symlinks at path ends in, which
// need not exist; path itself when it is not a symlink.
func followLinks(path string) (string, error) {
	for range 40 {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return path, nil // a missing file is created, other errors show later
		}
		target, err := os.Readlink(path)
		if err != nil {
			return path, err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	return path, &fs.PathError{Op: "readlink", Path: path, Err: syscall.ELOOP}
}
