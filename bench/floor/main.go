// Command floor is the syscall floor of a GC run: it does only the system
// calls a GC cannot avoid, in the cheapest form chunkgc could make them,
// with the given parallelism, and prints the wall time of each phase. The
// digests are read from the store's index files before the clock starts
// and touched in index order, as chunkgc touches them (on a local
// filesystem that order walks the inode table where the backup wrote it).
//
//   - phase 1: per reference a utimensat relative to its prefix dir's fd,
//     opened at the dir's first touch and kept for phase 2 while the fd
//     budget lasts, as chunkgc keeps it (beyond the budget, opened and
//     closed around the touch);
//   - phase 2: per prefix dir, the listing (getdents until the empty
//     reply) on the fd phase 1 kept or a fresh open, and per entry one
//     statx with AT_STATX_DONT_SYNC, the cheapest stat (over FUSE it uses
//     the attributes its LOOKUP brought).
//
// It removes nothing, keeps no lock, reads no index after the clock starts
// and does no cross-check between the phases: everything it leaves out is
// work a safe GC must do, so chunkgc/floor is the price of that safety.
// The fd budget is RLIMIT_NOFILE less 2,048, chunkgc's own.
//
//	go run ./bench/floor -workers 8 /path/to/store
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/index"
)

func main() {
	workers := flag.Int("workers", 8, "parallel workers for both phases")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: floor [-workers N] STORE")
		os.Exit(2)
	}
	r, err := run(flag.Arg(0), *workers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	fmt.Printf("floor workers=%d touched=%d prefix-dirs-kept=%d stat=%d mark=%.3fs sweep=%.3fs total=%.3fs\n",
		*workers, r.touched, r.touchedDirs, r.stat, r.mark.Seconds(), r.sweep.Seconds(), (r.mark + r.sweep).Seconds())
}

// fdReserve is chunkgc's: what its prefix dir fd cache leaves to the rest.
const fdReserve = 2048

// result is what a run did and how long each phase took.
type result struct {
	touched, touchedDirs, stat int64
	mark, sweep                time.Duration
}

func run(base string, workers int) (*result, error) {
	var paths []string // "xxxx/<hex>"
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != base {
			return filepath.SkipDir
		}
		if _, ok := index.KindOf(d.Name()); !ok || !d.Type().IsRegular() {
			return nil
		}
		r, err := index.Open(p)
		if err != nil {
			return err
		}
		defer r.Close()
		return r.Each(func(dg *blob.Digest) error {
			h := dg.String()
			paths = append(paths, h[:4]+"/"+h)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	chunks, err := unix.Open(filepath.Join(base, ".chunks"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s/.chunks: %w", base, err)
	}
	defer unix.Close(chunks)
	var budget atomic.Int64
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > fdReserve {
		budget.Store(int64(rl.Cur - fdReserve))
	}
	var kept [65536]atomic.Int32 // fd+1 of a prefix dir phase 1 kept open
	var firstErr atomic.Value
	// openPrefix opens prefix dir p, or records the error and returns -1.
	openPrefix := func(p uint64) int {
		name := fmt.Sprintf("%04x", p)
		fd, err := unix.Openat(chunks, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			firstErr.CompareAndSwap(nil, fmt.Errorf("open %s: %w", name, err))
			return -1
		}
		return fd
	}

	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	var touchedDirs atomic.Int64
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(paths)) {
					return
				}
				path := paths[i]
				p, _ := strconv.ParseUint(path[:4], 16, 16)
				fd, transient := int(kept[p].Load())-1, false
				if fd < 0 {
					if fd = openPrefix(p); fd < 0 {
						return
					}
					switch {
					case budget.Add(-1) < 0:
						transient = true
					case !kept[p].CompareAndSwap(0, int32(fd+1)):
						// Another worker kept one first.
						unix.Close(fd)
						fd = int(kept[p].Load()) - 1
						budget.Add(1)
					default:
						touchedDirs.Add(1)
					}
				}
				err := unix.UtimesNanoAt(fd, path[5:], ts, unix.AT_SYMLINK_NOFOLLOW)
				if transient {
					unix.Close(fd)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("utimensat %s: %w", path, err))
					return
				}
			}
		})
	}
	wg.Wait()
	mark := time.Since(t0)
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}

	t1 := time.Now()
	next.Store(0)
	var entries atomic.Int64
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			var stx unix.Statx_t
			for {
				p := uint64(next.Add(1) - 1)
				if p >= 65536 {
					return
				}
				fd := int(kept[p].Load()) - 1
				if fd < 0 {
					if fd = openPrefix(p); fd < 0 {
						return
					}
				}
				for {
					n, err := unix.Getdents(fd, buf)
					if err != nil {
						firstErr.CompareAndSwap(nil, fmt.Errorf("getdents %04x: %w", p, err))
						break
					}
					if n == 0 {
						break
					}
					for off := 0; off < n; {
						reclen := int(buf[off+16]) | int(buf[off+17])<<8
						nameBytes := buf[off+19 : off+reclen]
						if i := indexByte(nameBytes, 0); i >= 0 {
							nameBytes = nameBytes[:i]
						}
						off += reclen
						if len(nameBytes) == 0 || nameBytes[0] == '.' {
							continue
						}
						err := unix.Statx(fd, string(nameBytes), unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC,
							unix.STATX_TYPE|unix.STATX_ATIME|unix.STATX_SIZE|unix.STATX_NLINK, &stx)
						if err != nil {
							firstErr.CompareAndSwap(nil, fmt.Errorf("statx %04x/%s: %w", p, nameBytes, err))
						}
						entries.Add(1)
					}
				}
				unix.Close(fd)
			}
		})
	}
	wg.Wait()
	sweep := time.Since(t1)
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}
	return &result{touched: int64(len(paths)), touchedDirs: touchedDirs.Load(), stat: entries.Load(), mark: mark, sweep: sweep}, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
