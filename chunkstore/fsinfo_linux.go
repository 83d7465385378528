package chunkstore

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fsMagicName names the statfs f_type magics of the filesystems a chunk store
// is likely to live on, and gives any other in hex.
func fsMagicName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext2/ext3/ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case 0x2fc12fc1:
		return "zfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.CIFS_SUPER_MAGIC:
		return "cifs"
	case unix.SMB2_SUPER_MAGIC:
		return "smb2"
	case unix.SMB_SUPER_MAGIC:
		return "smb"
	case unix.CEPH_SUPER_MAGIC:
		return "ceph"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	case unix.BCACHEFS_SUPER_MAGIC:
		return "bcachefs"
	case unix.V9FS_MAGIC:
		return "9p"
	case unix.MSDOS_SUPER_MAGIC:
		return "vfat"
	case unix.EXFAT_SUPER_MAGIC:
		return "exfat"
	case unix.SQUASHFS_MAGIC:
		return "squashfs"
	case 0x5346544e:
		return "ntfs"
	case 0x01161970:
		return "gfs2"
	case 0x7461636f:
		return "ocfs2"
	}
	return "0x" + strconv.FormatInt(magic, 16)
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	mountPoint string
	fsType     string
	source     string
	options    string // per-mount options, then the superblock options not already among them
}

// parseMountInfo parses the proc(5) mountinfo format:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
func parseMountInfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 6 || sep < 0 || sep+2 >= len(fields) {
			return nil, fmt.Errorf("malformed mountinfo line %q", sc.Text())
		}
		opts := fields[5]
		if sep+3 < len(fields) {
			opts = mergeOptions(opts, fields[sep+3])
		}
		out = append(out, mountEntry{
			mountPoint: unescapeMountInfo(fields[4]),
			fsType:     fields[sep+1],
			source:     unescapeMountInfo(fields[sep+2]),
			options:    opts,
		})
	}
	return out, sc.Err()
}

// mergeOptions appends to the comma-separated list a those of b it lacks.
func mergeOptions(a, b string) string {
	have := strings.Split(a, ",")
	for o := range strings.SplitSeq(b, ",") {
		found := false
		for _, h := range have {
			if h == o {
				found = true
				break
			}
		}
		if !found && o != "" {
			a += "," + o
			have = append(have, o)
		}
	}
	return a
}

// unescapeMountInfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo paths.
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// mountOf returns the entry of the mount containing path: the one with the
// longest mount point that is path or a parent of it, the last listed when
// several are stacked on the same mount point.
func mountOf(entries []mountEntry, path string) (mountEntry, bool) {
	var (
		best  mountEntry
		found bool
	)
	for _, e := range entries {
		mp := e.mountPoint
		if !(mp == path || mp == "/" || strings.HasPrefix(path, mp) && path[len(mp)] == '/') {
			continue
		}
		if !found || len(mp) >= len(best.mountPoint) {
			best, found = e, true
		}
	}
	return best, found
}

// fsInfo returns the type and mount options of the filesystem holding the
// store: from /proc/self/mountinfo (the mount containing the real path of
// .chunks), else the name of the statfs magic and no options. It is for log
// lines, so it reports what it can and never fails.
func (s *Store) fsInfo() (fsType, mountOptions string) {
	var sf unix.Statfs_t
	if err := s.sys.Fstatfs(s.chunksFd, &sf); err == nil {
		fsType = fsMagicName(int64(sf.Type))
	}
	real, err := filepath.EvalSymlinks(s.chunks)
	if err != nil {
		return fsType, ""
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fsType, ""
	}
	defer f.Close()
	entries, err := parseMountInfo(f)
	if err != nil {
		return fsType, ""
	}
	if e, ok := mountOf(entries, real); ok {
		return e.fsType, e.options
	}
	return fsType, ""
}
