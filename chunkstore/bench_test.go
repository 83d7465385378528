package chunkstore

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkTouch compares a touch through the seam with the bare syscall:
// the interface call costs nanoseconds, utimensat microseconds.
//
// go test -run '^$' -bench Touch -count 10 -cpu 2 ./chunkstore
func BenchmarkTouch(b *testing.B) {
	blb, d := testChunk(b, "bench touch")
	s := miniStore(b, b.TempDir(), testOpts(b), d.Prefix())
	_, _, err := s.Insert(blb, d)
	ok(b, err)
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
		var sys sysOps = realSys{}
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
		var sys sysOps = nopSys{}
		b.ReportAllocs()
		for b.Loop() {
			if err := sys.UtimesNanoAt(s.chunksFd, name, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// nopSys makes no syscall in UtimesNanoAt.
type nopSys struct{ realSys }

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
	ok(b, err)
	defer dir.Close()
	b.ReportAllocs()
	var n int
	for b.Loop() {
		ok(b, dir.ReadNames(func(name []byte, _ uint8) error {
			if k, _ := Classify(name); k != KindOther {
				n++
			}
			return nil
		}))
	}
	b.ReportMetric(float64(len(want)*b.N)/b.Elapsed().Seconds(), "entries/s")
}
