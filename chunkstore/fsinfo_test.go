package chunkstore

import (
	"strings"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

const sampleMountInfo = `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
23 22 0:21 / /tmp rw,nosuid,nodev shared:2 - tmpfs tmpfs rw,size=1024k
40 22 7:0 / /mnt/datastore/store\0401 rw,noatime shared:3 - xfs /dev/loop0 rw,attr2,inode64
41 40 0:50 / /mnt/datastore/store\0401/sub rw,relatime - fuse.atimefuse /srv/back rw,user_id=0,group_id=0,allow_other
42 22 7:1 / /mnt/datastore/store rw,relatime - btrfs /dev/loop1 rw,space_cache=v2
43 22 7:2 / /mnt/datastore/store rw,noatime - ext4 /dev/loop2 rw
`

func TestMountOf(t *testing.T) {
	entries, err := parseMountInfo(strings.NewReader(sampleMountInfo))
	rtest.OK(t, err)
	rtest.Equal(t, "entries", 6, len(entries))
	tests := []struct {
		name     string
		give     string
		wantType string
		wantOpts string
	}{
		{"root", "/srv/x/.chunks", "ext4", "rw,relatime,discard"},
		{"tmp", "/tmp/a/b", "tmpfs", "rw,nosuid,nodev,size=1024k"},
		{"not a prefix by name", "/tmpx/a", "ext4", "rw,relatime,discard"},
		{"escaped space", "/mnt/datastore/store 1/.chunks", "xfs", "rw,noatime,attr2,inode64"},
		{"nested", "/mnt/datastore/store 1/sub/.chunks", "fuse.atimefuse", "rw,relatime,user_id=0,group_id=0,allow_other"},
		{"stacked: last wins", "/mnt/datastore/store/.chunks", "ext4", "rw,noatime"},
		{"mount point itself", "/mnt/datastore/store", "ext4", "rw,noatime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, found := mountOf(entries, tt.give)
			rtest.Equal(t, "found", true, found)
			rtest.Equal(t, "type", tt.wantType, e.fsType)
			rtest.Equal(t, "options", tt.wantOpts, e.options)
		})
	}
}

func TestParseMountInfoMalformed(t *testing.T) {
	for _, give := range []string{"1 2 3", "1 2 0:1 / /x rw shared:1 ext4 /dev/x rw"} {
		if _, err := parseMountInfo(strings.NewReader(give + "\n")); err == nil {
			t.Errorf("parseMountInfo(%q) succeeded", give)
		}
	}
}

func TestFSMagicName(t *testing.T) {
	rtest.Equal(t, "xfs", "xfs", fsMagicName(0x58465342))
	rtest.Equal(t, "unknown", "0x1234", fsMagicName(0x1234))
}
