package chunkstore

import (
	"errors"
	"io/fs"
	"unsafe"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
)

// direntBufSize is the size of the buffer ReadNames hands to getdents64: a
// prefix dir of a big store holds a few hundred entries of ~88 bytes, which
// this reads in one or two calls.
const direntBufSize = 32 << 10

// PrefixDir is an open prefix directory .chunks/xxxx: an O_DIRECTORY fd on
// which GC's mark and sweep list, stat, touch and unlink chunks with *at
// calls, and which carries the prefix dir's flock (doc "Prefix locks"). It is
// not safe for concurrent use.
type PrefixDir struct {
	s    *Store
	fd   int
	p    uint16
	name [4]byte // "xxxx"
	// cached: fd came from the store's prefix table (TakePrefix), whose
	// fd budget Close gives back.
	cached bool
	// Name and path strings are built only when asked for (errors, logs):
	// sweep opens all 65,536 prefix dirs of a store.
}

// OpenPrefix opens prefix dir p: openat(.chunks fd, "xxxx",
// O_RDONLY|O_DIRECTORY|O_CLOEXEC|O_NOFOLLOW). A missing dir gives an
// error matching fs.ErrNotExist; a symlink is an error matching
// [nofollow.ErrSymlink], a file one matching [nofollow.ErrNotDir]; each
// names the dir.
func (s *Store) OpenPrefix(p uint16) (*PrefixDir, error) {
	dir := &PrefixDir{s: s, fd: -1, p: p}
	fd, err := s.openPrefixFd(p, dir.name[:])
	if err != nil {
		return nil, err
	}
	dir.fd = fd
	return dir, nil
}

// Name returns the prefix dir's name, its 4 hex digits.
func (p *PrefixDir) Name() string { return string(p.name[:]) }

// Prefix returns the prefix dir's number.
func (p *PrefixDir) Prefix() uint16 { return p.p }

// Cached reports whether the dir's fd came from the store's fd cache
// ([Store.TakePrefix]): it counts against the process's fd budget until
// Close.
func (p *PrefixDir) Cached() bool { return p.cached }

// dirPath returns base/.chunks/xxxx.
func (p *PrefixDir) dirPath() string { return p.s.chunks + "/" + string(p.name[:]) }

// path returns the full path of entry name of the prefix dir.
func (p *PrefixDir) path(name string) string { return p.dirPath() + "/" + name }

// Close closes the dir fd, which drops any flock held through it.
func (p *PrefixDir) Close() error {
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	if p.cached {
		p.cached = false
		fdBudget().Add(1)
	}
	if err != nil {
		return &fs.PathError{Op: "close", Path: p.dirPath(), Err: err}
	}
	return nil
}

// Lock takes a blocking flock on the prefix dir, LOCK_EX when exclusive,
// LOCK_SH otherwise (EINTR is retried). unlock releases it; closing the
// PrefixDir releases it too.
func (p *PrefixDir) Lock(exclusive bool) (unlock func() error, err error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	if err := p.s.sys.Flock(p.fd, how); err != nil {
		return nil, withPath(err, p.dirPath())
	}
	return func() error {
		if err := p.s.sys.Flock(p.fd, unix.LOCK_UN); err != nil {
			return withPath(err, p.dirPath())
		}
		return nil
	}, nil
}

// ReadNames calls fn with the name and d_type (unix.DT_*) of every entry of
// the prefix dir except "." and "..", in directory order, from the start of
// the dir on every call. It reads with getdents64 into a buffer reused across
// calls and parses the records itself (unix.ParseDirent drops d_type), so it
// does not allocate per entry. name is valid only during the call of fn.
// d_type may be DT_UNKNOWN on some filesystems: then use [PrefixDir.Stat].
// An error from fn stops the listing and is returned as is.
func (p *PrefixDir) ReadNames(fn func(name []byte, dtype uint8) error) error {
	if _, err := p.s.sys.Seek(p.fd, 0, 0); err != nil {
		return withPath(err, p.dirPath())
	}
	buf := p.s.bufs.Get().(*[direntBufSize]byte)
	defer p.s.bufs.Put(buf)
	return fsys.ReadDirents(p.s.sys, p.fd, p.dirPath, buf[:], fn)
}

