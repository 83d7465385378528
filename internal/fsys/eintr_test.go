package fsys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/loopfuse"
	"chunkgc/internal/testkit/rtest"
)

// eintrRoot is the root of a loopback FUSE filesystem whose lookup of each
// name starting with "eintr" fails once with EINTR, which the kernel passes
// on to the syscall that made it.
type eintrRoot struct {
	*fusefs.LoopbackNode
	mu     sync.Mutex
	failed map[string]int
}

var _ fusefs.NodeLookuper = (*eintrRoot)(nil)

func (r *eintrRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if strings.HasPrefix(name, "eintr") {
		r.mu.Lock()
		first := r.failed[name] == 0
		r.failed[name]++
		r.mu.Unlock()
		if first {
			return nil, syscall.EINTR
		}
	}
	return r.LoopbackNode.Lookup(ctx, name, out)
}

// mountEINTR mounts an eintrRoot over backing and returns the mount point.
func mountEINTR(t *testing.T, backing string) (string, *eintrRoot) {
	t.Helper()
	var root *eintrRoot
	mnt := loopfuse.Mount(t, "eintrfs", backing, func(n *fusefs.LoopbackNode) fusefs.InodeEmbedder {
		root = &eintrRoot{LoopbackNode: n, failed: map[string]int{}}
		return root
	}, nil)
	return mnt, root
}

// TestRealSysRetriesEINTR: an interrupted openat, fstatat or utimensat is
// made again, on the stack-buffer path and the x/sys path alike.
func TestRealSysRetriesEINTR(t *testing.T) {
	backing := t.TempDir()
	mnt, root := mountEINTR(t, backing)
	long := "eintr" + strings.Repeat("l", 150)
	dirfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(dirfd)

	// The filesystem really does fail the first lookup with EINTR.
	rtest.OK(t, os.WriteFile(filepath.Join(backing, "eintr-probe"), nil, 0o644))
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, "eintr-probe", &st, 0); !errors.Is(err, unix.EINTR) {
		t.Fatalf("first lookup: want EINTR, got %v", err)
	}

	for _, c := range sysCalls() {
		for _, name := range []string{"eintr-" + c.op, long + c.op} {
			rtest.OK(t, os.WriteFile(filepath.Join(backing, name), nil, 0o644))
			if err := c.call(dirfd, name); err != nil {
				t.Errorf("%s %.20s…: %v", c.op, name, err)
			}
			root.mu.Lock()
			lookups := root.failed[name]
			root.mu.Unlock()
			if lookups < 2 {
				t.Errorf("%s %.20s…: %d lookups, want the failed one and a retry", c.op, name, lookups)
			}
		}
	}
}
