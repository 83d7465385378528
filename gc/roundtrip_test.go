package gc

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/testkit/loopfuse"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// opCounter is a fuse.RawFileSystem that counts the requests the kernel
// sends, by opcode, and passes them on.
type opCounter struct {
	fuse.RawFileSystem
	mu sync.Mutex
	n  map[string]int64
}

func (c *opCounter) count(op string) {
	c.mu.Lock()
	c.n[op]++
	c.mu.Unlock()
}

// snap returns the counts so far and starts again from zero.
func (c *opCounter) snap() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.n
	c.n = map[string]int64{}
	return m
}

func (c *opCounter) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	c.count("LOOKUP")
	return c.RawFileSystem.Lookup(cancel, h, name, out)
}

func (c *opCounter) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	c.count("GETATTR")
	return c.RawFileSystem.GetAttr(cancel, in, out)
}

func (c *opCounter) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	c.count("SETATTR")
	return c.RawFileSystem.SetAttr(cancel, in, out)
}

func (c *opCounter) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	c.count("STATX")
	return c.RawFileSystem.Statx(cancel, in, out)
}

func (c *opCounter) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	c.count("UNLINK")
	return c.RawFileSystem.Unlink(cancel, h, name)
}

func (c *opCounter) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	c.count("ACCESS")
	return c.RawFileSystem.Access(cancel, in)
}

func (c *opCounter) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	c.count("OPEN")
	return c.RawFileSystem.Open(cancel, in, out)
}

func (c *opCounter) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c.count("READ")
	return c.RawFileSystem.Read(cancel, in, buf)
}

func (c *opCounter) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	c.count("LSEEK")
	return c.RawFileSystem.Lseek(cancel, in, out)
}

func (c *opCounter) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	c.count("GETLK")
	return c.RawFileSystem.GetLk(cancel, in, out)
}

func (c *opCounter) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	c.count("SETLK")
	return c.RawFileSystem.SetLk(cancel, in)
}

func (c *opCounter) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	c.count("SETLKW")
	return c.RawFileSystem.SetLkw(cancel, in)
}

func (c *opCounter) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	c.count("RELEASE")
	c.RawFileSystem.Release(cancel, in)
}

func (c *opCounter) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	c.count("FLUSH")
	return c.RawFileSystem.Flush(cancel, in)
}

func (c *opCounter) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	c.count("OPENDIR")
	return c.RawFileSystem.OpenDir(cancel, in, out)
}

func (c *opCounter) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.count("READDIR")
	return c.RawFileSystem.ReadDir(cancel, in, out)
}

func (c *opCounter) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.count("READDIRPLUS")
	return c.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (c *opCounter) ReleaseDir(in *fuse.ReleaseIn) {
	c.count("RELEASEDIR")
	c.RawFileSystem.ReleaseDir(in)
}

// lazyNode is a loopback node whose open dirs hold no fd of the backing dir
// until they are read, and none after their end was read: the FUSE server
// runs in the test's process, whose RLIMIT_NOFILE GC's prefix dir cache
// counts on for itself.
type lazyNode struct {
	*fs.LoopbackNode
	backing string
}

func (n *lazyNode) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &lazyNode{LoopbackNode: ops.(*fs.LoopbackNode), backing: n.backing}
}

func (n *lazyNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &lazyDir{path: filepath.Join(n.backing, n.Path(nil))}, 0, 0
}

type lazyDir struct {
	path string
	ds   fs.DirStream
	eof  bool
}

func (d *lazyDir) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.eof {
		return nil, 0
	}
	if d.ds == nil {
		ds, errno := fs.NewLoopbackDirStream(d.path)
		if errno != 0 {
			return nil, errno
		}
		d.ds = ds
	}
	if !d.ds.HasNext() {
		d.ds.Close()
		d.ds, d.eof = nil, true
		return nil, 0
	}
	e, errno := d.ds.Next()
	return &e, errno
}

func (d *lazyDir) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if d.ds != nil {
		d.ds.Close()
	}
	d.ds, d.eof = nil, false
	for range off {
		if _, errno := d.Readdirent(ctx); errno != 0 {
			return errno
		}
	}
	return 0
}

