package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"chunkgc/internal/adapt"
	"chunkgc/internal/nofollow"
)

// fdReserve is how many fds of the process's RLIMIT_NOFILE soft limit the
// prefix dir cache leaves to everything else (index files, locks, workers'
// transient prefix dirs, the log).
const fdReserve = 2048

// fdBudget is how many more prefix dir fds all Stores of the process may
// cache; it starts at the soft RLIMIT_NOFILE (which the Go runtime has
// raised to the hard limit) less fdReserve.
var fdBudget = sync.OnceValue(func() *atomic.Int64 {
	var b atomic.Int64
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > fdReserve {
		b.Store(int64(min(rl.Cur-fdReserve, 1<<30)))
	}
	return &b
})

// prefixTable caches an O_DIRECTORY fd per prefix dir, opened from the
// .chunks fd with O_NOFOLLOW: touches and stats relative to it never follow
// a symlink that a less privileged user swapped in for a prefix dir (doc "No
// escape"). Slots hold fd+1, 0 for none, or slotMissing for a dir
// [Store.CheckPrefixDirs] found missing. Fds are cached while the process
// budget lasts; beyond it, a prefix dir is opened for one operation and
// closed again.
type prefixTable struct {
	fds []atomic.Int32
}

// slotMissing marks a prefix dir that [Store.CheckPrefixDirs] found missing,
// so that [Store.TakePrefix] reports it missing without asking again.
const slotMissing = -1

func (t *prefixTable) init() { t.fds = make([]atomic.Int32, PrefixCount) }

// closeAll closes every cached fd and gives the budget back.
func (t *prefixTable) closeAll() {
	for i := range t.fds {
		if v := t.fds[i].Swap(0); v > 0 {
			unix.Close(int(v - 1))
			fdBudget().Add(1)
		}
	}
}

// openPrefixFd opens prefix dir p from the .chunks fd without following a
// symlink. name is scratch space of at least 4 bytes that the caller owns
// (so that the name does not escape to the heap).
func (s *Store) openPrefixFd(p uint16, name []byte) (int, error) {
	n := appendPrefixName(name[:0], p)
	fd, err := s.sys.Openat(s.chunksFd, unsafe.String(&n[0], len(n)), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, withPath(nofollow.Classify(s.sys, s.chunksFd, string(n), err, true), s.chunks+"/"+string(n))
	}
	return fd, nil
}

// prefixFd returns an fd of prefix dir p, from the cache or freshly opened.
// When transient is true the caller must close fd after its operation.
// It must not run concurrently with [Store.TakePrefix] of the same p or
// with Close.
func (s *Store) prefixFd(p uint16, name []byte) (fd int, transient bool, err error) {
	slot := &s.prefixes.fds[p]
	v := slot.Load()
	if v > 0 {
		return int(v - 1), false, nil
	}
	fd, err = s.openPrefixFd(p, name)
	if err != nil {
		return -1, false, err
	}
	if s.cachePrefixFd(p, v, fd) {
		return fd, false, nil
	}
	if slot.Load() <= 0 { // no budget: the caller closes fd
		return fd, true, nil
	}
	// Another goroutine cached one first: use theirs.
	unix.Close(fd)
	return int(slot.Load() - 1), false, nil
}

// cachePrefixFd puts fd, an open fd of prefix dir p, into p's slot if the
// budget allows and the slot still holds old (no fd, or slotMissing). It
// reports whether the table owns fd now; if not, fd is still the caller's,
// and another goroutine may have cached an fd of p first.
func (s *Store) cachePrefixFd(p uint16, old int32, fd int) bool {
	budget := fdBudget()
	if budget.Add(-1) < 0 {
		budget.Add(1)
		return false
	}
	if s.prefixes.fds[p].CompareAndSwap(old, int32(fd+1)) {
		return true
	}
	budget.Add(1)
	return false
}

// TakePrefix returns prefix dir p as a [PrefixDir] that owns its fd: the
// cached one if phase 1 or [Store.CheckPrefixDirs] left one (the cache
// forgets it), else a fresh open as [Store.OpenPrefix] does. A dir
// CheckPrefixDirs found missing is reported missing (an error matching
// fs.ErrNotExist) without asking the filesystem again: chunks that appear
// in it later are younger than the run. GC's sweep takes every prefix dir
// this way once, after the last touch of its mark; no [Toucher] may run
// concurrently.
func (s *Store) TakePrefix(p uint16) (*PrefixDir, error) {
	switch v := s.prefixes.fds[p].Swap(0); {
	case v > 0:
		dir := &PrefixDir{s: s, fd: int(v - 1), p: p, cached: true}
		appendPrefixName(dir.name[:0], p)
		return dir, nil
	case v == slotMissing:
		return nil, &fs.PathError{Op: "openat", Path: s.chunks + "/" + prefixName(p), Err: unix.ENOENT}
	}
	return s.OpenPrefix(p)
}

// ErrUnexpectedPrefix is matched by the error of [Store.CheckPrefixDirs] for
// a prefix dir that is a symlink or not a directory.
var ErrUnexpectedPrefix = errors.New("prefix dir is not a directory")

