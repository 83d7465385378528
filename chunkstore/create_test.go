package chunkstore

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/testfs"
)

// countPrefixDirs counts the entries of .chunks that are prefix dirs (4 hex
// digits, a directory), and fails on anything else.
func countPrefixDirs(t testing.TB, base string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(base, chunksName))
	rtest.OK(t, err)
	n := 0
	for _, e := range entries {
		if len(e.Name()) != 4 || !e.IsDir() {
			t.Fatalf(".chunks holds %s (%v), not a prefix dir", e.Name(), e.Type())
		}
		n++
	}
	return n
}

func TestCreate(t *testing.T) {
	base := filepath.Join(scratchDir(t), "parent", "store")
	var calls [][2]int
	s, err := Create(context.Background(), base, testOpts(t), func(done, total int) {
		calls = append(calls, [2]int{done, total})
	})
	rtest.OK(t, err)
	t.Cleanup(func() { rtest.OK(t, s.Close()) })

	rtest.Equal(t, "Base", base, s.Base())
	rtest.Equal(t, "prefix dirs", PrefixCount, countPrefixDirs(t, base))
	rtest.Equal(t, "base mode", uint32(unix.S_IFDIR|0o755), lstat(t, base).Mode)
	rtest.Equal(t, ".chunks mode", uint32(unix.S_IFDIR|0o750), lstat(t, filepath.Join(base, ".chunks")).Mode)
	lock := lstat(t, filepath.Join(base, ".lock"))
	rtest.Equal(t, ".lock mode", uint32(unix.S_IFREG|0o644), lock.Mode)
	rtest.Equal(t, ".lock size", int64(0), lock.Size)
	for p := range PrefixCount {
		name := prefixName(uint16(p))
		var st unix.Stat_t
		rtest.OK(t, unix.Fstatat(s.chunksFd, name, &st, unix.AT_SYMLINK_NOFOLLOW))
		if st.Mode != unix.S_IFDIR|0o750 {
			t.Fatalf(".chunks/%s: mode %o, want dir 0750", name, st.Mode)
		}
	}
	for _, name := range []string{"0000", "00ff", "bb9f", "ffff"} {
		if _, err := os.Stat(filepath.Join(base, ".chunks", name)); err != nil {
			t.Errorf("prefix dir %s: %v", name, err)
		}
	}

	rtest.Equal(t, "progress calls", 100, len(calls))
	for i, c := range calls {
		if c[1] != PrefixCount || (i > 0 && c[0] <= calls[i-1][0]) {
			t.Fatalf("progress call %d: %v after %v", i, c, calls[max(i-1, 0)])
		}
		if pct := c[0] * 100 / PrefixCount; pct != i+1 {
			t.Fatalf("progress call %d at %d%%, want %d%%", i, pct, i+1)
		}
	}
	rtest.Equal(t, "last progress", [2]int{PrefixCount, PrefixCount}, calls[len(calls)-1])
	rtest.OK(t, s.VerifyLayout(context.Background()))
}

func TestCreateAllowsHiddenAndLostFound(t *testing.T) {
	base := scratchDir(t)
	rtest.OK(t, os.Mkdir(filepath.Join(base, "lost+found"), 0o700))
	rtest.OK(t, os.WriteFile(filepath.Join(base, ".hidden"), nil, 0o644))
	s, err := Create(context.Background(), base, testOpts(t), nil)
	rtest.OK(t, err)
	rtest.OK(t, s.Close())
	rtest.Equal(t, "prefix dirs", PrefixCount, countPrefixDirs(t, base))
}

