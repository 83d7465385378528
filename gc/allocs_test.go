package gc

import (
	"testing"
)

// TestMarkSweepAllocsFlat: mark and sweep allocate per run, per index and
// per prefix dir, never per chunk. A store of 4N chunks must cost no more
// allocations per run than one of N chunks, give or take fewer than one per
// 1000 extra chunks (a per-chunk allocation would add 3N). The digest cache
// is measured off (every reference is a touch) and saturated (a capacity
// both stores overflow, so its tables reach full size in both). With a
// fixed worker count the limit is strict; an adaptive pool allocates a few
// times per limit change (its log fields, woken workers), which depends on
// timing, so there the bound is one per 150 extra chunks — still far below
// what a per-chunk allocation adds.
func TestMarkSweepAllocsFlat(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are noise under the race detector (sync.Pool drops items at random)")
	}
	if testing.Short() {
		t.Skip("builds two stores of 65,536 prefix dirs")
	}
	const n = 5000
	small, big := newBenchStore(t, n), newBenchStore(t, 4*n)
	strict, loose := float64(3*n)/1000, float64(3*n)/150
	fixed := func(o *Options) *Options { o.Tuning.Concurrency = 8; return o }

	for _, tt := range []struct {
		name  string
		give  func(bs *benchStore)
		limit float64
	}{
		{"mark, no cache", func(bs *benchStore) { bs.mark(t, fixed(benchOpts(0))) }, strict},
		{"mark, saturated cache", func(bs *benchStore) { bs.mark(t, fixed(benchOpts(1024))) }, strict},
		{"sweep", func(bs *benchStore) { bs.sweep(t, fixed(benchOpts(0))) }, strict},
		{"mark, adaptive", func(bs *benchStore) { bs.mark(t, benchOpts(0)) }, loose},
		{"sweep, adaptive", func(bs *benchStore) { bs.sweep(t, benchOpts(0)) }, loose},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := testing.AllocsPerRun(3, func() { tt.give(small) })
			b := testing.AllocsPerRun(3, func() { tt.give(big) })
			t.Logf("allocs per run: %v for %d chunks, %v for %d chunks", a, small.n, b, big.n)
			if b-a >= tt.limit {
				t.Errorf("allocs per run grow with the chunk count: %v for %d chunks, %v for %d (limit +%v)",
					a, small.n, b, big.n, tt.limit)
			}
		})
	}
}
