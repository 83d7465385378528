package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesAndLeavesNoTmp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "status")
	if err := WriteBytes(p, []byte("one"), 0o640, NoOwner); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "old-link")
	if err := os.Link(p, old); err != nil {
		t.Fatal(err)
	}
	if err := WriteBytes(p, []byte("two"), 0o644, NoOwner); err != nil {
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
	if err := WriteBytes(p, []byte("old"), 0o644, NoOwner); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := Write(p, 0o644, NoOwner, func(f *os.File) error {
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
	if err := WriteBytes(filepath.Join(dir, "missing", "f"), nil, 0o644, NoOwner); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}
