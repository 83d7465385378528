package fsys

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"
)

// ReadNames lists the directory open as fd (at path, for errors) in full
// into a slice of names, with [ReadDirents] and a buffer of 8 KiB (as
// os.File.ReadDir uses): for callers that act on the entries after the
// listing, since removing or renaming them while getdents walks the
// directory may skip some.
func ReadNames(sys Syscalls, fd int, path string) ([]string, error) {
	var names []string
	err := ReadDirents(sys, fd, func() string { return path }, make([]byte, 8<<10), func(name []byte, _ uint8) error {
		names = append(names, string(name))
		return nil
	})
	return names, err
}

// ReadDirents lists the directory open as fd from its current offset with
// getdents64 into buf and calls fn with the name and d_type (unix.DT_*) of
// every entry but "." and "..", in directory order. It parses the records
// itself (unix.ParseDirent drops d_type) and does not allocate: name aliases
// buf and is valid only during the call of fn. d_type may be DT_UNKNOWN on
// some filesystems.
//
// path builds the directory's path, and is called only for an error.
// Errors from getdents, and a malformed record (EIO), are *fs.PathError with
// Op "getdents64" naming path(); an error from fn stops the listing and is
// returned as is.
func ReadDirents(sys Syscalls, fd int, path func() string, buf []byte, fn func(name []byte, dtype uint8) error) error {
	for {
		n, err := sys.Getdents(fd, buf)
		if err != nil {
			return WithPath(err, path())
		}
		if n <= 0 {
			return nil
		}
		if err := ParseDirents(buf[:n], fn); err != nil {
			if err == errBadDirent {
				return &fs.PathError{Op: "getdents64", Path: path(), Err: unix.EIO}
			}
			return err
		}
	}
}

// errBadDirent is the error ParseDirents returns for a malformed record.
var errBadDirent = &fs.PathError{Op: "getdents64", Err: unix.EIO}

// ParseDirents calls fn for every record of a getdents64 reply b but deleted
// entries, "." and "..". A record that is too short or runs past the end of b
// is an *fs.PathError{Op: "getdents64", Err: EIO} without a path; an error
// from fn is returned as is.
func ParseDirents(b []byte, fn func(name []byte, dtype uint8) error) error {
	// struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
	const (
		reclenOff = 16
		typeOff   = 18
		nameOff   = 19
	)
	for off := 0; off < len(b); {
		if off+nameOff > len(b) {
			return errBadDirent
		}
		reclen := int(binary.NativeEndian.Uint16(b[off+reclenOff:]))
		if reclen < nameOff || off+reclen > len(b) {
			return errBadDirent
		}
		rec := b[off : off+reclen]
		off += reclen
		if binary.NativeEndian.Uint64(rec) == 0 { // d_ino 0: a deleted entry
			continue
		}
		name := rec[nameOff:]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		if len(name) == 0 || name[0] == '.' && (len(name) == 1 || len(name) == 2 && name[1] == '.') {
			continue
		}
		if err := fn(name, rec[typeOff]); err != nil {
			return err
		}
	}
	return nil
}

// WithPath returns err naming path: the Path of an *fs.PathError (the seam
// names only the relative name it was given) is replaced by path, any other
// error is wrapped as "path: err". A nil err stays nil.
func WithPath(err error, path string) error {
	if err == nil {
		return nil
	}
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return &fs.PathError{Op: pe.Op, Path: path, Err: pe.Err}
	}
	return fmt.Errorf("%s: %w", path, err)
}
