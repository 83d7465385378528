// Command genstore writes a benchmark fixture: a chunk store with N small
// chunks, a fraction of them garbage, the rest referenced once each from M
// fixed indexes, every chunk aged so that unreferenced ones are collectable.
// Running it again with the same flags restores the same store: the chunks
// a GC removed are written again and every chunk's times are aged again.
//
//	go run ./bench/genstore -chunks 1000000 -indexes 100 -garbage 0 /mnt/bench/store
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/index"
)

func main() {
	chunks := flag.Int("chunks", 100000, "number of chunk files")
	indexes := flag.Int("indexes", 100, "number of fixed indexes the referenced chunks are spread over")
	garbage := flag.Float64("garbage", 0, "fraction of chunks no index references")
	garbageChunks := flag.Int("garbage-chunks", -1, "number of chunks no index references (overrides -garbage when >= 0)")
	size := flag.Int("size", 64, "plain bytes per chunk (small keeps the fixture fast; GC cost is per file, not per byte)")
	age := flag.Duration("age", 48*time.Hour, "age of every chunk's atime and mtime")
	workers := flag.Int("workers", 8, "parallel file creation")
	flag.Parse()
	if flag.NArg() != 1 || *indexes < 1 || *garbage < 0 || *garbage > 1 {
		fmt.Fprintln(os.Stderr, "usage: genstore [-chunks N] [-indexes M] [-garbage F | -garbage-chunks G] [-size B] [-age D] DIR")
		os.Exit(2)
	}
	nGarbage := int(float64(*chunks) * *garbage)
	if *garbageChunks >= 0 {
		nGarbage = min(*garbageChunks, *chunks)
	}
	if err := run(flag.Arg(0), *chunks, *indexes, nGarbage, *size, *age, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "genstore:", err)
		os.Exit(1)
	}
}

func run(base string, n, m, garbage int, size int, age time.Duration, workers int) error {
	chunkDir := filepath.Join(base, ".chunks")
	if err := os.MkdirAll(chunkDir, 0o750); err != nil {
		return err
	}
	for p := range 65536 {
		if err := os.Mkdir(filepath.Join(chunkDir, fmt.Sprintf("%04x", p)), 0o750); err != nil && !os.IsExist(err) {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(base, ".lock"), nil, 0o644); err != nil {
		return err
	}
	old := unix.NsecToTimespec(time.Now().Add(-age).UnixNano())
	times := []unix.Timespec{old, old}
	digests := make([]blob.Digest, n)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			data := make([]byte, size)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				binary.LittleEndian.PutUint64(data, uint64(i))
				binary.LittleEndian.PutUint64(data[8:], 0x6368756e6b6763) // "chunkgc"
				d := blob.Sum(data)
				digests[i] = d
				b, err := blob.Encode(data, false)
				if err == nil {
					h := d.String()
					p := filepath.Join(chunkDir, h[:4], h)
					err = os.WriteFile(p, b, 0o644)
					if err == nil {
						err = unix.UtimesNano(p, times)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	refs := digests[:n-garbage]
	per := (len(refs) + m - 1) / m
	for i := range m {
		part := refs[min(i*per, len(refs)):min((i+1)*per, len(refs))]
		dir := filepath.Join(base, "vm", fmt.Sprint(1000+i), "2025-01-01T00:00:00Z")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := index.WriteFixedFile(filepath.Join(dir, "drive-scsi0.img.fidx"), uint64(len(part))*4096, 4096, part); err != nil {
			return err
		}
	}
	fmt.Printf("genstore: %d chunks (%d referenced) in %d indexes at %s\n", n, len(refs), m, base)
	return nil
}
