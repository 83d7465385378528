package nofollow

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// ErrTooLarge is matched by the error of [ReadAll] for a file longer than
// its limit.
var ErrTooLarge = errors.New("larger than the limit")

// ReadAll reads f to its end, but never more than limit bytes: a longer
// file (a planted multi-gigabyte "status" or "config") is an error naming
// f and matching [ErrTooLarge], read no further than limit+1 bytes.
func ReadAll(f *os.File, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	if len(b) > limit {
		return nil, &fs.PathError{Op: "read", Path: f.Name(), Err: fmt.Errorf("%w of %d bytes", ErrTooLarge, limit)}
	}
	return b, nil
}

// ReadFile reads the regular file name below dirfd, opened as [OpenFile]
// opens it (no symlink followed, O_NONBLOCK), at most limit bytes
// ([ReadAll]). A missing file gives an error matching fs.ErrNotExist.
func ReadFile(dirfd int, root, name string, limit int) ([]byte, error) {
	f, err := OpenFile(dirfd, root, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f, limit)
}

// ReadFileIn is [ReadFile] below the directory dir, itself opened as a
// path (the operator names it, so a symlink in it is followed).
func ReadFileIn(dir, name string, limit int) ([]byte, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(dfd)
	return ReadFile(dfd, dir, name, limit)
}
