package atimefuse

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMountDropsAtimeOnly(t *testing.T) {
	backing := t.TempDir()
	mnt := Mount(t, backing)

	p := filepath.Join(mnt, "f")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	// The backing file's times can be set directly.
	if err := os.Chtimes(filepath.Join(backing, "f"), old, old); err != nil {
		t.Fatal(err)
	}

	var st unix.Stat_t
	stat := func() (atime, mtime time.Time) {
		t.Helper()
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return time.Unix(st.Atim.Unix()).UTC(), time.Unix(st.Mtim.Unix()).UTC()
	}
	if a, m := stat(); !a.Equal(old) || !m.Equal(old) {
		t.Fatalf("through the mount: atime %v mtime %v, want both %v (timeouts must be 0)", a, m, old)
	}

	// utimensat(UTIME_NOW, UTIME_OMIT) succeeds and changes nothing.
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatalf("utimensat through atimefuse: %v", err)
	}
	if a, m := stat(); !a.Equal(old) || !m.Equal(old) {
		t.Fatalf("after touch: atime %v mtime %v, want both %v", a, m, old)
	}

	// An explicit mtime goes through, the atime of the same call does not.
	newer := old.Add(time.Hour)
	if err := os.Chtimes(p, newer, newer); err != nil {
		t.Fatal(err)
	}
	if a, m := stat(); !a.Equal(old) || !m.Equal(newer) {
		t.Fatalf("after chtimes: atime %v mtime %v, want %v and %v", a, m, old, newer)
	}

	// Children of subdirectories are wrapped too.
	sub := filepath.Join(mnt, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(sub, "g")
	if err := os.WriteFile(q, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(q, old, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(q, &st); err != nil {
		t.Fatal(err)
	}
	if time.Unix(st.Atim.Unix()).Equal(old) {
		t.Fatal("atime of a file in a subdirectory was set")
	}
}
