package adapt

import (
	"math/rand/v2"
	"testing"
	"time"
)

// drive feeds the climber rates from curve (units/s at n workers, with
// ±noise relative jitter) for samples samples of DefaultInterval each, and
// returns the limits it chose.
func drive(t *testing.T, curve func(n int) float64, start, maxN int, noise float64, samples int, seed uint64) []int {
	t.Helper()
	cfg := Config{Start: start, Max: maxN}
	cfg.defaults()
	c := climber{cfg: &cfg}
	rng := rand.New(rand.NewPCG(seed, 1))
	now := time.Unix(0, 0)
	cur := start
	var limits []int
	for range samples {
		rate := curve(cur) * (1 + noise*(2*rng.Float64()-1))
		next, _ := c.sample(cur, rate, now)
		if next < 1 || next > maxN {
			t.Fatalf("limit %d outside 1..%d", next, maxN)
		}
		cur = next
		limits = append(limits, cur)
		now = now.Add(cfg.Interval)
	}
	return limits
}

// latencyBound is a store where each worker adds perWorker units/s until
// the server saturates at knee workers.
func latencyBound(perWorker float64, knee int) func(int) float64 {
	return func(n int) float64 { return perWorker * float64(min(n, knee)) }
}

// cpuBound is a store that gains until two workers and loses a little
// with every worker beyond 16 (contention).
func cpuBound(n int) float64 {
	r := 1000 * float64(min(n, 2))
	if n > 16 {
		r *= 1 - 0.01*float64(n-16)/16
	}
	return r
}

// settled is the limit held for most of the last half of limits.
func settled(limits []int) int {
	count := map[int]int{}
	best, bestN := 0, 0
	for _, l := range limits[len(limits)/2:] {
		count[l]++
		if count[l] > bestN {
			best, bestN = l, count[l]
		}
	}
	return best
}

func TestClimbFindsTheKnee(t *testing.T) {
	for _, tc := range []struct {
		name      string
		curve     func(int) float64
		start     int
		lo, hi    int // acceptable settled limits
		maxLimit  int
		wantFloor float64 // settled rate ≥ wantFloor × the best rate
	}{
		{"1ms: knee at 48", latencyBound(300, 48), 8, 32, 128, 128, 0.85},
		{"200us: knee at 20", latencyBound(1500, 20), 8, 16, 64, 128, 0.85},
		{"knee above the cap", latencyBound(10, 1000), 8, 128, 128, 128, 1},
		{"local, cpu-bound", cpuBound, 8, 2, 16, 128, 0.95},
		{"start above a low knee", latencyBound(100, 4), 64, 4, 8, 128, 0.95},
		{"one worker is best", func(n int) float64 { return 100 / float64(n) }, 8, 1, 1, 128, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			best := 0.0
			for n := 1; n <= tc.maxLimit; n++ {
				best = max(best, tc.curve(n))
			}
			for seed := range uint64(20) {
				limits := drive(t, tc.curve, tc.start, tc.maxLimit, 0.05, 400, seed)
				got := settled(limits)
				if seed == 0 {
					t.Logf("settled at %d (first limits %v)", got, limits[:12])
				}
				if got < tc.lo || got > tc.hi {
					t.Errorf("seed %d: settled at %d workers, want %d..%d (limits %v)", seed, got, tc.lo, tc.hi, limits[:20])
				}
				if r := tc.curve(got); r < tc.wantFloor*best {
					t.Errorf("seed %d: settled rate %.0f < %.2f × best %.0f", seed, r, tc.wantFloor, best)
				}
			}
		})
	}
}

// TestClimbFollowsAChange: a pool that settled on a warm cache grows when
// the storage turns latency-bound, and shrinks again when it recovers.
func TestClimbFollowsAChange(t *testing.T) {
	cfg := Config{Start: 8, Max: 128}
	cfg.defaults()
	c := climber{cfg: &cfg}
	now := time.Unix(0, 0)
	cur := 8
	run := func(curve func(int) float64, samples int) int {
		for range samples {
			cur, _ = c.sample(cur, curve(cur), now)
			now = now.Add(cfg.Interval)
		}
		return cur
	}
	if got := run(cpuBound, 200); got > 16 {
		t.Fatalf("warm: %d workers, want ≤ 16", got)
	}
	if got := run(latencyBound(300, 64), 400); got < 64 {
		t.Fatalf("after turning latency-bound: %d workers, want ≥ 64", got)
	}
	if got := run(cpuBound, 400); got > 32 {
		t.Fatalf("after recovering: %d workers, want ≤ 32", got)
	}
}

// TestClimbProbesRarely: once settled, at most one sample in Reprobe/Interval
// runs at another limit.
func TestClimbProbesRarely(t *testing.T) {
	limits := drive(t, latencyBound(300, 48), 8, 128, 0, 1000, 0)
	tail := limits[200:]
	want := settled(limits)
	off := 0
	for _, l := range tail {
		if l != want {
			off++
		}
	}
	perProbe := int(DefaultReprobe / DefaultInterval)
	if max := len(tail)/perProbe + 1; off > max {
		t.Fatalf("%d of %d settled samples off the limit %d, want ≤ %d", off, len(tail), want, max)
	}
}
