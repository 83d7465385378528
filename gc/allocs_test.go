package gc

import (
	"testing"
)

// TestMarkSweepAllocsFlat: mark and sweep allocate per run, per index and
// per prefix dir, never per chunk. A store of 4N chunks must cost no more
// allocations per run than one of N chunks, give or take fewer than one per
// 1000 extra chunks (a per-chunk allocation would add 3N). The digest cache
// is measured off (every reference is a touch) and saturated (a capacity
// both stores overflow, so its tables reach full size in both).
func TestMarkSweepAllocsFlat(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are noise under the race detector (sync.Pool drops items at random)")
	}
	if testing.Short() {
		t.Skip("builds two stores of 65,536 prefix dirs")
	}
	const n = 5000
	small, big := newBenchStore(t, n), newBenchStore(t, 4*n)
	limit := float64(3*n) / 1000

	for _, tt := range []struct {
		name string
		give func(bs *benchStore)
	}{
		{"mark, no cache", func(bs *benchStore) { bs.mark(t, benchOpts(0)) }},
		{"mark, saturated cache", func(bs *benchStore) { bs.mark(t, benchOpts(1024)) }},
		{"sweep", func(bs *benchStore) { bs.sweep(t, benchOpts(0)) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := testing.AllocsPerRun(3, func() { tt.give(small) })
			b := testing.AllocsPerRun(3, func() { tt.give(big) })
			t.Logf("allocs per run: %v for %d chunks, %v for %d chunks", a, small.n, b, big.n)
			if b-a >= limit {
				t.Errorf("allocs per run grow with the chunk count: %v for %d chunks, %v for %d (limit +%v)",
					a, small.n, b, big.n, limit)
			}
		})
	}
}
