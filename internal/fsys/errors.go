package fsys

import (
	"errors"
	"io"
	"io/fs"
)

// Errno returns the cause of an error from the seam (the errno, or another
// cause) without the *fs.PathError that names the relative name; other
// errors are returned as they are.
func Errno(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	return err
}

// PathError returns err, an error of the seam or a bare errno, as an
// *fs.PathError of op on path: the caller's name for the step and the full
// path, in place of the seam's syscall name and relative name.
func PathError(op, path string, err error) error {
	return &fs.PathError{Op: op, Path: path, Err: Errno(err)}
}

// WriteAll writes p to fd through sys, however many writes it takes. A
// write that makes no progress is an *fs.PathError{Op: "write"} with
// io.ErrShortWrite; errors name no path (see [WithPath]).
func WriteAll(sys Syscalls, fd int, p []byte) error {
	for len(p) > 0 {
		n, err := sys.Write(fd, p)
		if err != nil {
			return err
		}
		if n <= 0 {
			return &fs.PathError{Op: "write", Err: io.ErrShortWrite}
		}
		p = p[n:]
	}
	return nil
}
