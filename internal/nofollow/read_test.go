package nofollow

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

// TestReadFileIn: a file of exactly the limit reads whole, one byte more is
// ErrTooLarge naming it; a missing file matches fs.ErrNotExist naming the
// file, a missing dir naming the dir; a symlink, a FIFO or a directory under
// the name is refused (the FIFO without blocking).
func TestReadFileIn(t *testing.T) {
	root, _ := tree(t)
	dir := filepath.Join(root, "a")
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "exact"), []byte("12345678"), 0o644))
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "over"), []byte("123456789"), 0o644))

	b, err := ReadFileIn(dir, "exact", 8)
	rtest.OK(t, err)
	rtest.Equal(t, "content", "12345678", string(b))

	_, err = ReadFileIn(dir, "over", 8)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), filepath.Join(dir, "over")) {
		t.Errorf("over the limit: %v, want %v naming the file", err, ErrTooLarge)
	}
	var pe *fs.PathError
	_, err = ReadFileIn(dir, "missing", 8)
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Path != filepath.Join(dir, "missing") {
		t.Errorf("missing file: %v, want ErrNotExist naming it", err)
	}
	_, err = ReadFileIn(filepath.Join(root, "nodir"), "f", 8)
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Path != filepath.Join(root, "nodir") {
		t.Errorf("missing dir: %v, want ErrNotExist naming the dir", err)
	}
	for name, want := range map[string]error{"link": ErrSymlink, "fifo": ErrNotRegular, "b": ErrNotRegular} {
		if _, err := ReadFileIn(dir, name, 8); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
}
