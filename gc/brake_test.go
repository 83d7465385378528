package gc

import (
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/testkit/rtest"
)

// brakeFixture places used chunks (referenced by one snapshot) and garbage
// chunks, all three days old, of the given plain sizes.
func brakeFixture(t *testing.T, used, garbage, usedSize, garbageSize int) (f *fixture, u, g []blob.Digest) {
	t.Helper()
	f = newFixture(t)
	u, g = f.chunks(used, usedSize, 72*time.Hour), f.chunks(garbage, garbageSize, 72*time.Hour)
	f.snapshot("vm/100/2025-01-01T00:00:00Z", u...)
	return f, u, g
}

func (f *fixture) countExisting(ds []blob.Digest) int {
	n := 0
	for _, d := range ds {
		if f.exists(f.store.ChunkPath(d)) {
			n++
		}
	}
	return n
}

func brakeTuning(percent int, minChunks int64) func(*Options) {
	return func(o *Options) {
		o.Tuning.BrakePercent, o.Tuning.BrakeMinChunks = percent, minChunks
		o.Tuning.AtimeSafetyCheck = false // keeps the zero chunk out of the counts
	}
}

// TestBrakeTable: on real ext4, the brake trips above the threshold (by
// chunks or by bytes) when enough removals are at stake, removes nothing
// then and returns its figures; a dry run reports the same and goes on;
// --force removes; below the threshold, below the minimum or switched off
// it lets the run remove everything a run without it removes.
func TestBrakeTable(t *testing.T) {
	t.Run("trips by chunks, then dry run, then force", func(t *testing.T) {
		t.Parallel()
		f, u, g := brakeFixture(t, 40, 60, 1000, 1000)
		st, err := f.run(brakeTuning(50, 10))
		be := rtest.ErrorAs[*BrakeError](t, err, ErrBrake)
		if st == nil || st.Brake == nil {
			t.Fatalf("Run returned no brake figures with %v", err)
		}
		rtest.Equal(t, "error's report is the status's", *st.Brake, be.Report)
		b := st.Brake
		rtest.Equal(t, "exact", true, b.Exact)
		rtest.Equal(t, "chunks percent", 60.0, b.ChunksPercent)
		rtest.Equal(t, "chunks bound", 0.0, b.ChunksBound)
		rtest.Equal(t, "estimated chunks", int64(100), b.EstimatedChunks)
		rtest.Equal(t, "estimated removals", int64(60), b.EstimatedRemovals)
		rtest.Equal(t, "tripped", true, b.Tripped)
		rtest.Equal(t, "forced", false, b.Forced)
		rtest.Equal(t, "garbage left", len(g), f.countExisting(g))
		rtest.Equal(t, "removed", int64(0), st.RemovedChunks)
		if _, err := ReadStatus(f.base); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a braked run wrote .gc-status (err %v)", err)
		}

		dry, err := f.run(brakeTuning(50, 10), func(o *Options) { o.DryRun = true })
		rtest.OK(t, err)
		rtest.Equal(t, "dry run: would trip", true, dry.Brake.Tripped)
		rtest.Equal(t, "dry run: would remove", int64(60), dry.RemovedChunks)
		rtest.Equal(t, "garbage left after the dry run", len(g), f.countExisting(g))

		forced, err := f.run(brakeTuning(50, 10), func(o *Options) { o.Force = true })
		rtest.OK(t, err)
		rtest.Equal(t, "forced", true, forced.Brake.Forced)
		rtest.Equal(t, "removed when forced", int64(60), forced.RemovedChunks)
		rtest.Equal(t, "garbage left when forced", 0, f.countExisting(g))
		rtest.Equal(t, "used left", len(u), f.countExisting(u))
	})
	t.Run("trips by bytes", func(t *testing.T) {
		t.Parallel()
		f, _, g := brakeFixture(t, 80, 20, 100, 30000)
		st, err := f.run(brakeTuning(50, 10))
		rtest.ErrorIs(t, err, ErrBrake)
		rtest.Equal(t, "chunks percent", 20.0, st.Brake.ChunksPercent)
		if st.Brake.BytesPercent < 90 {
			t.Errorf("bytes percent %.1f, want > 90", st.Brake.BytesPercent)
		}
		rtest.Equal(t, "garbage left", len(g), f.countExisting(g))
	})
	for _, tt := range []struct {
		name      string
		percent   int
		minChunks int64
		report    bool
	}{
		{"below the threshold", 70, 10, true},
		{"below the minimum count", 50, 60, true},
		{"default minimum count", 50, 1000, true},
		{"off", 0, 10, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, u, g := brakeFixture(t, 40, 60, 1000, 1000)
			st, err := f.run(brakeTuning(tt.percent, tt.minChunks))
			rtest.OK(t, err)
			rtest.Equal(t, "report", tt.report, st.Brake != nil)
			if st.Brake != nil {
				rtest.Equal(t, "tripped", false, st.Brake.Tripped)
			}
			rtest.Equal(t, "removed", int64(60), st.RemovedChunks)
			rtest.Equal(t, "garbage left", 0, f.countExisting(g))
			rtest.Equal(t, "used left", len(u), f.countExisting(u))
		})
	}
}