// CheckPrefixDirs checks, before GC's sweep removes anything, that every
// prefix dir .chunks/0000 … ffff is a real directory: not a symlink, FIFO,
// file or anything else (those are an error naming the first one found,
// matching [ErrUnexpectedPrefix] and, for a symlink, [nofollow.ErrSymlink]).
// Any other error opening one stops it too. Dirs whose fd is cached were
// checked when they were opened. It returns the prefixes of missing dirs,
// which [Store.TakePrefix] then reports missing (the sweep skips those with
// a warning). The dirs are spread over pool's workers, one unit a dir
// (the caller starts and stops the pool); ctx is checked every 256 dirs.
//
// The check is the sweep's open: openat(.chunks fd, "xxxx",
// O_RDONLY|O_DIRECTORY|O_NOFOLLOW), whose fd it caches for
// [Store.TakePrefix] while the fd budget lasts, so that the sweep lists,
// locks, stats and unlinks through the very fd that was checked and makes
// no LOOKUP or OPENDIR of its own (doc "Round trips"). Beyond the budget the
// fd is closed again and the sweep opens the dir once more.
//
// Once the budget is spent, a dir that listed (a [PrefixListing] of
// [Store.ListPrefixDirs], nil for none) shows as a directory needs no call
// at all; any other is checked with one statx (AT_SYMLINK_NOFOLLOW; the
// attributes of the lookup serve, so over FUSE or NFS it is one LOOKUP)
// instead of an open and a close, whose fd nothing could keep.
//
// It is a check, not a guarantee: a dir swapped for a symlink after it was
// checked and not cached is still refused by the sweep's O_NOFOLLOW open
// (which stops the run), so nothing outside is touched either way; the
// check only makes the common case — a symlink planted before the run —
// stop GC before its first removal.
func (s *Store) CheckPrefixDirs(ctx context.Context, pool *adapt.Pool, listed *PrefixListing) (missing []uint16, err error) {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	for range pool.Workers() {
		wg.Go(func() {
			var name [4]byte
			var stx unix.Statx_t
			w := pool.Worker()
			defer w.Exit()
			for w.Next() {
				p := next.Add(1) - 1
				if p >= PrefixCount {
					return
				}
				w.Done(1)
				if p%256 == 0 && ctx.Err() != nil {
					return
				}
				v := s.prefixes.fds[p].Load()
				if v > 0 {
					continue
				}
				err := s.checkPrefix(uint16(p), v, listed, name[:], &stx)
				if err == nil {
					continue
				}
				mu.Lock()
				if errors.Is(err, fs.ErrNotExist) {
					missing = append(missing, uint16(p))
					mu.Unlock()
					continue
				}
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel(err)
				return
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	slices.Sort(missing)
	return missing, nil
}

// checkPrefix checks prefix dir p, whose slot held v (no fd), for
// CheckPrefixDirs: an O_NOFOLLOW open whose fd it caches, or, once the
// budget is spent, listed's word or [Store.checkPrefixStat]. A missing dir
// matches fs.ErrNotExist and is marked missing in its slot. name is
// scratch space.
func (s *Store) checkPrefix(p uint16, v int32, listed *PrefixListing, name []byte, stx *unix.Statx_t) error {
	n := appendPrefixName(name[:0], p)
	slot := &s.prefixes.fds[p]
	var err error
	switch {
	case fdBudget().Load() > 0:
		var fd int
		fd, err = s.sys.Openat(s.chunksFd, unsafe.String(&n[0], len(n)), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err == nil && s.cachePrefixFd(p, v, fd) {
			return nil
		}
		if err == nil {
			unix.Close(fd)
		} else {
			err = s.unexpectedPrefix(n, nofollow.Classify(s.sys, s.chunksFd, string(n), err, true))
		}
	case listed != nil && listed.IsDir(p):
	default:
		err = s.checkPrefixStat(n, stx)
	}
	switch {
	case err == nil:
		slot.CompareAndSwap(slotMissing, 0) // missing at an earlier check
	case errors.Is(err, fs.ErrNotExist):
		slot.CompareAndSwap(v, slotMissing)
	}
	return err
}

// unexpectedPrefix names prefix dir n in err, and makes a symlink or a
// non-directory match [ErrUnexpectedPrefix].
func (s *Store) unexpectedPrefix(n []byte, err error) error {
	path := s.chunks + "/" + string(n)
	if errors.Is(err, nofollow.ErrSymlink) || errors.Is(err, nofollow.ErrNotDir) {
		return &fs.PathError{Op: "check prefix dir", Path: path, Err: fmt.Errorf("%w: %w", ErrUnexpectedPrefix, err)}
	}
	return withPath(err, path)
}

// checkPrefixStat checks prefix dir n of .chunks with one statx that
// follows no symlink, for a dir whose fd the budget cannot keep. A missing
// dir matches fs.ErrNotExist; a symlink or non-directory matches
// [ErrUnexpectedPrefix].
func (s *Store) checkPrefixStat(n []byte, stx *unix.Statx_t) error {
	err := s.sys.Statx(s.chunksFd, unsafe.String(&n[0], len(n)), unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE, stx)
	switch {
	case err != nil:
	case stx.Mode&unix.S_IFMT == unix.S_IFDIR:
		return nil
	case stx.Mode&unix.S_IFMT == unix.S_IFLNK:
		err = nofollow.ErrSymlink
	default:
		err = fmt.Errorf("%w (%s)", nofollow.ErrNotDir, nofollow.TypeName(uint32(stx.Mode)))
	}
	return s.unexpectedPrefix(n, err)
}