func TestCreateRefuses(t *testing.T) {
	tests := []struct {
		name    string
		give    func(t *testing.T, dir string) string // makes the situation, returns base
		want    string                                // in the error
		wantErr error                                 // errors.Is, if set
	}{
		{
			name: "relative path",
			give: func(*testing.T, string) string { return "relative/store" },
			want: `"relative/store" is not absolute`,
		},
		{
			name: "non-empty dir",
			give: func(t *testing.T, dir string) string {
				rtest.OK(t, os.MkdirAll(filepath.Join(dir, "vm", "100"), 0o755))
				rtest.OK(t, os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644))
				rtest.OK(t, os.Mkdir(filepath.Join(dir, ".chunks"), 0o750))
				return dir
			},
			want:    `: directory is not empty: it holds "notes.txt"`,
			wantErr: ErrNotEmpty,
		},
		{
			name: "base is a file",
			give: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "store")
				rtest.OK(t, os.WriteFile(p, nil, 0o644))
				return p
			},
			want: "store exists and is not a directory",
		},
		{
			name: ".chunks is a file",
			give: func(t *testing.T, dir string) string {
				rtest.OK(t, os.WriteFile(filepath.Join(dir, ".chunks"), nil, 0o644))
				return dir
			},
			want: ".chunks exists and is not a directory",
		},
		{
			name: ".chunks is a symlink",
			give: func(t *testing.T, dir string) string {
				rtest.OK(t, os.Mkdir(filepath.Join(dir, "elsewhere"), 0o750))
				base := filepath.Join(dir, "store")
				rtest.OK(t, os.Mkdir(base, 0o755))
				rtest.OK(t, os.Symlink(filepath.Join(dir, "elsewhere"), filepath.Join(base, ".chunks")))
				return base
			},
			want: ".chunks exists and is not a directory",
		},
		{
			name: "prefix dir is a file",
			give: func(t *testing.T, dir string) string {
				rtest.OK(t, os.Mkdir(filepath.Join(dir, ".chunks"), 0o750))
				rtest.OK(t, os.WriteFile(filepath.Join(dir, ".chunks", "0abc"), nil, 0o644))
				return dir
			},
			want: ".chunks/0abc exists and is not a directory",
		},
		{
			name: ".lock is a directory",
			give: func(t *testing.T, dir string) string {
				rtest.OK(t, os.Mkdir(filepath.Join(dir, ".lock"), 0o755))
				return dir
			},
			want: ".lock exists and is not a regular file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := tt.give(t, scratchDir(t))
			s, err := Create(context.Background(), base, testOpts(t), nil)
			if err == nil {
				s.Close()
				t.Fatal("Create succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if filepath.IsAbs(base) && !strings.Contains(err.Error(), base) {
				t.Errorf("error %q does not name the base %s", err, base)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
		})
	}
}

func TestCreateInterruptedThenRerun(t *testing.T) {
	base := filepath.Join(scratchDir(t), "store")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Create(ctx, base, testOpts(t), func(done, total int) {
		if done*100/total >= 5 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Create: want context.Canceled, got %v", err)
	}
	n := countPrefixDirs(t, base)
	if n < PrefixCount*5/100 || n >= PrefixCount*6/100 {
		t.Fatalf("interrupted Create made %d prefix dirs, want about 5%% of %d", n, PrefixCount)
	}
	if _, err := os.Lstat(filepath.Join(base, ".lock")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf(".lock after interrupted Create: %v", err)
	}

	var calls int
	s, err := Create(context.Background(), base, testOpts(t), func(int, int) { calls++ })
	rtest.OK(t, err)
	defer s.Close()
	rtest.Equal(t, "progress calls of the rerun", 100, calls)
	rtest.Equal(t, "prefix dirs", PrefixCount, countPrefixDirs(t, base))
	rtest.OK(t, s.VerifyLayout(context.Background()))
	rtest.Equal(t, ".lock mode", uint32(unix.S_IFREG|0o644), lstat(t, filepath.Join(base, ".lock")).Mode)
}

func TestVerifyLayoutNamesProblems(t *testing.T) {
	root := os.Geteuid() == 0
	opts := testOpts(t)
	if root {
		opts.Owner = fsys.Owner{UID: 34, GID: 34}
	}
	base := scratchDir(t)
	s, err := Create(context.Background(), base, opts, nil)
	rtest.OK(t, err)
	defer s.Close()
	rtest.OK(t, s.VerifyLayout(context.Background()))

	rtest.OK(t, os.Remove(filepath.Join(base, ".chunks", "00af")))
	rtest.OK(t, os.Remove(filepath.Join(base, ".chunks", "0b00")))
	rtest.OK(t, os.WriteFile(filepath.Join(base, ".chunks", "0b00"), nil, 0o644))
	rtest.OK(t, os.Remove(filepath.Join(base, ".chunks", "c0de")))
	rtest.OK(t, os.Symlink("0000", filepath.Join(base, ".chunks", "c0de")))
	want := []string{".chunks/00af: missing", ".chunks/0b00: not a directory"}
	if root {
		rtest.OK(t, os.Lchown(filepath.Join(base, ".chunks", "1234"), 0, 0))
		want = append(want, ".chunks/1234: owned by 0:0, want 34:34")
	}
	want = append(want, ".chunks/c0de: not a directory")

	err = s.VerifyLayout(context.Background())
	le, isLE := errors.AsType[*LayoutError](err)
	if !isLE {
		t.Fatalf("VerifyLayout: want *LayoutError, got %v", err)
	}
	rtest.Equal(t, "Base", base, le.Base)
	rtest.Equal(t, "Count", len(want), le.Count)
	if !slices.Equal(want, le.Problems) {
		t.Fatalf("Problems:\nwant %q\ngot  %q", want, le.Problems)
	}
	for _, p := range want {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not name %q", err, p)
		}
	}
	if !root {
		t.Log("not root: the ownership check was not exercised")
	}
}

