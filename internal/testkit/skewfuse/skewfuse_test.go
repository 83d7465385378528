package skewfuse

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/testfs"
)

// within fails unless got is want give or take tol.
func within(t *testing.T, what string, want, got time.Time, tol time.Duration) {
	t.Helper()
	if d := got.Sub(want); d.Abs() > tol {
		t.Errorf("%s: %v, want %v ± %v (off by %v)", what, got.UTC(), want.UTC(), tol, d)
	}
}

func lstatTimes(t *testing.T, p string) (atime, mtime time.Time) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())
}

// TestMountSkewsNow: at every offset, a touch with UTIME_NOW and a newly
// created file, directory, node and symlink get the skewed clock, while
// explicit times go through unchanged.
func TestMountSkewsNow(t *testing.T) {
	backing := testfs.Tmpfs(t, "noatime")
	const tol = 2 * time.Second // the calls below take far less; the skews are minutes or more
	for _, offset := range []time.Duration{-48 * time.Hour, -10 * time.Minute, 0, 10 * time.Minute} {
		t.Run(offset.String(), func(t *testing.T) {
			dir := filepath.Join(backing, offset.String())
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			mnt := Mount(t, dir, offset)

			// New entries of every kind.
			f := filepath.Join(mnt, "f")
			if err := os.WriteFile(f, []byte("data"), 0o644); err != nil {
				t.Fatal(err)
			}
			sub := filepath.Join(mnt, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			fifo := filepath.Join(sub, "fifo")
			if err := unix.Mkfifo(fifo, 0o644); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(sub, "link")
			if err := os.Symlink("../f", link); err != nil {
				t.Fatal(err)
			}
			nested := filepath.Join(sub, "g") // a child of a wrapped child
			if err := os.WriteFile(nested, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{f, sub, fifo, link, nested} {
				a, _ := lstatTimes(t, p)
				within(t, "atime of new "+filepath.Base(p), time.Now().Add(offset), a, tol)
			}
			_, nm := lstatTimes(t, nested)
			within(t, "mtime of new empty file", time.Now().Add(offset), nm, tol)

			// Explicit times go through.
			old := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
			if err := os.Chtimes(f, old, old); err != nil {
				t.Fatal(err)
			}
			if a, m := lstatTimes(t, f); !a.Equal(old) || !m.Equal(old) {
				t.Fatalf("after chtimes: atime %v mtime %v, want both %v", a, m, old)
			}

			// UTIME_NOW for the atime only: the skewed clock, mtime kept.
			ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, f, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatal(err)
			}
			a, m := lstatTimes(t, f)
			within(t, "atime after UTIME_NOW", time.Now().Add(offset), a, tol)
			if !m.Equal(old) {
				t.Errorf("mtime after an atime-only touch: %v, want %v", m, old)
			}
			// And the same seen on the backing file, so it is not a cache.
			ba, _ := lstatTimes(t, filepath.Join(dir, "f"))
			if !ba.Equal(a) {
				t.Errorf("backing atime %v, mount atime %v", ba, a)
			}

			// Both through futimens on an open file (touch -c does this).
			fd, err := unix.Open(f, unix.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = unix.UtimesNanoAt(fd, "", []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}, unix.AT_EMPTY_PATH)
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			a, m = lstatTimes(t, f)
			within(t, "atime after futimens", time.Now().Add(offset), a, tol)
			within(t, "mtime after futimens", time.Now().Add(offset), m, tol)

			// A read through the mount stamps nothing.
			if err := os.Chtimes(f, old, old); err != nil {
				t.Fatal(err)
			}
			if _, err := os.ReadFile(f); err != nil {
				t.Fatal(err)
			}
			if a, _ := lstatTimes(t, f); !a.Equal(old) {
				t.Errorf("atime after a read: %v, want %v", a, old)
			}
		})
	}
}
