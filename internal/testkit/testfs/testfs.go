package testfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/rtest"
)

// defaultSizes are the image sizes Loop uses for size 0: big enough for
// every mkfs (xfsprogs ≥ 5.19 refuses less than 300 MiB) and sparse, so they
// cost only what is written.
var defaultSizes = map[string]int64{
	"ext4":  256 << 20,
	"xfs":   320 << 20,
	"btrfs": 256 << 20,
}

// mkfsArgs are the mkfs commands Loop runs, the image path appended.
var mkfsArgs = map[string][]string{
	// -N: enough inodes for a full store (65,536 prefix dirs) on a small image.
	"ext4":  {"mkfs.ext4", "-q", "-F", "-N", "131072"},
	"xfs":   {"mkfs.xfs", "-q", "-f"},
	"btrfs": {"mkfs.btrfs", "-q", "-f"},
}

// Loop makes a filesystem of type fstype (ext4, xfs or btrfs) in a sparse
// image of size bytes (0: a default that suits the type) in t.TempDir(),
// attaches it to a loop device, mounts it with mountOpts (comma-separated,
// "" for the defaults) and returns the mount point. fstype "tmpfs" mounts a
// tmpfs instead ([Tmpfs]; size, if > 0, becomes its size= option). The mount
// is unmounted and the loop device detached when the test ends.
func Loop(t testing.TB, fstype string, mountOpts string, size int64) string {
	t.Helper()
	if fstype == "tmpfs" {
		if size > 0 {
			mountOpts = joinOpts(mountOpts, fmt.Sprintf("size=%d", size))
		}
		return Tmpfs(t, mountOpts)
	}
	rtest.RequireRoot(t)
	mkfs, ok := mkfsArgs[fstype]
	if !ok {
		t.Fatalf("testfs.Loop: unsupported filesystem type %q", fstype)
	}
	if _, err := exec.LookPath(mkfs[0]); err != nil {
		rtest.SkipOrFail(t, fmt.Sprintf("needs %s (%v)", mkfs[0], err))
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		rtest.SkipOrFail(t, fmt.Sprintf("needs losetup (%v)", err))
	}
	if size <= 0 {
		size = defaultSizes[fstype]
	}
	dir := t.TempDir()
	img := filepath.Join(dir, fstype+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatalf("truncate %s: %v", img, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	run(t, append(mkfs[1:len(mkfs):len(mkfs)], img), mkfs[0])

	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		rtest.SkipOrFail(t, fmt.Sprintf("losetup --find --show %s: %v: %s", img, err, out))
	}
	dev := strings.TrimSpace(string(out))
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		detach(t, dev)
		t.Fatal(err)
	}
	if err := mount(fstype, mountOpts, dev, mnt); err != nil {
		detach(t, dev)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmount(t, mnt)
		detach(t, dev)
	})
	return mnt
}

// Tmpfs mounts a tmpfs with opts (comma-separated, "" for the defaults) on a
// fresh directory in t.TempDir() and returns it; it is unmounted when the
// test ends.
func Tmpfs(t testing.TB, opts string) string {
	t.Helper()
	rtest.RequireRoot(t)
	mnt := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mount("tmpfs", opts, "tmpfs", mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

// Unmount unmounts mnt, lazily (MNT_DETACH) when it is busy. It is what the
// mount helpers of this package run at cleanup; other test helpers that
// mount (e.g. FUSE) use it too.
func Unmount(t testing.TB, mnt string) { t.Helper(); unmount(t, mnt) }

func unmount(t testing.TB, mnt string) {
	t.Helper()
	for {
		err := unix.Unmount(mnt, 0)
		switch {
		case err == nil:
			return
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EBUSY):
			t.Logf("unmount %s: %v; detaching lazily", mnt, err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount -l %s: %v", mnt, err)
			}
			return
		default:
			t.Errorf("unmount %s: %v", mnt, err)
			return
		}
	}
}

// mount runs mount(8), which turns the VFS options (noatime, relatime,
// strictatime, ro, …) into mount flags, which mount(2)'s data string does
// not accept.
func mount(fstype, opts, source, mnt string) error {
	args := []string{"-t", fstype}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	args = append(args, source, mnt)
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("mount %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func detach(t testing.TB, dev string) {
	t.Helper()
	if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
		t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
	}
}

func run(t testing.TB, args []string, name string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func joinOpts(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}
