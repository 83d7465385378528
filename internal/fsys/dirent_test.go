package fsys

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/rtest"
)

// linux_dirent64 field offsets, for building records.
const (
	testDirentReclen = 16
	testDirentType   = 18
	testDirentName   = 19
)

// putDirent writes a linux_dirent64 record of len(b) bytes.
func putDirent(b []byte, ino uint64, typ uint8, name string) {
	binary.NativeEndian.PutUint64(b, ino)
	binary.NativeEndian.PutUint16(b[testDirentReclen:], uint16(len(b)))
	b[testDirentType] = typ
	copy(b[testDirentName:], name)
}

// record returns a linux_dirent64 record for name with pad bytes after its
// NUL.
func record(ino uint64, typ uint8, name string, pad int) []byte {
	b := make([]byte, testDirentName+len(name)+1+pad)
	putDirent(b, ino, typ, name)
	return b
}

// testEntry is one entry ParseDirents reported.
type testEntry struct {
	name string
	typ  uint8
}

func parseAll(b []byte) ([]testEntry, error) {
	var ents []testEntry
	err := ParseDirents(b, func(name []byte, typ uint8) error {
		ents = append(ents, testEntry{string(name), typ})
		return nil
	})
	return ents, err
}

func TestParseDirents(t *testing.T) {
	var b []byte
	b = append(b, record(1, unix.DT_DIR, ".", 4)...)
	b = append(b, record(1, unix.DT_DIR, "..", 3)...)
	b = append(b, record(7, unix.DT_REG, "a.fidx", 5)...)
	b = append(b, record(0, unix.DT_REG, "deleted", 0)...)
	b = append(b, record(8, unix.DT_UNKNOWN, "x", 0)...)
	ents, err := parseAll(b)
	rtest.OK(t, err)
	rtest.Equal(t, "entries", []testEntry{{"a.fidx", unix.DT_REG}, {"x", unix.DT_UNKNOWN}}, ents)

	for _, bad := range [][]byte{b[:10], append(slices.Clone(b), 1, 2, 3), record(1, unix.DT_REG, "y", 0)[:testDirentName+1]} {
		_, err := parseAll(bad)
		pe, isPE := errors.AsType[*fs.PathError](err)
		if !isPE || pe.Op != "getdents64" || !errors.Is(err, unix.EIO) {
			t.Errorf("ParseDirents(% x): want *fs.PathError getdents64 EIO, got %v", bad, err)
		}
	}

	errStop := errors.New("stop")
	err = ParseDirents(b, func([]byte, uint8) error { return errStop })
	rtest.Equal(t, "fn's error", errStop, err)
}

// badDirents is a Syscalls whose getdents returns one truncated record.
type badDirents struct{ Real }

func (badDirents) Getdents(fd int, buf []byte) (int, error) { return copy(buf, make([]byte, 10)), nil }

// TestReadDirentsBadRecord: a malformed record is EIO naming the directory.
func TestReadDirentsBadRecord(t *testing.T) {
	err := ReadDirents(badDirents{}, -1, func() string { return "/store/vm" }, make([]byte, 64),
		func([]byte, uint8) error { return nil })
	rtest.Equal[error](t, "error", &fs.PathError{Op: "getdents64", Path: "/store/vm", Err: unix.EIO}, err)
}

// FuzzParseDirents checks that no getdents buffer makes the parser panic
// and that it only reports plausible names.
func FuzzParseDirents(f *testing.F) {
	b := make([]byte, 32)
	putDirent(b, 5, 8, "a.fidx")
	f.Add(b)
	f.Add([]byte{})
	f.Add(make([]byte, 19))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := ParseDirents(b, func(name []byte, _ uint8) error {
			if s := string(name); s == "" || s == "." || s == ".." || slices.Contains(name, 0) {
				t.Fatalf("implausible name %q", s)
			}
			return nil
		})
		if err != nil && !errors.Is(err, unix.EIO) {
			t.Fatalf("error %v is not EIO", err)
		}
	})
}
