// Package hangfuse is test support: a loopback FUSE filesystem on which
// setting the times of a chosen file hangs, as a call into a dead NFS or
// SMB server does. It lets a test show that chunkgc obeys SIGTERM even
// while a system call does not return. Never linked into the binary.
package hangfuse

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"chunkgc/internal/testkit/loopfuse"
)

// node is a loopback node whose Setattr hangs for the names hang selects.
type node struct {
	*fs.LoopbackNode
	hang    func(name string) bool
	release <-chan struct{}
}

var (
	_ fs.NodeSetattrer   = (*node)(nil)
	_ fs.NodeWrapChilder = (*node)(nil)
)

// Setattr blocks for a hanging name until the kernel interrupts the request
// (it does when the calling process is killed, as NFS's waits are killable)
// or the mount is released at the end of the test. A Go program's SIGTERM
// handler does not interrupt it: the signal goes to whichever thread Go
// takes it on.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.hang(filepath.Base(n.Path(nil))) {
		select {
		case <-ctx.Done():
			return syscall.EINTR
		case <-n.release:
			return syscall.EIO
		case <-time.After(time.Minute):
			return syscall.EIO
		}
	}
	return n.LoopbackNode.Setattr(ctx, f, in, out)
}

// WrapChild makes every node of the tree a node.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), hang: n.hang, release: n.release}
}

// Mount mounts the loopback of backingDir on a fresh directory and returns
// it; Setattr of a file whose name hang accepts blocks until the test ends.
// Needs root and /dev/fuse (skipped, or failed under CI, without them).
func Mount(t testing.TB, backingDir string, hang func(name string) bool) string {
	t.Helper()
	release := make(chan struct{})
	return loopfuse.Mount(t, "hangfuse", backingDir,
		func(l *fs.LoopbackNode) fs.InodeEmbedder { return &node{LoopbackNode: l, hang: hang, release: release} },
		func() { close(release) })
}
