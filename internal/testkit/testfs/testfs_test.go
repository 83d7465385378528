package testfs

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountOptions returns the fstype and the options of the mount at mnt from
// /proc/self/mountinfo.
func mountOptions(t *testing.T, mnt string) (fstype, opts string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[4] != mnt {
			continue
		}
		for i := 6; i < len(fields)-2; i++ {
			if fields[i] == "-" {
				fstype = fields[i+1]
				opts = fields[5] + "," + fields[i+3]
			}
		}
	}
	if fstype == "" {
		t.Fatalf("%s is not a mount point", mnt)
	}
	return fstype, opts
}

func TestLoop(t *testing.T) {
	tests := []struct {
		name      string
		fstype    string
		give      string
		size      int64
		wantMagic int64
		wantOpt   string
	}{
		{"ext4", "ext4", "", 0, unix.EXT4_SUPER_MAGIC, "relatime"},
		{"ext4 noatime", "ext4", "noatime", 64 << 20, unix.EXT4_SUPER_MAGIC, "noatime"},
		{"xfs", "xfs", "", 0, unix.XFS_SUPER_MAGIC, "rw"},
		{"btrfs", "btrfs", "noatime", 0, unix.BTRFS_SUPER_MAGIC, "noatime"},
		{"tmpfs", "tmpfs", "noatime", 1 << 20, unix.TMPFS_MAGIC, "size=1024k"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mnt := Loop(t, tt.fstype, tt.give, tt.size)
			var sf unix.Statfs_t
			if err := unix.Statfs(mnt, &sf); err != nil {
				t.Fatal(err)
			}
			if int64(sf.Type) != tt.wantMagic {
				t.Errorf("statfs type %#x, want %#x", sf.Type, tt.wantMagic)
			}
			fstype, opts := mountOptions(t, mnt)
			if fstype != tt.fstype {
				t.Errorf("mounted %s, want %s", fstype, tt.fstype)
			}
			if !strings.Contains(","+opts+",", ","+tt.wantOpt+",") {
				t.Errorf("mount options %q lack %q", opts, tt.wantOpt)
			}
			if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLoopUnmountsBusyMountLazily(t *testing.T) {
	var mnt string
	var fd int
	t.Run("mount", func(t *testing.T) {
		mnt = Tmpfs(t, "")
		var err error
		// An fd left open keeps the mount busy at cleanup.
		fd, err = unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
	})
	defer unix.Close(fd)
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), " "+mnt+" ") {
		t.Fatalf("%s is still mounted after its test ended", mnt)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("the detached mount is gone under its open fd: %v", err)
	}
}
