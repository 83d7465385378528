package chunkstore

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
)

// PrefixListing is what one listing of .chunks showed of the prefix dirs:
// which of them were listed as directories (d_type DT_DIR). A name listed
// as anything else, with DT_UNKNOWN, or not at all, is not in it.
//
// [Store.CheckPrefixDirs] trusts it for a dir whose fd the budget cannot
// keep, instead of a statx of its own: over FUSE or NFS that is one
// READDIR(PLUS) reply for dozens of dirs instead of a LOOKUP each (doc
// "Round trips"). The listing is as much a check as the statx it replaces:
// the sweep opens every dir with O_NOFOLLOW, which refuses a symlink
// swapped in since, so trusting an earlier listing widens no hole.
type PrefixListing struct {
	dir [PrefixCount / 64]uint64 // bit p: prefix dir p was listed as DT_DIR
}

// IsDir reports whether prefix dir p was listed as a directory.
func (l *PrefixListing) IsDir(p uint16) bool { return l.dir[p>>6]&(1<<(p&63)) != 0 }

// Dirs is how many prefix dirs were listed as directories.
func (l *PrefixListing) Dirs() int {
	n := 0
	for _, w := range l.dir {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// prefixListBuf is the getdents64 buffer of ListPrefixDirs: 65,536 entries
// of 4-character names take ~1.6 MiB of records, 52 calls on a local
// filesystem (FUSE pages its replies whatever the buffer).
const prefixListBuf = 32 << 10

// ListPrefixDirs lists .chunks once (a fresh open of it, so that no other
// user of the .chunks fd sees its offset move) and returns which prefix
// dirs it showed as directories. Entries that name no prefix dir are
// passed over. ctx is checked every 4,096 entries. GC starts it before the
// atime probe so that it runs beside the probe and phase 1; a prefix dir
// missing from it is checked again by CheckPrefixDirs.
func (s *Store) ListPrefixDirs(ctx context.Context) (*PrefixListing, error) {
	fd, err := s.sys.Openat(s.chunksFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("list prefix dirs: %w", withPath(err, s.chunks))
	}
	defer unix.Close(fd)
	l := new(PrefixListing)
	n := 0
	err = fsys.ReadDirents(s.sys, fd, func() string { return s.chunks }, make([]byte, prefixListBuf), func(name []byte, dtype uint8) error {
		if n++; n%4096 == 0 && ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if p, ok := parsePrefixName(name); ok && dtype == unix.DT_DIR {
			l.dir[p>>6] |= 1 << (p & 63)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list prefix dirs: %w", err)
	}
	return l, nil
}

// parsePrefixName parses a prefix dir's name: exactly 4 lowercase hex
// digits.
func parsePrefixName(name []byte) (uint16, bool) {
	if len(name) != 4 {
		return 0, false
	}
	var p uint16
	for _, c := range name {
		v, ok := unhex(c)
		if !ok {
			return 0, false
		}
		p = p<<4 | uint16(v)
	}
	return p, true
}
