package nofollow

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

// tree builds root/a/b/f (a file), root/a/link -> outside, root/a/fifo,
// root/lnk -> a, root/a/b/flink -> f, and returns root and outside.
func tree(t *testing.T) (root, outside string) {
	t.Helper()
	root, outside = t.TempDir(), t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(os.WriteFile(filepath.Join(root, "a/b/f"), []byte("in"), 0o644))
	must(os.WriteFile(filepath.Join(outside, "f"), []byte("out"), 0o644))
	must(os.Mkdir(filepath.Join(outside, "b"), 0o755))
	must(os.WriteFile(filepath.Join(outside, "b/f"), []byte("out"), 0o644))
	must(os.Symlink(outside, filepath.Join(root, "a/link")))
	must(os.Symlink("a", filepath.Join(root, "lnk")))
	must(os.Symlink("f", filepath.Join(root, "a/b/flink")))
	must(unix.Mkfifo(filepath.Join(root, "a/fifo"), 0o644))
	return root, outside
}

func TestOpenRefusesEverySymlink(t *testing.T) {
	for _, steps := range []bool{false, true} {
		t.Run(map[bool]string{false: "openat2", true: "component-wise"}[steps], func(t *testing.T) {
			if steps {
				noOpenat2.Store(true)
				t.Cleanup(func() { noOpenat2.Store(false) })
			}
			root, _ := tree(t)
			rfd := rtest.DirFD(t, root)
			f, err := OpenFile(rfd, root, "a/b/f")
			if err != nil {
				t.Fatalf("plain file: %v", err)
			}
			f.Close()
			for _, c := range []struct{ name, component string }{
				{"lnk/b/f", "lnk"},
				{"a/link/f", "a/link"},
				{"a/link/b/f", "a/link"},
				{"a/b/flink", "a/b/flink"},
			} {
				_, err := OpenFile(rfd, root, c.name)
				if !errors.Is(err, ErrSymlink) {
					t.Errorf("OpenFile %s: %v, want ErrSymlink", c.name, err)
					continue
				}
				pe, _ := errors.AsType[*fs.PathError](err)
				if want := filepath.Join(root, c.component); pe == nil || pe.Path != want {
					t.Errorf("OpenFile %s: error %v names %v, want %s", c.name, err, pe, want)
				}
			}
			// Entries of the wrong type; the FIFO's open must not block.
			for _, c := range []struct {
				dir  bool // OpenDir, not OpenFile
				name string
				want error
				says string
			}{
				{true, "a/link", ErrSymlink, ""},
				{true, "a/b/f", ErrNotDir, ""},
				{false, "a/fifo", ErrNotRegular, "FIFO"},
				{false, "a", ErrNotRegular, ""},
			} {
				open := OpenFile
				if c.dir {
					open = func(rfd int, root, name string) (*os.File, error) {
						fd, err := OpenDir(rfd, root, name)
						if err == nil {
							unix.Close(fd)
						}
						return nil, err
					}
				}
				if _, err := open(rfd, root, c.name); !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
					t.Errorf("open %s (dir %v): %v, want %v saying %q", c.name, c.dir, err, c.want, c.says)
				}
			}
		})
	}
}

func TestBadNames(t *testing.T) {
	root, _ := tree(t)
	rfd := rtest.DirFD(t, root)
	for _, n := range []string{"", "/etc", "a/../a/b/f", "./a", "a//b", "a/b/"} {
		if _, err := Open(rfd, root, n, unix.O_RDONLY, 0); !errors.Is(err, ErrBadName) {
			t.Errorf("Open %q: %v, want ErrBadName", n, err)
		}
	}
}

func TestMkdirAll(t *testing.T) {
	root, outside := tree(t)
	rfd := rtest.DirFD(t, root)
	fd, err := MkdirAll(fsys.Real{}, rfd, root, "x/y/z", 0o755, fsys.Keep)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if fi, err := os.Stat(filepath.Join(root, "x/y/z")); err != nil || !fi.IsDir() {
		t.Fatalf("x/y/z not made: %v", err)
	}
	if _, err := MkdirAll(fsys.Real{}, rfd, root, "a/link/new", 0o755, fsys.Keep); !errors.Is(err, ErrSymlink) {
		t.Fatalf("MkdirAll through a symlink: %v, want ErrSymlink", err)
	}
	if _, err := os.Lstat(filepath.Join(outside, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("MkdirAll created something outside: %v", err)
	}
}
