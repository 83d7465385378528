// Command floor is the syscall floor of a GC run: it does only the system
// calls a GC cannot avoid — utimensat of every referenced chunk (phase 1) and
// getdents plus fstatat of every chunk file (phase 2) — with the given
// parallelism, and prints the wall time of each phase. The digests are read
// from the store's index files before the clock starts.
//
//	go run ./bench/floor -workers 8 /path/to/store
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	if err := run(flag.Arg(0), *workers); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run(base string, workers int) error {
	var paths [][]byte // "xxxx/<hex>\x00", ready for the raw syscall
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
			paths = append(paths, []byte(h[:4]+"/"+h+"\x00"))
			return nil
		})
	})
	if err != nil {
		return err
	}
	chunks, err := unix.Open(filepath.Join(base, ".chunks"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s/.chunks: %w", base, err)
	}
	defer unix.Close(chunks)

	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(paths)) {
					return
				}
				p := paths[i]
				if err := unix.UtimesNanoAt(chunks, string(p[:len(p)-1]), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("utimensat %s: %w", p, err))
					return
				}
			}
		})
	}
	wg.Wait()
	mark := time.Since(t0)

	t1 := time.Now()
	next.Store(0)
	var entries atomic.Int64
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 32<<10)
			var st unix.Stat_t
			for {
				p := next.Add(1) - 1
				if p >= 65536 {
					return
				}
				name := fmt.Sprintf("%04x", p)
				fd, err := unix.Openat(chunks, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("open %s: %w", name, err))
					return
				}
				for {
					n, err := unix.Getdents(fd, buf)
					if err != nil {
						firstErr.CompareAndSwap(nil, fmt.Errorf("getdents %s: %w", name, err))
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
						if err := unix.Fstatat(fd, string(nameBytes), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
							firstErr.CompareAndSwap(nil, fmt.Errorf("fstatat %s/%s: %w", name, nameBytes, err))
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
		return err
	}
	fmt.Printf("floor workers=%d touched=%d stat=%d mark=%.3fs sweep=%.3fs total=%.3fs\n",
		workers, len(paths), entries.Load(), mark.Seconds(), sweep.Seconds(), (mark + sweep).Seconds())
	return nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
