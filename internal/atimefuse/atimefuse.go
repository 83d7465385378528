package atimefuse

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"chunkgc/internal/testfs"
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
	testfs.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testfs.SkipOrFail(t, "needs /dev/fuse: "+err.Error())
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backingDir, &st); err != nil {
		t.Fatalf("atimefuse: backing dir: %v", err)
	}
	root := &fs.LoopbackRoot{Path: backingDir, Dev: uint64(st.Dev)}
	rootNode := &node{LoopbackNode: &fs.LoopbackNode{RootData: root}}
	root.RootNode = rootNode

	mnt := filepath.Join(t.TempDir(), "atimefuse")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	var zero time.Duration
	server, err := fs.Mount(mnt, rootNode, &fs.Options{
		AttrTimeout:     &zero,
		EntryTimeout:    &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			DirectMountStrict: true,
			AllowOther:        true,
			FsName:            backingDir,
			Name:              Name,
		},
	})
	if err != nil {
		testfs.SkipOrFail(t, "atimefuse: mount: "+err.Error())
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			// Busy: detach it; the server goroutines end when the
			// kernel drops the connection with the mount's last user.
			t.Logf("atimefuse: unmount %s: %v; detaching lazily", mnt, err)
			testfs.Unmount(t, mnt)
			return
		}
		server.Wait()
	})
	return mnt
}
