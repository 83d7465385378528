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
// escape"). Slots hold fd+1, 0 for none. Fds are cached while the process
// budget lasts; beyond it, a prefix dir is opened for one operation and
// closed again.
type prefixTable struct {
	fds []atomic.Int32
}

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
	if v := slot.Load(); v > 0 {
		return int(v - 1), false, nil
	}
	fd, err = s.openPrefixFd(p, name)
	if err != nil {
		return -1, false, err
	}
	budget := fdBudget()
	if budget.Add(-1) < 0 {
		budget.Add(1)
		return fd, true, nil
	}
	if slot.CompareAndSwap(0, int32(fd+1)) {
		return fd, false, nil
	}
	// Another goroutine cached one first: use theirs.
	budget.Add(1)
	unix.Close(fd)
	return int(slot.Load() - 1), false, nil
}

// TakePrefix returns prefix dir p as a [PrefixDir] that owns its fd: the
// cached one if phase 1 left one (the cache forgets it), else a fresh open
// as [Store.OpenPrefix] does. GC's sweep takes every prefix dir this way
// once, after the last touch of its mark; no [Toucher] may run
// concurrently.
func (s *Store) TakePrefix(p uint16) (*PrefixDir, error) {
	if v := s.prefixes.fds[p].Swap(0); v > 0 {
		dir := &PrefixDir{s: s, fd: int(v - 1), p: p, cached: true}
		appendPrefixName(dir.name[:0], p)
		return dir, nil
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
// Dirs whose fd is cached were checked when they were opened. It returns
// the prefixes of missing dirs (the sweep skips those with a warning). The
// check is fstatat(AT_SYMLINK_NOFOLLOW) on the .chunks fd, spread over
// workers goroutines; ctx is checked every 256 dirs.
//
// It is a check, not a guarantee: a dir swapped for a symlink after it was
// checked is still refused by the sweep's O_NOFOLLOW open (which stops the
// run), so nothing outside is touched either way; the check only makes the
// common case — a symlink planted before the run — stop GC before its first
// removal.
func (s *Store) CheckPrefixDirs(ctx context.Context, workers int) (missing []uint16, err error) {
	workers = max(1, workers)
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	for range workers {
		wg.Go(func() {
			var st unix.Stat_t
			var name [4]byte
			for {
				p := next.Add(1) - 1
				if p >= PrefixCount {
					return
				}
				if p%256 == 0 && ctx.Err() != nil {
					return
				}
				if s.prefixes.fds[p].Load() > 0 {
					continue
				}
				n := appendPrefixName(name[:0], uint16(p))
				err := s.sys.Fstatat(s.chunksFd, string(n), &st, unix.AT_SYMLINK_NOFOLLOW)
				switch {
				case errors.Is(err, fs.ErrNotExist):
					mu.Lock()
					missing = append(missing, uint16(p))
					mu.Unlock()
					continue
				case err != nil:
					err = withPath(err, s.chunks+"/"+string(n))
				case st.Mode&unix.S_IFMT == unix.S_IFLNK:
					err = &fs.PathError{Op: "check prefix dir", Path: s.chunks + "/" + string(n), Err: fmt.Errorf("%w: %w", ErrUnexpectedPrefix, nofollow.ErrSymlink)}
				case st.Mode&unix.S_IFMT != unix.S_IFDIR:
					err = &fs.PathError{Op: "check prefix dir", Path: s.chunks + "/" + string(n), Err: fmt.Errorf("%w (%s)", ErrUnexpectedPrefix, nofollow.TypeName(st.Mode))}
				default:
					continue
				}
				mu.Lock()
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
