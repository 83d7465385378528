package chunkstore

import (
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

// BenchmarkTouch touches one chunk by digest. "seam" is fsys.Real's
// utimensat through the fsys.Syscalls interface: against "x/sys", the bare
// syscall, the interface call costs nanoseconds and utimensat microseconds,
// and fsys.Real NUL-terminates the name on its stack where x/sys copies it
// to the heap; "seam-overhead" is the interface call alone. Through a
// reused [Toucher] (GC's mark) a touch must not allocate; [Store.Touch]
// allocates its Toucher.
//
// go test -run '^$' -bench Touch -benchmem -count 10 -cpu 2 ./chunkstore
func BenchmarkTouch(b *testing.B) {
	s, d := oneChunk(b, "bench touch", testOpts(b))
	name := string(appendRelName(nil, d))
	times := s.touchTimes[:]
	var seam, nop fsys.Syscalls = fsys.Real{}, nopSys{}

	benchLoop(b, "x/sys", func() error { return unix.UtimesNanoAt(s.chunksFd, name, times, unix.AT_SYMLINK_NOFOLLOW) })
	benchLoop(b, "seam", func() error { return seam.UtimesNanoAt(s.chunksFd, name, times, unix.AT_SYMLINK_NOFOLLOW) })
	// The seam alone, without the syscall: what it adds to each call.
	benchLoop(b, "seam-overhead", func() error { return nop.UtimesNanoAt(s.chunksFd, name, times, unix.AT_SYMLINK_NOFOLLOW) })
	benchLoop(b, "Store.Touch", func() error { return s.Touch(d) })
	tc := s.NewToucher()
	benchLoop(b, "Toucher", func() error { return tc.Touch(d) })
	if n := testing.AllocsPerRun(100, func() { rtest.OK(b, tc.Touch(d)) }); n != 0 {
		b.Fatalf("Toucher.Touch: %v allocs/op, want 0", n)
	}
}

// benchLoop runs call as the sub-benchmark name of b, which reports its
// allocations and stops at call's first error.
func benchLoop(b *testing.B, name string, call func() error) {
	b.Run(name, func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// nopSys makes no syscall in UtimesNanoAt.
type nopSys struct{ fsys.Real }

func (nopSys) UtimesNanoAt(int, string, []unix.Timespec, int) error { return nil }

// BenchmarkReadNames lists a prefix dir of 10,000 entries.
//
// go test -run '^$' -bench ReadNames -count 10 -cpu 2 ./chunkstore
func BenchmarkReadNames(b *testing.B) {
	const p = 0x0102
	s := miniStore(b, b.TempDir(), testOpts(b), p)
	want := fillPrefixDir(b, s, p, 10000)
	b.Cleanup(func() { removeTmpNames(b, s, p, want) })
	dir, err := s.OpenPrefix(p)
	rtest.OK(b, err)
	defer dir.Close()
	b.ReportAllocs()
	var n int
	for b.Loop() {
		rtest.OK(b, dir.ReadNames(func(name []byte, _ uint8) error {
			if k, _ := Classify(name); k != KindOther {
				n++
			}
			return nil
		}))
	}
	b.ReportMetric(float64(len(want)*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkPrefixStat stats one chunk of a prefix dir by name: StatBytes,
// with the name in a byte slice as ReadNames hands it out, must not
// allocate; Stat with a string made from it allocates the string.
//
// go test -run '^$' -bench PrefixStat -benchmem -count 5 -cpu 2 ./chunkstore
func BenchmarkPrefixStat(b *testing.B) {
	s, d := oneChunk(b, "bench prefix stat", testOpts(b))
	dir, err := s.OpenPrefix(d.Prefix())
	rtest.OK(b, err)
	defer dir.Close()
	name := d.AppendHex(nil)
	var st unix.Stat_t

	n := string(name)

	benchLoop(b, "StatBytes", func() error { return dir.StatBytes(name, &st) })
	if n := testing.AllocsPerRun(100, func() { rtest.OK(b, dir.StatBytes(name, &st)) }); n != 0 {
		b.Fatalf("StatBytes: %v allocs/op, want 0", n)
	}
	benchLoop(b, "Stat", func() error { return dir.Stat(string(name), &st) })
	benchLoop(b, "x/sys", func() error { return unix.Fstatat(dir.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW) })
}