// TestBrakeSampled: with a sample smaller than the store the brake
// estimates, states a bound that holds, trips on the estimate; when it does
// not trip, the sweep finishes the sampled dirs from the brake's scan and
// the run removes exactly what an exact run removes.
func TestBrakeSampled(t *testing.T) {
	f, u, g := brakeFixture(t, 1200, 1800, 100, 100)
	off := uint16(0x1234)
	sample := func(o *Options) { o.hooks.brakeSample, o.hooks.brakeOffset = 300, &off }

	st, err := f.run(brakeTuning(50, 10), sample)
	rtest.ErrorIs(t, err, ErrBrake)
	b := st.Brake
	t.Logf("brake: %+v", *b)
	rtest.Equal(t, "exact", false, b.Exact)
	if b.SampledChunks < 300 || b.SampledPrefixDirs >= chunkstore.PrefixCount {
		t.Errorf("sampled %d chunks in %d dirs", b.SampledChunks, b.SampledPrefixDirs)
	}
	if b.ChunksBound <= 0 || math.Abs(b.ChunksPercent-60) > b.ChunksBound {
		t.Errorf("chunk estimate %.2f%% ± %.2f does not cover the true 60%%", b.ChunksPercent, b.ChunksBound)
	}
	if b.BytesBound <= 0 || math.Abs(b.BytesPercent-60) > b.BytesBound+1 { // sizes differ by a few bytes
		t.Errorf("byte estimate %.2f%% ± %.2f does not cover the true ~60%%", b.BytesPercent, b.BytesBound)
	}
	rtest.Equal(t, "garbage left", len(g), f.countExisting(g))

	st, err = f.run(brakeTuning(90, 10), sample)
	rtest.OK(t, err)
	rtest.Equal(t, "tripped", false, st.Brake.Tripped)
	rtest.Equal(t, "removed", int64(len(g)), st.RemovedChunks)
	rtest.Equal(t, "kept", int64(len(u)), st.DiskChunks)
	rtest.Equal(t, "garbage left", 0, f.countExisting(g))
	rtest.Equal(t, "used left", len(u), f.countExisting(u))
}

