package datastore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/index"
	"chunkgc/internal/testkit/rtest"
)

// equalLists compares two lists in order and prints the missing and extra
// items on a mismatch (rtest.Equal would print the two long lists only).
func equalLists(t testing.TB, what string, want, got []string) {
	t.Helper()
	if slices.Equal(want, got) {
		return
	}
	var missing, extra []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	t.Errorf("%s differ\nwant:\n\t%s\ngot:\n\t%s\nmissing: %q\nextra: %q", what,
		strings.Join(want, "\n\t"), strings.Join(got, "\n\t"), missing, extra)
}

// entry is one item of a declarative fixture tree, relative to its base.
type entry func(t testing.TB, base string)

// mkTree builds the entries under base, creating parent dirs as needed.
func mkTree(t testing.TB, base string, entries ...entry) {
	t.Helper()
	for _, e := range entries {
		e(t, base)
	}
}

func mkParent(t testing.TB, p string) {
	t.Helper()
	rtest.OK(t, os.MkdirAll(filepath.Dir(p), 0o755))
}

// idx is an empty, valid index file (fixed or dynamic by its suffix): it
// references no chunk, so the store invariant holds without chunks.
func idx(rel string) entry {
	return func(t testing.TB, base string) {
		t.Helper()
		p := filepath.Join(base, rel)
		mkParent(t, p)
		if k, _ := index.KindOf(rel); k == index.Dynamic {
			rtest.OK(t, index.WriteDynamicFile(p, nil, nil))
		} else {
			rtest.OK(t, index.WriteFixedFile(p, 0, 4096, nil))
		}
	}
}

// file is a plain file.
func file(rel string) entry {
	return func(t testing.TB, base string) {
		t.Helper()
		p := filepath.Join(base, rel)
		mkParent(t, p)
		rtest.OK(t, os.WriteFile(p, []byte(rel), 0o644))
	}
}

// dir is an empty directory.
func dir(rel string) entry {
	return func(t testing.TB, base string) {
		t.Helper()
		rtest.OK(t, os.MkdirAll(filepath.Join(base, rel), 0o755))
	}
}

// symlink is a symlink to target (used as is).
func symlink(rel, target string) entry {
	return func(t testing.TB, base string) {
		t.Helper()
		p := filepath.Join(base, rel)
		mkParent(t, p)
		rtest.OK(t, os.Symlink(target, p))
	}
}

// fifo is a named pipe.
func fifo(rel string) entry {
	return func(t testing.TB, base string) {
		t.Helper()
		p := filepath.Join(base, rel)
		mkParent(t, p)
		rtest.OK(t, unix.Mkfifo(p, 0o644))
	}
}

// isPermission reports whether err says permission denied.
func isPermission(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}

// TestFileTypes: dtype maps each stat format to its getdents type, an
// unknown format to dtOther, and dtName names each type.
func TestFileTypes(t *testing.T) {
	tests := []struct {
		mode uint32
		dt   uint8
		name string
	}{
		{unix.S_IFREG | 0o644, unix.DT_REG, "regular file"},
		{unix.S_IFDIR | 0o755, unix.DT_DIR, "directory"},
		{unix.S_IFLNK | 0o777, unix.DT_LNK, "symbolic link"},
		{unix.S_IFIFO, unix.DT_FIFO, "FIFO"},
		{unix.S_IFSOCK, unix.DT_SOCK, "socket"},
		{unix.S_IFCHR, unix.DT_CHR, "character device"},
		{unix.S_IFBLK, unix.DT_BLK, "block device"},
		{0o070000, dtOther, "file of unknown type"},
	}
	for _, tt := range tests {
		rtest.Equal(t, fmt.Sprintf("dtype(%#o)", tt.mode), tt.dt, dtype(tt.mode))
		rtest.Equal(t, fmt.Sprintf("dtName(%d)", tt.dt), tt.name, dtName(tt.dt))
	}
}