// readDirents lists the dir fd (at path) with fsys.ReadDirents.
func readDirents(sys fsys.Syscalls, fd int, path string, buf []byte, fn func(name []byte, dtype uint8) error) error {
	return fsys.ReadDirents(sys, fd, func() string { return path }, buf, fn)
}

// Stat stats entry name of the prefix dir without following symlinks
// (fstatat AT_SYMLINK_NOFOLLOW). Errors are *fs.PathError naming the full
// path; a missing entry matches fs.ErrNotExist.
func (p *PrefixDir) Stat(name string, st *unix.Stat_t) error {
	if err := p.s.sys.Fstatat(p.fd, name, st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return withPath(err, p.path(name))
	}
	return nil
}

// StatBytes is [PrefixDir.Stat] for a name held in a byte slice, such as
// the one [PrefixDir.ReadNames] passes: it does not allocate (unless it
// fails), and it does not keep name, so the caller may reuse it at once.
func (p *PrefixDir) StatBytes(name []byte, st *unix.Stat_t) error {
	// The string aliases name only for the duration of the syscall; the
	// seam copies it before keeping it (see fsys.Syscalls), and the error names a
	// freshly built full path.
	n := unsafe.String(unsafe.SliceData(name), len(name))
	if err := p.s.sys.Fstatat(p.fd, n, st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return withPath(err, p.path(string(name)))
	}
	return nil
}

// statxMask is what [PrefixDir.StatCached] and [PrefixDir.StatFresh] ask
// for and require: the sweep's type, link count, atime and size.
const statxMask = unix.STATX_TYPE | unix.STATX_MODE | unix.STATX_NLINK | unix.STATX_ATIME | unix.STATX_SIZE

// ErrStatxIncomplete is matched by the error of [PrefixDir.StatCached] and
// [PrefixDir.StatFresh] when even a synced statx left out a field GC
// decides by (type, link count, atime or size).
var ErrStatxIncomplete = errors.New("statx did not report type, link count, atime and size")

// StatCached stats entry name of the prefix dir, held in a byte slice as
// [PrefixDir.ReadNames] passes it, without following symlinks and from the
// attributes the kernel has cached if it has them: statx(dir fd, name,
// AT_SYMLINK_NOFOLLOW|AT_STATX_DONT_SYNC, type|mode|nlink|atime|size). On
// a network or FUSE filesystem this can spare the GETATTR round trip that
// fstatat may make; on a local one it is fstatat. The result may be stale:
// it is for GC's lock-free first pass, whose every removal is decided again
// under the prefix lock with [PrefixDir.StatFresh]. A reply without one of
// those fields is asked again with AT_STATX_FORCE_SYNC; still without, the
// error matches [ErrStatxIncomplete]. It does not allocate (unless it
// fails) and does not keep name. Errors name the full path; a missing entry
// matches fs.ErrNotExist.
func (p *PrefixDir) StatCached(name []byte, stx *unix.Statx_t) error {
	n := unsafe.String(unsafe.SliceData(name), len(name)) // see StatBytes
	err := p.s.sys.Statx(p.fd, n, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, statxMask, stx)
	if err == nil && stx.Mask&statxMask != statxMask {
		err = p.s.sys.Statx(p.fd, n, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, statxMask, stx)
	}
	return p.statxResult(err, stx, n)
}

// StatFresh stats entry name of the prefix dir without following symlinks,
// fetching the attributes from the filesystem's server (statx
// AT_STATX_FORCE_SYNC; on a local filesystem it is fstatat): what GC decides
// a removal by under the prefix lock. Errors are as [PrefixDir.StatCached]'s.
func (p *PrefixDir) StatFresh(name string, stx *unix.Statx_t) error {
	err := p.s.sys.Statx(p.fd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, statxMask, stx)
	return p.statxResult(err, stx, name)
}

func (p *PrefixDir) statxResult(err error, stx *unix.Statx_t, name string) error {
	if err != nil {
		return withPath(err, p.path(name))
	}
	if stx.Mask&statxMask != statxMask {
		return &fs.PathError{Op: "statx", Path: p.path(name), Err: ErrStatxIncomplete}
	}
	return nil
}

