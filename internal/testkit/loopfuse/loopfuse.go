// Package loopfuse is test support: it mounts a loopback FUSE filesystem of
// a backing directory whose nodes a test package wraps to misbehave in one
// chosen way (atimefuse drops atime updates, skewfuse offsets the clock,
// hangfuse hangs a call). It is the one copy of the mount, the no-caching
// options and the cleanup. Never linked into the binary.
package loopfuse

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/testfs"
)

// Mount mounts the loopback of backingDir, subtype name ("fuse.<name>" in
// /proc/self/mountinfo), on a fresh directory in t.TempDir() and returns
// it. wrap makes the root node from its loopback node; the wrapper passes
// itself on to children (fs.NodeWrapChilder). No attribute, entry or
// negative entry is cached, so every call reaches the wrapper. The mount
// allows other users (the backup user). It needs root and /dev/fuse (it
// mounts with mount(2) directly, no fusermount): without them the test is
// skipped, or failed under CI. When the test ends, beforeUnmount (if not
// nil) runs, then the mount is unmounted (lazily when busy) and its server
// stopped.
func Mount(t testing.TB, name, backingDir string, wrap func(*fs.LoopbackNode) fs.InodeEmbedder, beforeUnmount func()) string {
	t.Helper()
	return MountWith(t, name, backingDir, wrap, Options{BeforeUnmount: beforeUnmount})
}

// Options are the rarer choices of [MountWith].
type Options struct {
	// BeforeUnmount runs when the test ends, before the unmount.
	BeforeUnmount func()
	// Raw wraps the request-level filesystem the nodes are served by, to
	// see every FUSE request (count it, delay it).
	Raw func(fuse.RawFileSystem) fuse.RawFileSystem
	// NoReadDirPlus makes the kernel list directories with READDIR only.
	NoReadDirPlus bool
	// MaxBackground is the kernel's limit of background requests in
	// flight (0: go-fuse's default).
	MaxBackground int
}

// MountWith is [Mount] with [Options].
func MountWith(t testing.TB, name, backingDir string, wrap func(*fs.LoopbackNode) fs.InodeEmbedder, o Options) string {
	t.Helper()
	rtest.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		rtest.SkipOrFail(t, "needs /dev/fuse: "+err.Error())
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backingDir, &st); err != nil {
		t.Fatalf("%s: backing dir: %v", name, err)
	}
	root := &fs.LoopbackRoot{Path: backingDir, Dev: uint64(st.Dev)}
	rootNode := wrap(&fs.LoopbackNode{RootData: root})
	root.RootNode = rootNode

	mnt := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	var zero time.Duration
	raw := fs.NewNodeFS(rootNode, &fs.Options{AttrTimeout: &zero, EntryTimeout: &zero, NegativeTimeout: &zero})
	if o.Raw != nil {
		raw = o.Raw(raw)
	}
	server, err := fuse.NewServer(raw, mnt, &fuse.MountOptions{
		DirectMountStrict:  true,
		AllowOther:         true,
		FsName:             backingDir,
		Name:               name,
		DisableReadDirPlus: o.NoReadDirPlus,
		MaxBackground:      o.MaxBackground,
	})
	if err != nil {
		rtest.SkipOrFail(t, name+": mount: "+err.Error())
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		rtest.SkipOrFail(t, name+": mount: "+err.Error())
	}
	t.Cleanup(func() {
		if o.BeforeUnmount != nil {
			o.BeforeUnmount()
		}
		if err := server.Unmount(); err != nil {
			// Busy: detach it; the server goroutines end when the
			// kernel drops the connection with the mount's last user.
			t.Logf("%s: unmount %s: %v; detaching lazily", name, mnt, err)
			testfs.Unmount(t, mnt)
			return
		}
		server.Wait()
	})
	return mnt
}
