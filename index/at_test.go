package index

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

// closed reports whether f's descriptor was closed (by the code under test).
func closed(f *os.File) bool {
	var st unix.Stat_t
	return errors.Is(unix.Fstat(int(f.Fd()), &st), unix.EBADF)
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	ds := testDigests(3, 7)
	path := filepath.Join(dir, "x.fidx")
	rtest.OK(t, WriteFixedFile(path, 3*4096, 4096, ds))

	f, err := os.Open(path)
	rtest.OK(t, err)
	fd := f.Fd()
	r, err := OpenFile(f)
	rtest.OK(t, err)
	var got []blob.Digest
	rtest.OK(t, r.Each(func(d *blob.Digest) error { got = append(got, *d); return nil }))
	rtest.Equal(t, "entries", 3, len(got))
	rtest.OK(t, r.Close())
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); !errors.Is(err, unix.EBADF) {
		t.Errorf("Close did not close the file OpenFile took: fstat says %v", err)
	}

	// A corrupt file and a FIFO: OpenFile fails and closes what it was given.
	bad := filepath.Join(dir, "bad.fidx")
	rtest.OK(t, os.WriteFile(bad, []byte("not an index"), 0o644))
	f, err = os.Open(bad)
	rtest.OK(t, err)
	_, err = OpenFile(f)
	checkCorrupt(t, err, bad, "bad magic", 0)
	rtest.Equal(t, "corrupt file closed", true, closed(f))

	fifo := filepath.Join(dir, "p.didx")
	rtest.OK(t, syscall.Mkfifo(fifo, 0o644))
	f, err = os.OpenFile(fifo, os.O_RDONLY|unix.O_NONBLOCK, 0)
	rtest.OK(t, err)
	_, err = OpenFile(f)
	checkCorrupt(t, err, fifo, "not a regular file", 0)
	rtest.Equal(t, "FIFO closed", true, closed(f))
}

func TestWriteFileAt(t *testing.T) {
	dir := t.TempDir()
	dfd := rtest.DirFD(t, dir)
	ds := testDigests(4, 9)
	rtest.OK(t, WriteFixedFileAt(dfd, dir, "a.fidx", fsys.Keep, 4*4096, 4096, ds))
	rtest.OK(t, WriteDynamicFileAt(dfd, dir, "b.didx", fsys.Keep, testEnds(4), ds))
	for _, name := range []string{"a.fidx", "b.didx"} {
		r, err := Open(filepath.Join(dir, name))
		rtest.OK(t, err)
		n := 0
		rtest.OK(t, r.Each(func(d *blob.Digest) error {
			if *d != ds[n] {
				t.Errorf("%s entry %d: want %v, got %v", name, n, ds[n], *d)
			}
			n++
			return nil
		}))
		rtest.OK(t, r.Close())
		rtest.Equal(t, name+" entries", 4, n)
	}

	// The target is replaced, not written through: a symlink in its place
	// becomes the index, and what it pointed to is untouched.
	outside := filepath.Join(t.TempDir(), "outside")
	rtest.OK(t, os.WriteFile(outside, []byte("keep"), 0o644))
	rtest.OK(t, os.Symlink(outside, filepath.Join(dir, "c.fidx")))
	rtest.OK(t, WriteFixedFileAt(dfd, dir, "c.fidx", fsys.Keep, 0, 4096, nil))
	b, err := os.ReadFile(outside)
	rtest.OK(t, err)
	rtest.Equal(t, "symlink target", "keep", string(b))
	fi, err := os.Lstat(filepath.Join(dir, "c.fidx"))
	rtest.OK(t, err)
	rtest.Equal(t, "c.fidx is a regular file", true, fi.Mode().IsRegular())

	err = WriteDynamicFileAt(dfd, dir, "d.didx", fsys.Keep, []uint64{1}, ds)
	if err == nil || !strings.Contains(err.Error(), dir+"/d.didx") {
		t.Errorf("mismatched lengths: want an error naming %s/d.didx, got %v", dir, err)
	}
	err = WriteFixedFileAt(dfd, dir, "sub/x.fidx", fsys.Keep, 0, 4096, nil)
	if err == nil {
		t.Errorf("a name with a slash: want an error")
	}
	entries, err := os.ReadDir(dir)
	rtest.OK(t, err)
	rtest.Equal(t, "files left", 3, len(entries))

	// A missing directory fd target.
	if err := WriteFixedFileAt(-1, "/nowhere", "x.fidx", fsys.Keep, 0, 4096, nil); !errors.Is(err, unix.EBADF) && !errors.Is(err, fs.ErrInvalid) {
		t.Errorf("bad dirfd: want EBADF, got %v", err)
	}
}