// TestBrakeEstimateBound checks the estimator and its stated 3σ bound
// against populations laid out over the 65,536 prefix dirs by random
// digests (no filesystem: the figures are those the sweep's scan would
// tally): over 300 samples per population the bound must cover the true
// fraction at least 99 % of the time, and must stay small.
func TestBrakeEstimateBound(t *testing.T) {
	for _, pop := range []struct {
		chunks  int
		garbage float64
	}{{150000, 0.05}, {150000, 0.5}, {300000, 0.9}} {
		rng := rand.New(rand.NewPCG(uint64(pop.chunks), uint64(pop.garbage*100)))
		type chunk struct {
			size    uint64
			garbage bool
		}
		dirs := make([][]chunk, chunkstore.PrefixCount)
		var truth brakeTally
		for range pop.chunks {
			c := chunk{size: uint64(math.Exp(rng.Float64()*8) * 1000), garbage: rng.Float64() < pop.garbage}
			p := rng.UintN(chunkstore.PrefixCount)
			dirs[p] = append(dirs[p], c)
			truth.add(c.size, c.garbage)
		}
		wantChunks := 100 * float64(truth.garbage) / float64(truth.chunks)
		wantBytes := 100 * truth.garbageBytes / truth.bytes
		const trials = 300
		missChunks, missBytes := 0, 0
		var worst float64
		for range trials {
			b := &brakeSample{off: uint16(rng.UintN(chunkstore.PrefixCount))}
			i := int64(0)
			for ; b.tally.chunks < brakeSampleChunks && i < chunkstore.PrefixCount; i++ {
				for _, c := range dirs[b.order(i)] {
					b.tally.add(c.size, c.garbage)
				}
			}
			b.dirs = int(i)
			r := b.report(50, 0)
			if math.Abs(r.ChunksPercent-wantChunks) > r.ChunksBound {
				missChunks++
			}
			if math.Abs(r.BytesPercent-wantBytes) > r.BytesBound {
				missBytes++
			}
			worst = max(worst, r.ChunksBound)
			if wantChunks > 50 && !r.Tripped {
				t.Errorf("true %.1f%% > 50%%, estimate %.1f%% ± %.1f did not trip", wantChunks, r.ChunksPercent, r.ChunksBound)
			}
		}
		t.Logf("%d chunks, %.0f%% garbage: bound missed %d (chunks) and %d (bytes) of %d; widest chunk bound %.2f pp",
			pop.chunks, 100*pop.garbage, missChunks, missBytes, trials, worst)
		if missChunks > trials/100 || missBytes > trials/100 {
			t.Errorf("the 3σ bound missed the truth too often: %d (chunks), %d (bytes) of %d", missChunks, missBytes, trials)
		}
		if worst > 1.2 {
			t.Errorf("chunk bound up to %.2f pp, want ≤ 1.2 with %d sampled chunks", worst, brakeSampleChunks)
		}
	}
}

// TestBrakeHiddenNamespace is the brake's reason to exist, end to end on
// ext4: the namespace that references most chunks is renamed away (as an
// unmounted or half-synced namespace looks to GC); the run trips, removes
// nothing, and once the namespace is back a run removes only real garbage.
func TestBrakeHiddenNamespace(t *testing.T) {
	f := newFixture(t)
	ns, root, g := f.chunks(30, 500, 72*time.Hour), f.chunks(5, 500, 72*time.Hour), f.chunks(5, 500, 72*time.Hour)
	f.snapshot("ns/prod/vm/100/2025-01-01T00:00:00Z", ns...)
	f.snapshot("vm/200/2025-01-01T00:00:00Z", root...)
	hidden := filepath.Join(f.base, ".ns-hidden")
	rtest.OK(t, os.Rename(filepath.Join(f.base, "ns"), hidden))

	st, err := f.run(brakeTuning(50, 10))
	rtest.ErrorIs(t, err, ErrBrake)
	rtest.Equal(t, "chunks percent", 87.5, st.Brake.ChunksPercent) // 35 of 40
	rtest.Equal(t, "namespace chunks left", len(ns), f.countExisting(ns))
	rtest.Equal(t, "garbage left", len(g), f.countExisting(g))

	rtest.OK(t, os.Rename(hidden, filepath.Join(f.base, "ns")))
	st, err = f.run(brakeTuning(50, 10))
	rtest.OK(t, err)
	rtest.Equal(t, "removed", int64(len(g)), st.RemovedChunks)
	rtest.Equal(t, "namespace chunks left", len(ns), f.countExisting(ns))
}
