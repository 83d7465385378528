package chunkstore

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
	"chunkgc/tuning"
)

// Insert stores the blob b as chunk d, unless the chunk exists already.
//
// Under a shared flock on the prefix dir it stats the chunk: if it exists
// (and is not empty), it is touched (atime) and Insert reports pre-existing
// with the existing file's size. Otherwise b is written to
// <digest>.tmp_<random> in the prefix dir (O_EXCL, 0644), fsynced when the
// sync level is SyncFile, chowned to the Owner when [fsys.Owner.Active], and
// renamed into place (then the prefix dir is fsynced too, for SyncFile). On
// any error the tmp file is removed, so no file whose name does not match its
// content is left. An existing empty chunk file (a crash on a filesystem that
// lost the data) is replaced. b must be a valid blob ([blob.Verify]); that d
// is the digest of its data is the caller's promise.
func (s *Store) Insert(b []byte, d blob.Digest) (preExisting bool, size int64, err error) {
	if _, err := blob.Verify(b); err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", d, err)
	}
	dir, err := s.OpenPrefix(d.Prefix())
	if err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", d, err)
	}
	defer dir.Close() // also drops the flock
	if _, err := dir.Lock(false); err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", d, err)
	}

	name := d.String()
	var st unix.Stat_t
	err = s.sys.Fstatat(dir.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return false, 0, fmt.Errorf("insert chunk: %s exists and is not a regular file", dir.path(name))
		}
		if st.Size > 0 || len(b) == 0 {
			if err := s.sys.UtimesNanoAt(dir.fd, name, s.touchTimes[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return true, st.Size, fmt.Errorf("insert chunk: touch existing chunk: %w", withPath(err, dir.path(name)))
			}
			return true, st.Size, nil
		}
		s.log.Warn("replacing empty chunk file", zap.String("chunk", dir.path(name)))
	case errors.Is(err, fs.ErrNotExist):
	default:
		return false, 0, fmt.Errorf("insert chunk: %w", withPath(err, dir.path(name)))
	}
	if err := s.writeChunk(dir, name, b); err != nil {
		return false, 0, fmt.Errorf("insert chunk: %w", err)
	}
	return false, int64(len(b)), nil
}

// writeChunk writes b to a tmp file in dir and renames it to name.
func (s *Store) writeChunk(dir *PrefixDir, name string, b []byte) (err error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := name + ".tmp_" + hex.EncodeToString(rnd[:])
	fd, err := s.sys.Openat(dir.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, chunkMode)
	if err != nil {
		return withPath(err, dir.path(tmp))
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if err != nil {
			if rerr := s.sys.Unlinkat(dir.fd, tmp, 0); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, withPath(rerr, dir.path(tmp)))
			}
		}
	}()
	if s.chown {
		if err := s.sys.Fchown(fd, s.owner.UID, s.owner.GID); err != nil {
			return withPath(err, dir.path(tmp))
		}
	}
	if err := fsys.WriteAll(s.sys, fd, b); err != nil {
		return withPath(err, dir.path(tmp))
	}
	if s.syncLevel == tuning.SyncFile {
		if err := s.sys.Fsync(fd); err != nil {
			return withPath(err, dir.path(tmp))
		}
	}
	cerr := unix.Close(fd)
	fd = -1
	if cerr != nil {
		return &fs.PathError{Op: "close", Path: dir.path(tmp), Err: cerr}
	}
	if err := s.sys.Renameat(dir.fd, tmp, dir.fd, name, 0); err != nil {
		return withPath(err, dir.path(name))
	}
	if s.syncLevel == tuning.SyncFile {
		if err := s.sys.Fsync(dir.fd); err != nil {
			return withPath(err, dir.dirPath())
		}
	}
	return nil
}

// SyncFS syncs the filesystem holding the store (syncfs(2)): the "filesystem"
// sync level calls it once at the end of a writer session instead of fsyncing
// every chunk.
func (s *Store) SyncFS() error {
	if err := s.sys.Syncfs(s.chunksFd); err != nil {
		return fmt.Errorf("sync chunk store: %w", withPath(err, s.chunks))
	}
	return nil
}

// Touch sets the atime of chunk d to now and leaves its mtime alone:
// utimensat(prefix dir fd, "<digest>", {UTIME_NOW, UTIME_OMIT},
// AT_SYMLINK_NOFOLLOW), on the prefix dir's fd from the store's table (doc
// "No escape"). It takes no lock (see doc "Touch"). A missing chunk is never
// a success: the error is an *fs.PathError naming the chunk path that
// matches fs.ErrNotExist (and unix.ENOENT); a prefix dir that is a symlink
// is an error matching [nofollow.ErrSymlink]. It allocates a [Toucher] per
// call; loops over many chunks use one Toucher instead.
func (s *Store) Touch(d blob.Digest) error { return s.NewToucher().Touch(d) }

// maxBad is the number of <digest>.N.bad copies a chunk can have (N = 0..9).
const maxBad = 10

// TouchBad touches every existing <digest>.N.bad (N = 0..9) of chunk d, so
// that bad copies of a chunk an index references are kept for repair, and
// returns how many it touched. Missing ones are skipped; any other error
// stops it.
func (s *Store) TouchBad(d blob.Digest) (touched int, err error) {
	return s.NewToucher().TouchBad(d)
}

// Toucher touches chunks of a store by digest without allocating: it builds
// each chunk's name in a buffer of its own, which the syscall reads in place,
// relative to the fd of its prefix dir from the store's table. It is what
// GC's mark uses, one per worker; it is not safe for concurrent use. Its
// methods behave exactly like [Store.Touch] and [Store.TouchBad] (which use a
// fresh Toucher each).
type Toucher struct {
	s    *Store
	name [2*blob.DigestSize + len(".N.bad")]byte
}

// NewToucher returns a Toucher for chunks of s.
func (s *Store) NewToucher() *Toucher { return &Toucher{s: s} }

// utimes touches entry name (a slice of t.name) of the prefix dir open as
// fd. The string handed to the seam aliases t.name for the call only (see
// fsys.Syscalls); nothing is allocated unless it fails.
func (t *Toucher) utimes(fd int, name []byte) error {
	s := t.s
	return s.sys.UtimesNanoAt(fd, unsafe.String(&name[0], len(name)), s.touchTimes[:], unix.AT_SYMLINK_NOFOLLOW)
}

// Touch is [Store.Touch].
func (t *Toucher) Touch(d blob.Digest) error {
	fd, transient, err := t.s.prefixFd(d.Prefix(), t.name[:])
	if err != nil {
		return err
	}
	err = t.utimes(fd, d.AppendHex(t.name[:0]))
	if transient {
		unix.Close(fd)
	}
	if err != nil {
		return withPath(err, t.s.ChunkPath(d))
	}
	return nil
}

// TouchBad is [Store.TouchBad].
func (t *Toucher) TouchBad(d blob.Digest) (touched int, err error) {
	fd, transient, err := t.s.prefixFd(d.Prefix(), t.name[:])
	if err != nil {
		return 0, err
	}
	if transient {
		defer unix.Close(fd)
	}
	name := d.AppendHex(t.name[:0])
	name = append(name, ".0.bad"...)
	digit := len(name) - 5
	for n := range maxBad {
		name[digit] = byte('0' + n)
		err := t.utimes(fd, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return touched, withPath(err, t.s.ChunkPath(d)+string(name[2*blob.DigestSize:]))
		}
		touched++
	}
	return touched, nil
}