// Touch sets the atime of entry name to now, leaving its mtime alone
// (utimensat on the dir fd, {UTIME_NOW, UTIME_OMIT}, AT_SYMLINK_NOFOLLOW). A
// missing entry is an error matching fs.ErrNotExist.
func (p *PrefixDir) Touch(name string) error {
	if err := p.s.sys.UtimesNanoAt(p.fd, name, p.s.touchTimes[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return withPath(err, p.path(name))
	}
	return nil
}

// WriteMarker replaces entry name of the prefix dir with an empty file (a
// temporary file renamed over it, owned like a chunk): on an S3
// datastore's local cache, the "on S3, not cached" marker PBS writes the
// same way. The caller holds the chunk's lock.
func (p *PrefixDir) WriteMarker(name string) error {
	return p.s.writeChunk(p, name, nil)
}

// WriteCached replaces entry name of the prefix dir with the blob b, as
// [Store.Insert] writes a chunk but without its checks and its prefix dir
// lock: the cached copy of an S3 datastore's chunk, written under the
// chunk's lock after its upload.
func (p *PrefixDir) WriteCached(name string, b []byte) error {
	return p.s.writeChunk(p, name, b)
}

// Unlink removes entry name of the prefix dir (unlinkat on the dir fd). A
// missing entry is an error matching fs.ErrNotExist.
func (p *PrefixDir) Unlink(name string) error {
	if err := p.s.sys.Unlinkat(p.fd, name, 0); err != nil {
		return withPath(err, p.path(name))
	}
	return nil
}

// MoveTo renames entry name of the prefix dir to name in the directory open
// as dirfd (dir is its path, for errors), never replacing an entry there:
// renameat2 with RENAME_NOREPLACE, so an existing one is an error matching
// fs.ErrExist. Both dirs must be on one filesystem (else EXDEV). It is how
// GC quarantines a chunk instead of unlinking it.
func (p *PrefixDir) MoveTo(name string, dirfd int, dir string) error {
	if err := p.s.sys.Renameat(p.fd, name, dirfd, name, unix.RENAME_NOREPLACE); err != nil {
		return withPath(err, dir+"/"+name)
	}
	return nil
}

// MoveFrom renames entry name of the directory open as dirfd (dir is its
// path, for errors) into the prefix dir, never replacing a chunk there: an
// existing one (a writer stored it again meanwhile) is an error matching
// fs.ErrExist, a missing source one matching fs.ErrNotExist. It is how a
// quarantined chunk comes back.
func (p *PrefixDir) MoveFrom(dirfd int, dir, name string) error {
	if err := p.s.sys.Renameat(dirfd, name, p.fd, name, unix.RENAME_NOREPLACE); err != nil {
		return withPath(err, p.path(name))
	}
	return nil
}

// Kind is what a prefix dir entry is, judged by its name alone.
type Kind uint8

const (
	// KindOther is any name that is not a chunk's, e.g. a leftover
	// <digest>.tmp_<random>: GC never touches or removes it.
	KindOther Kind = iota
	// KindChunk is exactly 64 lowercase hex digits: a chunk.
	KindChunk
	// KindBad is 64 lowercase hex digits and ".N.bad", N = 0..9: a copy of
	// a chunk that verification found corrupt.
	KindBad
)

func (k Kind) String() string {
	switch k {
	case KindChunk:
		return "chunk"
	case KindBad:
		return "bad chunk"
	default:
		return "not a chunk"
	}
}

// Classify tells what the prefix dir entry called name is and, for chunks and
// bad chunks, returns the digest its name spells. It does not allocate.
func Classify(name []byte) (k Kind, d blob.Digest) {
	const hexLen = 2 * blob.DigestSize
	switch len(name) {
	case hexLen:
		k = KindChunk
	case hexLen + len(".N.bad"):
		s := name[hexLen:]
		if s[0] != '.' || s[1] < '0' || s[1] > '9' || string(s[2:]) != ".bad" {
			return KindOther, blob.Digest{}
		}
		k = KindBad
	default:
		return KindOther, blob.Digest{}
	}
	for i := range blob.DigestSize {
		hi, ok1 := unhex(name[2*i])
		lo, ok2 := unhex(name[2*i+1])
		if !ok1 || !ok2 {
			return KindOther, blob.Digest{}
		}
		d[i] = hi<<4 | lo
	}
	return k, d
}

// unhex decodes one lowercase hex digit.
func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