func (d *lazyDir) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	fd, err := syscall.Open(d.path, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return fs.ToErrno(err)
	}
	defer syscall.Close(fd)
	return fs.ToErrno(syscall.Fsync(fd))
}

func (d *lazyDir) Releasedir(ctx context.Context, flags uint32) {
	if d.ds != nil {
		d.ds.Close()
	}
}

// mountCounting mounts a go-fuse loopback of backing, without attribute or
// entry caching, whose requests c counts.
func mountCounting(t *testing.T, backing string, readdirplus bool) (string, *opCounter) {
	t.Helper()
	var c *opCounter
	mnt := loopfuse.MountWith(t, "countfs", backing, func(n *fs.LoopbackNode) fs.InodeEmbedder {
		return &lazyNode{LoopbackNode: n, backing: backing}
	}, loopfuse.Options{
		Raw: func(raw fuse.RawFileSystem) fuse.RawFileSystem {
			c = &opCounter{RawFileSystem: raw, n: map[string]int64{}}
			return c
		},
		NoReadDirPlus: !readdirplus,
		MaxBackground: 64,
	})
	return mnt, c
}

// TestFUSERoundTrips counts the FUSE requests a GC run makes per phase,
// per (empty) prefix dir and per referenced chunk, over a loopback that
// caches nothing. It is a measurement (set CHUNKGC_FUSE_OPS=1; it lists all
// 65,536 prefix dirs through FUSE several times); it asserts only the
// outcome of the runs.
func TestFUSERoundTrips(t *testing.T) {
	if os.Getenv("CHUNKGC_FUSE_OPS") == "" {
		t.Skip("measurement; set CHUNKGC_FUSE_OPS=1")
	}
	const referenced, garbage = 2000, 200
	for _, plus := range []bool{true, false} {
		for _, full := range []bool{false, true} {
			name := fmt.Sprintf("readdirplus=%v/chunks=%v", plus, full)
			t.Run(name, func(t *testing.T) {
				backing := filepath.Join(testfs.Loop(t, "ext4", "", 512<<20), "store")
				st := storetest.Build(t, storetest.At(backing))
				var refs []blob.Digest
				if full {
					for i := range referenced {
						n := fmt.Sprint("ref ", i)
						st.Add(storetest.Chunk(n, storetest.Size(100), storetest.Age(72*time.Hour)))
						refs = append(refs, st.Digest(n))
					}
					for i := range garbage {
						st.Add(storetest.Chunk(fmt.Sprint("garbage ", i), storetest.Size(100), storetest.Age(72*time.Hour)))
					}
					st.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", refs...)
				}
				mnt, c := mountCounting(t, backing, plus)
				f := openFixture(t, st, mnt)
				phases := map[string]map[string]int64{}
				c.snap()
				res, err := f.run(func(o *Options) {
					o.Tuning.AtimeSafetyCheck = false
					o.hooks.beforeSweep = func() { phases["1 mark"] = c.snap() }
					o.hooks.afterPrefixCheck = func() { phases["2a check"] = c.snap() }
				})
				rtest.OK(t, err)
				phases["2b sweep"] = c.snap()
				if full {
					rtest.Equal(t, "removed", int64(garbage), res.RemovedChunks)
					rtest.Equal(t, "disk chunks", int64(referenced), res.DiskChunks)
				}
				t.Logf("%s: referenced %d, garbage %d (all old), %d prefix dirs", name, len(refs), res.RemovedChunks, chunkstore.PrefixCount)
				for _, ph := range slices.Sorted(maps.Keys(phases)) {
					m := phases[ph]
					var total int64
					var parts []string
					for _, op := range slices.Sorted(maps.Keys(m)) {
						total += m[op]
						parts = append(parts, fmt.Sprintf("%s %d (%.3f/dir)", op, m[op], float64(m[op])/chunkstore.PrefixCount))
					}
					per := ""
					if full && ph == "1 mark" {
						per = fmt.Sprintf(", %.2f per referenced chunk", float64(total)/float64(len(refs)))
					}
					t.Logf("  phase %s: %d requests, %.3f per prefix dir%s: %s", ph, total, float64(total)/chunkstore.PrefixCount, per, strings.Join(parts, ", "))
				}
			})
		}
	}
}
