package atimefuse

import (
	"context"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"chunkgc/internal/testkit/loopfuse"
)

// Name is the FUSE subtype: the mount shows up as "fuse.atimefuse" in
// /proc/self/mountinfo.
const Name = "atimefuse"

// node is a loopback node whose Setattr drops atime changes.
type node struct {
	*fs.LoopbackNode
}

var (
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeWrapChilder = (*node)(nil)
)

// Setattr passes the request on without its atime part.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	in.Valid &^= fuse.FATTR_ATIME | fuse.FATTR_ATIME_NOW
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

// WrapChild makes every node of the tree a node.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode)}
}

// Mount mounts the atime-dropping loopback of backingDir on a fresh directory
// in t.TempDir() and returns it. It needs root and /dev/fuse (it mounts with
// mount(2) directly, no fusermount): without them the test is skipped, or
// failed under CI. The mount allows other users (the backup user) and is
// unmounted, and its server stopped, when the test ends.
func Mount(t testing.TB, backingDir string) (mountpoint string) {
	t.Helper()
	return loopfuse.Mount(t, Name, backingDir, func(l *fs.LoopbackNode) fs.InodeEmbedder { return &node{LoopbackNode: l} }, nil)
}
