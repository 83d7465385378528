package latfs

import (
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// op indexes the counters.
type op int

const (
	opLookup op = iota
	opForget
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	opCreate
	opTmpfile
	opOpen
	opRead
	opLseek
	opGetlk
	opSetlk
	opSetlkw
	opRelease
	opWrite
	opCopyFileRange
	opIoctl
	opFlush
	opFsync
	opFallocate
	opOpendir
	opReaddir
	opReaddirEmpty
	opReaddirplus
	opReaddirplusEmpty
	opReleasedir
	opFsyncdir
	opStatfs
	opStatx
	numOps
)

var opNames = [numOps]string{
	"LOOKUP", "FORGET", "GETATTR", "SETATTR", "MKNOD", "MKDIR", "UNLINK", "RMDIR", "RENAME", "LINK",
	"SYMLINK", "READLINK", "ACCESS", "GETXATTR", "LISTXATTR", "SETXATTR", "REMOVEXATTR", "CREATE",
	"TMPFILE", "OPEN", "READ", "LSEEK", "GETLK", "SETLK", "SETLKW", "RELEASE", "WRITE",
	"COPY_FILE_RANGE", "IOCTL", "FLUSH", "FSYNC", "FALLOCATE", "OPENDIR", "READDIR", "READDIR_EMPTY",
	"READDIRPLUS", "READDIRPLUS_EMPTY", "RELEASEDIR", "FSYNCDIR", "STATFS", "STATX",
}

// delayFS wraps the node filesystem's raw API: every method counts its
// opcode and sleeps the delay before passing the request on. Methods
// without a request (String, SetDebug, Init, OnUnmount) pass through.
type delayFS struct {
	fuse.RawFileSystem
	delay time.Duration
	n     [numOps]atomic.Uint64
}

func (d *delayFS) hit(o op) {
	d.n[o].Add(1)
	nap(d.delay)
}

func (d *delayFS) snapshot(reset bool) Counts {
	c := Counts{}
	for i := range d.n {
		var v uint64
		if reset {
			v = d.n[i].Swap(0)
		} else {
			v = d.n[i].Load()
		}
		if v != 0 {
			c[opNames[i]] = v
		}
	}
	return c
}

func (d *delayFS) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	d.hit(opLookup)
	return d.RawFileSystem.Lookup(c, h, name, out)
}

// Forget has no reply, so no round trip to delay.
func (d *delayFS) Forget(nodeid, nlookup uint64) {
	d.n[opForget].Add(1)
	d.RawFileSystem.Forget(nodeid, nlookup)
}

func (d *delayFS) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	d.hit(opGetattr)
	return d.RawFileSystem.GetAttr(c, in, out)
}

func (d *delayFS) SetAttr(c <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	d.hit(opSetattr)
	return d.RawFileSystem.SetAttr(c, in, out)
}

func (d *delayFS) Mknod(c <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	d.hit(opMknod)
	return d.RawFileSystem.Mknod(c, in, name, out)
}

func (d *delayFS) Mkdir(c <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	d.hit(opMkdir)
	return d.RawFileSystem.Mkdir(c, in, name, out)
}

func (d *delayFS) Unlink(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	d.hit(opUnlink)
	return d.RawFileSystem.Unlink(c, h, name)
}

func (d *delayFS) Rmdir(c <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	d.hit(opRmdir)
	return d.RawFileSystem.Rmdir(c, h, name)
}

func (d *delayFS) Rename(c <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	d.hit(opRename)
	return d.RawFileSystem.Rename(c, in, oldName, newName)
}

func (d *delayFS) Link(c <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	d.hit(opLink)
	return d.RawFileSystem.Link(c, in, name, out)
}

func (d *delayFS) Symlink(c <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	d.hit(opSymlink)
	return d.RawFileSystem.Symlink(c, h, target, name, out)
}

func (d *delayFS) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	d.hit(opReadlink)
	return d.RawFileSystem.Readlink(c, h)
}

func (d *delayFS) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	d.hit(opAccess)
	return d.RawFileSystem.Access(c, in)
}

func (d *delayFS) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	d.hit(opGetxattr)
	return d.RawFileSystem.GetXAttr(c, h, attr, dest)
}

