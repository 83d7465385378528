package chunkstore

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
	"chunkgc/tuning"
)

// PrefixCount is the number of prefix directories: .chunks/0000 … .chunks/ffff.
const PrefixCount = 65536

const (
	chunksName = ".chunks"

	// prefixDirMode and baseMode are the modes Create gives the directories
	// it makes, chunkMode that of a chunk file (.lock is package locking's,
	// see locking.CreateStoreLock).
	prefixDirMode = 0o750
	baseMode      = 0o755
	chunkMode     = 0o644
)

// Options configure [Open] and [Create].
type Options struct {
	// Log receives the store's log lines; nil means zap.NewNop().
	Log *zap.Logger
	// Owner owns every directory and chunk file the store creates, when
	// [fsys.Owner.Active].
	Owner fsys.Owner
	// SyncLevel says how new chunks are made durable: SyncFile fsyncs every
	// chunk file and its prefix dir; SyncFilesystem leaves it to one
	// [Store.SyncFS] at the end of a session; SyncNone does nothing.
	SyncLevel tuning.SyncLevel

	// Syscalls is the syscall seam (see doc "Test seam"): every syscall the
	// store makes on its files goes through it but close(2) and the stat
	// nofollow.Classify makes to name why an open failed. nil means fsys.Real{};
	// only tests set it, to inject an errno at a precise call.
	Syscalls fsys.Syscalls
	// probeDelay replaces the atime probe's 1 s sleep when > 0; only tests
	// that do not depend on the atime moving set it.
	probeDelay time.Duration
}

// Store is an open chunk store: O_DIRECTORY fds of the base directory and of
// its .chunks directory (opened from the base fd without following a
// symlink), and a table of prefix dir fds, through which every chunk
// operation goes (doc "No escape").
type Store struct {
	base       string
	chunks     string // base/.chunks
	baseFd     int
	chunksFd   int
	prefixes   prefixTable
	log        *zap.Logger
	owner      fsys.Owner
	chown      bool // owner.Active() at open
	syncLevel  tuning.SyncLevel
	sys        fsys.Syscalls
	probeDelay time.Duration

	// touchTimes is {UTIME_NOW, UTIME_OMIT}: atime to now, mtime untouched.
	// A field, so that passing it to the seam does not allocate.
	touchTimes [2]unix.Timespec
	// bufs holds *[direntBufSize]byte getdents buffers for ReadNames.
	bufs sync.Pool

	closeOnce sync.Once
	closeErr  error
}

func newStore(base string, opts Options) *Store {
	s := &Store{
		base:       base,
		chunks:     base + "/" + chunksName,
		baseFd:     -1,
		chunksFd:   -1,
		log:        opts.Log,
		owner:      opts.Owner,
		chown:      opts.Owner.Active(),
		syncLevel:  opts.SyncLevel,
		sys:        opts.Syscalls,
		probeDelay: opts.probeDelay,
		touchTimes: [2]unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}},
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.sys = fsys.OrReal(s.sys)
	s.bufs.New = func() any { return new([direntBufSize]byte) }
	return s
}

// cleanBase checks that base is absolute and returns it cleaned.
func cleanBase(base string) (string, error) {
	if !filepath.IsAbs(base) {
		return "", fmt.Errorf("chunk store path %q is not absolute", base)
	}
	return filepath.Clean(base), nil
}

// Open opens the chunk store at base, which must be an absolute path whose
// .chunks is a directory. base itself is resolved as a path (it is the
// configured, trusted part); .chunks is opened from the base fd with
// O_NOFOLLOW, so a .chunks that is a symlink is an error naming it (matching
// [nofollow.ErrSymlink]), as is one that is not a directory. It does not
// check the prefix dirs: see [Store.VerifyLayout] and [Store.CheckPrefixDirs].
func Open(base string, opts Options) (*Store, error) {
	base, err := cleanBase(base)
	if err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	s := newStore(base, opts)
	fd, err := s.sys.Openat(unix.AT_FDCWD, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open chunk store %s: %w", base, withPath(err, base))
	}
	s.baseFd = fd
	fd, err = s.sys.Openat(s.baseFd, chunksName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		err = nofollow.Classify(s.sys, s.baseFd, chunksName, err, true)
		unix.Close(s.baseFd)
		return nil, fmt.Errorf("open chunk store %s: %w", base, withPath(err, s.chunks))
	}
	s.chunksFd = fd
	s.prefixes.init()
	return s, nil
}

// Close closes the store's fds, the cached prefix dir fds included. No
// [Toucher] of the store may be in use. PrefixDirs opened from the store stay
// usable until they are closed themselves.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.prefixes.closeAll()
		if err := unix.Close(s.chunksFd); err != nil {
			s.closeErr = fmt.Errorf("close chunk store %s: %w", s.base, &fs.PathError{Op: "close", Path: s.chunks, Err: err})
		}
		if err := unix.Close(s.baseFd); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("close chunk store %s: %w", s.base, &fs.PathError{Op: "close", Path: s.base, Err: err})
		}
		s.chunksFd, s.baseFd = -1, -1
	})
	return s.closeErr
}

// BaseFD returns the O_DIRECTORY fd of the store's base directory, valid
// until Close. Other packages resolve everything below the base from it
// (the store lock, .gc-status, the index tree), never from the path.
func (s *Store) BaseFD() int { return s.baseFd }

// Syscalls returns the store's syscall seam ([Options.Syscalls], or
// fsys.Real): what works on the same files beside the store, such as GC's
// walk of the tree and its .gc-status write, goes through it too.
func (s *Store) Syscalls() fsys.Syscalls { return s.sys }

// Base returns the store's base directory (absolute, cleaned).
func (s *Store) Base() string { return s.base }

// ChunkPath returns base/.chunks/xxxx/<64 hex digits>, the file of chunk d.
func (s *Store) ChunkPath(d blob.Digest) string {
	b := make([]byte, 0, len(s.chunks)+1+5+2*blob.DigestSize)
	b = append(b, s.chunks...)
	b = append(b, '/')
	return string(appendRelName(b, d))
}

// appendRelName appends "xxxx/<hex>", the chunk's name relative to .chunks.
func appendRelName(b []byte, d blob.Digest) []byte {
	b = appendPrefixName(b, d.Prefix())
	b = append(b, '/')
	return d.AppendHex(b)
}

const hexDigits = "0123456789abcdef"

// appendPrefixName appends the 4 hex digits naming prefix dir p.
func appendPrefixName(b []byte, p uint16) []byte {
	return append(b, hexDigits[p>>12], hexDigits[p>>8&0xf], hexDigits[p>>4&0xf], hexDigits[p&0xf])
}

func prefixName(p uint16) string {
	var b [4]byte
	return string(appendPrefixName(b[:0], p))
}

// withPath is fsys.WithPath.
func withPath(err error, path string) error { return fsys.WithPath(err, path) }
