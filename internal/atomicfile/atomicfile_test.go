package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/faultfs"
)

func TestWriteReplacesAndLeavesNoTmp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "status")
	if err := WriteBytes(p, []byte("one"), 0o640, fsys.Keep); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "old-link")
	if err := os.Link(p, old); err != nil {
		t.Fatal(err)
	}
	if err := WriteBytes(p, []byte("two"), 0o644, fsys.Keep); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	kept, _ := os.ReadFile(old)
	if string(got) != "two" || string(kept) != "one" {
		t.Fatalf("not replaced by rename: new %q, old inode %q", got, kept)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary file left: %v", entries)
	}
}

func TestWriteFailureKeepsOldAndNamesPath(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.fidx")
	if err := WriteBytes(p, []byte("old"), 0o644, fsys.Keep); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Write(p, 0o644, fsys.Keep, func(f *os.File) error {
		f.Write([]byte("half"))
		return boom
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), p) {
		t.Fatalf("want boom naming %s, got %v", p, err)
	}
	got, _ := os.ReadFile(p)
	if string(got) != "old" {
		t.Fatalf("failed write changed the file: %q", got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary file left: %v", entries)
	}
	if err := WriteBytes(filepath.Join(dir, "missing", "f"), nil, 0o644, fsys.Keep); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

func TestWriteAtReplacesSymlinkNotItsTarget(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	target := filepath.Join(outside, "target")
	if err := os.WriteFile(target, []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "status")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := WriteBytesAt(fd, dir, "status", []byte("new"), 0o644, fsys.Keep); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "outside" {
		t.Fatalf("symlink target changed to %q", b)
	}
	fi, err := os.Lstat(filepath.Join(dir, "status"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("status is not a regular file now: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "status")); string(b) != "new" {
		t.Fatalf("status = %q", b)
	}
	if err := WriteBytesAt(fd, dir, "../escape", nil, 0o644, fsys.Keep); err == nil {
		t.Fatal("WriteBytesAt accepted a name with a slash")
	}
}

// TestWriteAtSysFaults fails each step of the protocol through the seam:
// the error matches the errno and names the target, the old content stays
// and no temporary file is left.
func TestWriteAtSysFaults(t *testing.T) {
	// A Path is relative to the test's directory.
	for _, f := range []faultfs.Fault{
		{Op: faultfs.Openat, Name: "status.tmp_*", Nth: 1, Err: unix.EACCES},
		{Op: faultfs.Write, Path: "status.tmp_*", Nth: 1, Err: unix.ENOSPC},
		{Op: faultfs.Fchmod, Path: "status.tmp_*", Nth: 1, Err: unix.EPERM},
		{Op: faultfs.Fsync, Path: "status.tmp_*", Nth: 1, Err: unix.EIO},
		{Op: faultfs.Renameat, Name: "status", Nth: 1, Err: unix.EIO},
	} {
		t.Run(f.Op.String(), func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "status")
			if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if f.Path != "" {
				f.Path = filepath.Join(dir, f.Path) // t.TempDir has no glob metacharacters
			}
			set := faultfs.New(t, nil)
			set.Add(f)
			err = WriteBytesAtSys(set, fd, dir, "status", []byte("new"), 0o644, fsys.Keep)
			if !errors.Is(err, f.Err) || !strings.Contains(err.Error(), p) {
				t.Fatalf("want %v naming %s, got %v", f.Err, p, err)
			}
			if b, _ := os.ReadFile(p); string(b) != "old" {
				t.Errorf("failed write changed the file: %q", b)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("temporary file left: %v", entries)
			}
		})
	}
}