func TestVerifyLayoutCapsProblems(t *testing.T) {
	base := t.TempDir()
	s := miniStore(t, base, testOpts(t), 0, 1, 2)
	err := s.VerifyLayout(context.Background())
	le, isLE := errors.AsType[*LayoutError](err)
	if !isLE {
		t.Fatalf("VerifyLayout: want *LayoutError, got %v", err)
	}
	rtest.Equal(t, "Count", PrefixCount-3, le.Count)
	rtest.Equal(t, "Problems", maxLayoutProblems, len(le.Problems))
	rtest.Equal(t, "first problem", ".chunks/0003: missing", le.Problems[0])
	if !strings.HasSuffix(err.Error(), "; and 65513 more") {
		t.Errorf("error %q does not say how many more", err)
	}
}

func TestVerifyLayoutCancel(t *testing.T) {
	s := miniStore(t, t.TempDir(), testOpts(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.VerifyLayout(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("VerifyLayout on a cancelled context: %v", err)
	}
}

// TestCreateOwnership: as root, Create gives base, .chunks, every prefix dir
// and .lock to the backup user, and a rerun fixes prefix dirs a crashed run
// left owned by root.
func TestCreateOwnership(t *testing.T) {
	rtest.RequireRoot(t)
	owner, err := fsys.LookupOwner("backup")
	rtest.OK(t, err)
	rtest.Equal(t, "backup user", fsys.Owner{UID: 34, GID: 34}, owner)
	base := filepath.Join(testfs.Tmpfs(t, ""), "store")
	opts := testOpts(t)
	opts.Owner = owner
	s, err := Create(context.Background(), base, opts, nil)
	rtest.OK(t, err)
	defer s.Close()
	for _, p := range []string{"", ".chunks", ".lock"} {
		st := lstat(t, filepath.Join(base, p))
		if st.Uid != 34 || st.Gid != 34 {
			t.Errorf("%s/%s owned by %d:%d, want 34:34", base, p, st.Uid, st.Gid)
		}
	}
	rtest.OK(t, s.VerifyLayout(context.Background()))

	// A crash between mkdirat and fchownat leaves root-owned prefix dirs.
	rtest.OK(t, os.Lchown(filepath.Join(base, ".chunks", "abcd"), 0, 0))
	rtest.OK(t, os.Remove(filepath.Join(base, ".lock")))
	s2, err := Create(context.Background(), base, opts, nil)
	rtest.OK(t, err)
	defer s2.Close()
	rtest.OK(t, s2.VerifyLayout(context.Background()))
}
