package fsys

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/rtest"
)

// trickle is a seam whose writes take at most one byte, and none once
// stall bytes have been written: the short writes WriteAll must loop over
// and the stalled one it must report. It is a fake: a regular file on a
// local filesystem never writes short.
type trickle struct {
	Real
	written, stall int
}

func (w *trickle) Write(fd int, p []byte) (int, error) {
	if w.written >= w.stall {
		return 0, nil
	}
	w.written++
	return w.Real.Write(fd, p[:1])
}

func TestWriteAll(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(p)
	rtest.OK(t, err)
	defer f.Close()
	fd := int(f.Fd())

	rtest.OK(t, WriteAll(&trickle{stall: 100}, fd, []byte("short writes")))
	got, err := os.ReadFile(p)
	rtest.OK(t, err)
	rtest.Equal(t, "content", "short writes", string(got))

	err = WriteAll(&trickle{stall: 3}, fd, []byte("stalls"))
	rtest.ErrorIs(t, err, io.ErrShortWrite)
	pe, isPE := errors.AsType[*fs.PathError](err)
	if !isPE || pe.Op != "write" {
		t.Fatalf("stalled write: want *fs.PathError{Op: write}, got %#v", err)
	}

	err = WriteAll(Real{}, -1, []byte("x"))
	rtest.ErrorIs(t, err, unix.EBADF)
}

func TestPathError(t *testing.T) {
	seam := &fs.PathError{Op: "renameat", Path: "x.tmp", Err: unix.EIO}
	rtest.Equal(t, "from the seam", error(&fs.PathError{Op: "rename", Path: "/s/x", Err: unix.EIO}), PathError("rename", "/s/x", seam))
	rtest.Equal(t, "bare errno", error(&fs.PathError{Op: "fsync", Path: "/s", Err: unix.ENOSPC}), PathError("fsync", "/s", unix.ENOSPC))
	rtest.Equal(t, "Errno", error(unix.EIO), Errno(seam))
}