func (d *delayFS) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	d.hit(opListxattr)
	return d.RawFileSystem.ListXAttr(c, h, dest)
}

func (d *delayFS) SetXAttr(c <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	d.hit(opSetxattr)
	return d.RawFileSystem.SetXAttr(c, in, attr, data)
}

func (d *delayFS) RemoveXAttr(c <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	d.hit(opRemovexattr)
	return d.RawFileSystem.RemoveXAttr(c, h, attr)
}

func (d *delayFS) Create(c <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	d.hit(opCreate)
	return d.RawFileSystem.Create(c, in, name, out)
}

func (d *delayFS) Tmpfile(c <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	d.hit(opTmpfile)
	return d.RawFileSystem.Tmpfile(c, in, out)
}

func (d *delayFS) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	d.hit(opOpen)
	return d.RawFileSystem.Open(c, in, out)
}

func (d *delayFS) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	d.hit(opRead)
	return d.RawFileSystem.Read(c, in, buf)
}

func (d *delayFS) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	d.hit(opLseek)
	return d.RawFileSystem.Lseek(c, in, out)
}

func (d *delayFS) GetLk(c <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	d.hit(opGetlk)
	return d.RawFileSystem.GetLk(c, in, out)
}

func (d *delayFS) SetLk(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	d.hit(opSetlk)
	return d.RawFileSystem.SetLk(c, in)
}

func (d *delayFS) SetLkw(c <-chan struct{}, in *fuse.LkIn) fuse.Status {
	d.hit(opSetlkw)
	return d.RawFileSystem.SetLkw(c, in)
}

func (d *delayFS) Release(c <-chan struct{}, in *fuse.ReleaseIn) {
	d.hit(opRelease)
	d.RawFileSystem.Release(c, in)
}

func (d *delayFS) Write(c <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	d.hit(opWrite)
	return d.RawFileSystem.Write(c, in, data)
}

// Writev is the kernel's WRITE as go-fuse first tries it; it falls back
// to Write on ENOSYS, so the count stays one per request.
func (d *delayFS) Writev(c <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := d.RawFileSystem.Writev(c, in, data)
	if st != fuse.ENOSYS {
		d.hit(opWrite)
	}
	return n, st
}

func (d *delayFS) CopyFileRange(c <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	d.hit(opCopyFileRange)
	return d.RawFileSystem.CopyFileRange(c, in)
}

func (d *delayFS) Ioctl(c <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	d.hit(opIoctl)
	return d.RawFileSystem.Ioctl(c, in, inbuf, out, outbuf)
}

func (d *delayFS) Flush(c <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	d.hit(opFlush)
	return d.RawFileSystem.Flush(c, in)
}

func (d *delayFS) Fsync(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	d.hit(opFsync)
	return d.RawFileSystem.Fsync(c, in)
}

func (d *delayFS) Fallocate(c <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	d.hit(opFallocate)
	return d.RawFileSystem.Fallocate(c, in)
}

func (d *delayFS) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	d.hit(opOpendir)
	return d.RawFileSystem.OpenDir(c, in, out)
}

func (d *delayFS) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	d.hit(opReaddir)
	st := d.RawFileSystem.ReadDir(c, in, out)
	if st == fuse.OK && len(out.Bytes()) == 0 {
		d.n[opReaddirEmpty].Add(1)
	}
	return st
}

func (d *delayFS) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	d.hit(opReaddirplus)
	st := d.RawFileSystem.ReadDirPlus(c, in, out)
	if st == fuse.OK && len(out.Bytes()) == 0 {
		d.n[opReaddirplusEmpty].Add(1)
	}
	return st
}

func (d *delayFS) ReleaseDir(in *fuse.ReleaseIn) {
	d.hit(opReleasedir)
	d.RawFileSystem.ReleaseDir(in)
}

func (d *delayFS) FsyncDir(c <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	d.hit(opFsyncdir)
	return d.RawFileSystem.FsyncDir(c, in)
}

func (d *delayFS) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	d.hit(opStatfs)
	return d.RawFileSystem.StatFs(c, h, out)
}

func (d *delayFS) Statx(c <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	d.hit(opStatx)
	return d.RawFileSystem.Statx(c, in, out)
}
