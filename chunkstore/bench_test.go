package chunkstore

import (
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

// BenchmarkTouch compares a touch through the seam with the bare syscall:
// the interface call costs nanoseconds, utimensat microseconds.
//
// go test -run '^$' -bench Touch -count 10 -cpu 2 ./chunkstore
func BenchmarkTouch(b *testing.B) {
	blb, d := testChunk(b, "bench touch")
	s := miniStore(b, b.TempDir(), testOpts(b), d.Prefix())
	_, _, err := s.Insert(blb, d)
	rtest.OK(b, err)
	name := string(appendRelName(nil, d))
	times := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}

	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := unix.UtimesNanoAt(s.chunksFd, name, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("seam", func(b *testing.B) {
		var sys fsys.Syscalls = fsys.Real{}
		b.ReportAllocs()
		for b.Loop() {
			if err := sys.UtimesNanoAt(s.chunksFd, name, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Store.Touch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Touch(d); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The seam alone, without the syscall: what it adds to each call.
	b.Run("seam-overhead", func(b *testing.B) {
		var sys fsys.Syscalls = nopSys{}
		b.ReportAllocs()
		for b.Loop() {
			if err := sys.UtimesNanoAt(s.chunksFd, name, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
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

// BenchmarkStoreTouch touches one chunk by digest: through a reused
// [Toucher] (GC's mark) it must not allocate; [Store.Touch] allocates its
// Toucher. "seam" is fsys.Real.UtimesNanoAt alone, which NUL-terminates the
// name on its stack, against "x/sys", which copies it to the heap.
//
// go test -run '^$' -bench StoreTouch -benchmem -count 5 -cpu 2 ./chunkstore
func BenchmarkStoreTouch(b *testing.B) {
	blb, d := testChunk(b, "bench store touch")
	s := miniStore(b, b.TempDir(), testOpts(b), d.Prefix())
	_, _, err := s.Insert(blb, d)
	rtest.OK(b, err)
	name := string(appendRelName(nil, d))

	b.Run("Toucher", func(b *testing.B) {
		t := s.NewToucher()
		b.ReportAllocs()
		for b.Loop() {
			if err := t.Touch(d); err != nil {
				b.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(100, func() { rtest.OK(b, t.Touch(d)) }); n != 0 {
			b.Fatalf("Toucher.Touch: %v allocs/op, want 0", n)
		}
	})
	b.Run("Store.Touch", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Touch(d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("seam", func(b *testing.B) {
		var sys fsys.Syscalls = fsys.Real{}
		b.ReportAllocs()
		for b.Loop() {
			if err := sys.UtimesNanoAt(s.chunksFd, name, s.touchTimes[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x/sys", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := unix.UtimesNanoAt(s.chunksFd, name, s.touchTimes[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPrefixStat stats one chunk of a prefix dir by name: StatBytes,
// with the name in a byte slice as ReadNames hands it out, must not
// allocate; Stat with a string made from it allocates the string.
//
// go test -run '^$' -bench PrefixStat -benchmem -count 5 -cpu 2 ./chunkstore
func BenchmarkPrefixStat(b *testing.B) {
	blb, d := testChunk(b, "bench prefix stat")
	s := miniStore(b, b.TempDir(), testOpts(b), d.Prefix())
	_, _, err := s.Insert(blb, d)
	rtest.OK(b, err)
	dir, err := s.OpenPrefix(d.Prefix())
	rtest.OK(b, err)
	defer dir.Close()
	name := d.AppendHex(nil)
	var st unix.Stat_t

	b.Run("StatBytes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := dir.StatBytes(name, &st); err != nil {
				b.Fatal(err)
			}
		}
		if n := testing.AllocsPerRun(100, func() { rtest.OK(b, dir.StatBytes(name, &st)) }); n != 0 {
			b.Fatalf("StatBytes: %v allocs/op, want 0", n)
		}
	})
	b.Run("Stat", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := dir.Stat(string(name), &st); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x/sys", func(b *testing.B) {
		n := string(name)
		b.ReportAllocs()
		for b.Loop() {
			if err := unix.Fstatat(dir.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				b.Fatal(err)
			}
		}
	})
}
