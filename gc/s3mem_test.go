package gc

import (
	"context"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/objstore"
)

// genBucket is the memory benchmark's bucket: a fixed, sorted set of keys
// listed without allocating per key (one in five older than the cutoff,
// the rest young), whose Delete only counts. It holds its keys before the
// measurement starts, so that what the benchmark measures is the sweep's
// memory, not the bucket's.
type genBucket struct {
	keys         []string // sorted
	old, young   time.Time
	deleted      atomic.Int64
	deleteCalled atomic.Int64
}

func newGenBucket(f *s3Fixture, n int) *genBucket {
	b := &genBucket{old: f.now.Add(-72 * time.Hour), young: f.now}
	for i := range n {
		d := blob.Sum(fmt.Appendf(nil, "s3 memory benchmark %d", i))
		b.keys = append(b.keys, f.key(d, ""))
	}
	slices.Sort(b.keys)
	return b
}

func (b *genBucket) List(ctx context.Context, prefix string, o objstore.ListOptions) iter.Seq2[objstore.Object, error] {
	return func(yield func(objstore.Object, error) bool) {
		i := sort.SearchStrings(b.keys, o.StartAfter)
		for i < len(b.keys) && b.keys[i] <= o.StartAfter {
			i++
		}
		for ; i < len(b.keys); i++ {
			k := b.keys[i]
			if o.Before != "" && k >= o.Before {
				return
			}
			lm := b.young
			if i%5 == 0 {
				lm = b.old
			}
			if !yield(objstore.Object{Key: k, Size: 100, LastModified: lm}, nil) {
				return
			}
		}
	}
}

func (b *genBucket) Delete(ctx context.Context, keys []string) error {
	b.deleted.Add(int64(len(keys)))
	b.deleteCalled.Add(1)
	return nil
}

// BenchmarkS3SweepMemory measures the S3 sweep's memory against the
// object count: 10,000 and 100,000 objects (one in five garbage, no local
// files) over 16 key ranges. It reports the peak live heap above the
// baseline (sampled after a forced GC every 2,000 keys) and the bytes and
// allocations per object; the peak stays flat in the object count (the
// listing is streamed and the delete queue bounded), the per-object
// figures constant. No timing is asserted.
//
//	go test -run '^$' -bench S3SweepMemory -benchtime 1x -count 3 ./gc
func BenchmarkS3SweepMemory(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint("objects=", n), func(b *testing.B) {
			f := newS3Fixture(b)
			bucket := newGenBucket(f, n)
			var peak, allocs, bytes uint64
			var ms runtime.MemStats
			b.ReportAllocs()
			for b.Loop() {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				base, mallocs, total := ms.HeapAlloc, ms.Mallocs, ms.TotalAlloc
				seen := 0
				s := &s3Sweep{bucket: bucket, cache: f.cache, locks: f.locks, prefix: s3Prefix, ranges: 16, cut: f.cut,
					log: zap.NewNop(), now: time.Now, before: func(string) {
						if seen++; seen%2000 == 0 {
							runtime.GC()
							runtime.ReadMemStats(&ms)
							if ms.HeapAlloc > base {
								peak = max(peak, ms.HeapAlloc-base)
							}
						}
					}}
				rtest.OK(b, s.run(context.Background()))
				runtime.ReadMemStats(&ms)
				allocs, bytes = ms.Mallocs-mallocs, ms.TotalAlloc-total
				rtest.Equal(b, "removed", int64((n+4)/5), s.c.Removed)
			}
			b.ReportMetric(float64(peak)/1024, "peak-live-heap-KiB")
			b.ReportMetric(float64(bytes)/float64(n), "B/object")
			b.ReportMetric(float64(allocs)/float64(n), "allocs/object")
		})
	}
}
