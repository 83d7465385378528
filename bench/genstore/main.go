// Command genstore writes a benchmark fixture: a chunk store with N small
// chunks, a fraction of them garbage, the rest referenced once each from M
// fixed indexes, every chunk aged so that unreferenced ones are collectable.
// Running it again with the same flags restores the same store: the chunks
// a GC removed are written again and every chunk's times are aged again.
//
//	go run ./bench/genstore -chunks 1000000 -indexes 100 -garbage 0 /mnt/bench/store
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/bench/fixture"
	"chunkgc/blob"
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
	chunkDir, err := fixture.Layout(base)
	if err != nil {
		return err
	}
	old := unix.NsecToTimespec(time.Now().Add(-age).UnixNano())
	times := []unix.Timespec{old, old}
	digests, err := fixture.Chunks(n, size, workers, 0x6368756e6b6763 /* "chunkgc" */, func(d blob.Digest, data []byte) error {
		b, err := blob.Encode(data, false)
		if err != nil {
			return err
		}
		h := d.String()
		p := filepath.Join(chunkDir, h[:4], h)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		return unix.UtimesNano(p, times)
	})
	if err != nil {
		return err
	}
	refs := digests[:n-garbage]
	if err := fixture.Indexes(base, refs, m); err != nil {
		return err
	}
	fmt.Printf("genstore: %d chunks (%d referenced) in %d indexes at %s\n", n, len(refs), m, base)
	return nil
}
