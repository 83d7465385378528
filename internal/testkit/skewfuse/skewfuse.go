package skewfuse

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/loopfuse"
)

// Name is the FUSE subtype: the mount shows up as "fuse.skewfuse" in
// /proc/self/mountinfo.
const Name = "skewfuse"

// node is a loopback node that stamps times with a skewed clock.
type node struct {
	*fs.LoopbackNode
	offset time.Duration
}

var (
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeMkdirer     = (*node)(nil)
	_ fs.NodeMknoder     = (*node)(nil)
	_ fs.NodeSymlinker   = (*node)(nil)
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeWrapChilder = (*node)(nil)
)

// now is the file server's clock.
func (n *node) now() time.Time { return time.Now().Add(n.offset) }

// Setattr turns "set to now" into an explicit time on the skewed clock.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	now := n.now()
	sec, nsec := uint64(now.Unix()), uint32(now.Nanosecond())
	if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
		in.Valid = in.Valid&^fuse.FATTR_ATIME_NOW | fuse.FATTR_ATIME
		in.Atime, in.Atimensec = sec, nsec
	}
	if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
		in.Valid = in.Valid&^fuse.FATTR_MTIME_NOW | fuse.FATTR_MTIME
		in.Mtime, in.Mtimensec = sec, nsec
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

// backingPath is the backing path of n's child name.
func (n *node) backingPath(name string) string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()), name)
}

// stamp sets the atime and mtime of n's new child name to the skewed clock
// and refreshes the attributes the kernel is told.
func (n *node) stamp(name string, attr *fuse.Attr) syscall.Errno {
	p := n.backingPath(name)
	ts, err := unix.TimeToTimespec(n.now())
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return fs.ToErrno(err)
	}
	attr.FromStat(&st)
	return 0
}

// Create creates the file, then stamps it.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return ch, fh, fuseFlags, errno
	}
	if errno := n.stamp(name, &out.Attr); errno != 0 {
		if r, ok := fh.(fs.FileReleaser); ok {
			r.Release(ctx)
		}
		syscall.Unlink(n.backingPath(name))
		return nil, nil, 0, errno
	}
	return ch, fh, fuseFlags, 0
}

// Mkdir creates the directory, then stamps it.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	return n.stamped(ch, errno, name, out, syscall.Rmdir)
}

// Mknod creates the node, then stamps it.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	return n.stamped(ch, errno, name, out, syscall.Unlink)
}

// Symlink creates the link, then stamps it.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ch, errno := n.LoopbackNode.Symlink(ctx, target, name, out)
	return n.stamped(ch, errno, name, out, syscall.Unlink)
}

// stamped finishes a create that returned ch and errno: it stamps the new
// entry name with the server's clock, and when that fails removes it again
// with remove (on its backing path) and returns the stamp's errno.
func (n *node) stamped(ch *fs.Inode, errno syscall.Errno, name string, out *fuse.EntryOut, remove func(string) error) (*fs.Inode, syscall.Errno) {
	if errno != 0 {
		return ch, errno
	}
	if errno := n.stamp(name, &out.Attr); errno != 0 {
		remove(n.backingPath(name))
		return nil, errno
	}
	return ch, 0
}

// Open opens the backing file with O_NOATIME where the kernel allows it
// (owner or CAP_FOWNER), so that a read does not stamp the host's clock.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags|syscall.O_NOATIME)
	if errno == syscall.EPERM {
		return n.LoopbackNode.Open(ctx, flags)
	}
	return fh, fuseFlags, errno
}

// WrapChild makes every node of the tree a node with the same offset.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), offset: n.offset}
}

// Mount mounts the loopback of backingDir whose clock is offset from this
// host's by offset (negative: behind) on a fresh directory in t.TempDir()
// and returns it. It needs root and /dev/fuse (it mounts with mount(2)
// directly, no fusermount): without them the test is skipped, or failed
// under CI. It logs when backingDir's filesystem is not mounted noatime.
// The mount allows other users (the backup user) and is unmounted, and its
// server stopped, when the test ends.
func Mount(t testing.TB, backingDir string, offset time.Duration) (mountpoint string) {
	t.Helper()
	var sfs unix.Statfs_t
	if err := unix.Statfs(backingDir, &sfs); err != nil {
		t.Fatalf("skewfuse: backing dir: %v", err)
	}
	if sfs.Flags&unix.ST_NOATIME == 0 {
		t.Logf("skewfuse: backing dir %s is not on a noatime mount: a read that bypasses the mount can stamp an atime with this host's clock", backingDir)
	}
	return loopfuse.Mount(t, Name, backingDir, func(l *fs.LoopbackNode) fs.InodeEmbedder { return &node{LoopbackNode: l, offset: offset} }, nil)
}
