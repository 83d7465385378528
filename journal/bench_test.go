package journal

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

// benchWriter returns a Writer on a fresh journal, aborted when b ends.
func benchWriter(b *testing.B) *Writer {
	b.Helper()
	dir := b.TempDir()
	w, err := Create(fsys.Real{}, rtest.DirFD(b, dir), dir, testHeader("bench", 1), fsys.Keep)
	rtest.OK(b, err)
	b.Cleanup(func() { w.Abort() })
	return w
}

// BenchmarkAdd is the cost of journaling one removed chunk, compression
// and writes amortised, from one sweep worker.
//
// go test -run '^$' -bench 'Add|UnlinkFloor' -count 10 -cpu 2 ./journal
func BenchmarkAdd(b *testing.B) {
	w := benchWriter(b)
	r := rec(1)
	b.ReportAllocs()
	for b.Loop() {
		r.Size++
		r.Digest[0]++
		if err := w.Add(r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAddParallel is BenchmarkAdd from GOMAXPROCS workers at once:
// the contention on the Writer's mutex.
//
// go test -run '^$' -bench 'Add|UnlinkFloor' -count 10 -cpu 2 ./journal
func BenchmarkAddParallel(b *testing.B) {
	w := benchWriter(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := rec(2)
		for pb.Next() {
			r.Size++
			r.Digest[0]++
			if err := w.Add(r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkUnlinkFloor is what Add runs beside: creating and unlinking a
// small file with *at calls (the unlink alone is about half of it), the
// floor BenchmarkAdd is compared against.
//
// go test -run '^$' -bench 'Add|UnlinkFloor' -count 10 -cpu 2 ./journal
func BenchmarkUnlinkFloor(b *testing.B) {
	dir := b.TempDir()
	dirfd := rtest.DirFD(b, dir)
	rtest.OK(b, os.WriteFile(filepath.Join(dir, "x"), nil, 0o600))
	name := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	i := 0
	for b.Loop() {
		i++
		n := name[:60] + strconv.Itoa(i%1000)
		fd, err := unix.Openat(dirfd, n, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
		if err := unix.Unlinkat(dirfd, n, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRead is ReadFile of a journal of 100 000 records.
//
// go test -run '^$' -bench Read -count 10 -cpu 2 ./journal
func BenchmarkRead(b *testing.B) {
	dir := b.TempDir()
	dirfd := rtest.DirFD(b, dir)
	w, err := Create(fsys.Real{}, dirfd, dir, testHeader("read", 1), fsys.Keep)
	rtest.OK(b, err)
	const n = 100_000
	for i := range n {
		rtest.OK(b, w.Add(rec(i)))
	}
	rtest.OK(b, w.Close(Trailer{Records: n}))
	st, err := os.Stat(w.Path())
	rtest.OK(b, err)
	b.SetBytes(n * recordSize)
	b.ReportAllocs()
	for b.Loop() {
		j, err := ReadFile(dirfd, dir, FileName("read"))
		if err != nil || len(j.Records) != n {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.Size())/n, "file-bytes/record")
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}
