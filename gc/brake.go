package gc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/chunkstore"
	"chunkgc/internal/adapt"
)

// brakeSampleChunks is how many chunk files the brake's sample reaches
// before it stops taking prefix dirs: with 20,000 chunks the 3σ bound of
// the chunk fraction is at most 1.1 percentage points. A store with fewer
// chunks is scanned whole, and its figures are exact.
const brakeSampleChunks = 20000

// brakeStride steps through the prefix dirs in the brake's order: odd, so
// that i*brakeStride mod 65536 visits every dir once, and near 65536/φ, so
// that any first k dirs of the order are spread evenly over the prefixes.
const brakeStride = 40503

// ErrBrake is matched by the error of a run the mass-deletion brake stopped
// (a [*BrakeError]).
var ErrBrake = errors.New("mass-deletion brake")

// BrakeError is the error of a run the mass-deletion brake stopped before
// its first removal. Report holds the figures; Run returns them in the
// Status's Brake field too.
type BrakeError struct {
	Base   string
	Report BrakeReport
}

func (e *BrakeError) Error() string {
	r := &e.Report
	return fmt.Sprintf("%v: GC would remove %s of the chunk files in %s, above gc-brake-percent=%d%%: nothing was removed. "+
		"Check that every namespace and backup group is present (an unmounted or half-synced namespace makes its chunks look unused); "+
		"then run once with --force, or raise gc-brake-percent (0 turns the brake off)",
		ErrBrake, r.describe(), e.Base, r.ThresholdPercent)
}

// Is makes a BrakeError match [ErrBrake].
func (e *BrakeError) Is(target error) bool { return target == ErrBrake }

// BrakeReport is what the mass-deletion brake found before the sweep's first
// removal (doc "Mass-deletion brake"). Percentages are of the chunk files
// (not bad-chunk files) on disk and of their bytes; each Bound is the 3σ
// error of its estimate, in percentage points (0 when Exact).
type BrakeReport struct {
	Exact               bool    `json:"exact"`
	SampledPrefixDirs   int     `json:"sampled-prefix-dirs"`
	SampledChunks       int64   `json:"sampled-chunks"`
	ChunksPercent       float64 `json:"chunks-percent"`
	ChunksBound         float64 `json:"chunks-bound"`
	BytesPercent        float64 `json:"bytes-percent"`
	BytesBound          float64 `json:"bytes-bound"`
	EstimatedChunks     int64   `json:"estimated-chunks"`
	EstimatedRemovals   int64   `json:"estimated-removals"`
	EstimatedRemovedGiB float64 `json:"estimated-removed-gib"`
	ThresholdPercent    int     `json:"threshold-percent"`
	MinChunks           int64   `json:"min-chunks"`
	// Tripped: the upper bound of either fraction is above the threshold
	// and the upper bound of the removals above MinChunks.
	Tripped bool `json:"tripped"`
	// Forced: the run went on although Tripped (--force).
	Forced bool `json:"forced,omitempty"`
}

func (r *BrakeReport) describe() string {
	how := "exactly"
	if !r.Exact {
		how = fmt.Sprintf("by a sample of %d chunks in %d prefix dirs, 3σ", r.SampledChunks, r.SampledPrefixDirs)
	}
	return fmt.Sprintf("%.1f%% ± %.1f of %d chunks and %.1f%% ± %.1f of their bytes (about %d chunks, %.1f GiB; %s)",
		r.ChunksPercent, r.ChunksBound, r.EstimatedChunks, r.BytesPercent, r.BytesBound,
		r.EstimatedRemovals, r.EstimatedRemovedGiB, how)
}

// brakeTally sums what the brake needs of every chunk file the sample saw:
// counts, bytes, and the squares the bound of the byte fraction needs.
type brakeTally struct {
	chunks, garbage     int64
	bytes, garbageBytes float64
	sqGarbage, sqKept   float64 // Σ size² of garbage, of kept chunks
}

func (t *brakeTally) add(size uint64, garbage bool) {
	x := float64(size)
	t.chunks++
	t.bytes += x
	if garbage {
		t.garbage++
		t.garbageBytes += x
		t.sqGarbage += x * x
	} else {
		t.sqKept += x * x
	}
}

func (t *brakeTally) merge(o *brakeTally) {
	t.chunks += o.chunks
	t.garbage += o.garbage
	t.bytes += o.bytes
	t.garbageBytes += o.garbageBytes
	t.sqGarbage += o.sqGarbage
	t.sqKept += o.sqKept
}

// brakeSample is the brake's scan of the first prefix dirs of a
// pseudo-random order. The sweep finishes those dirs from it: their counts
// are in counts, their candidates in cands (the lock-free pass is not made
// twice).
type brakeSample struct {
	off    uint16
	target int64        // chunk files to see
	next   atomic.Int64 // next index into the order
	seen   atomic.Int64 // chunk files seen so far
	mu     sync.Mutex
	taken  [chunkstore.PrefixCount / 64]uint64 // dirs scanned; read-only once the sample is done
	dirs   int
	cands  map[uint16][]candidate
	open   map[uint16]*chunkstore.PrefixDir // cached fds of dirs with candidates, kept for the sweep
	// counts holds each scanned dir's counters, by prefix, which the sweep
	// adds when it finishes the dir: one allocation (5.5 MiB) per run,
	// whatever the store's size (a map would grow with the dirs that hold
	// chunks: TestMarkSweepAllocsFlat); tally is merged from the workers.
	counts []sweepCounts
	tally  brakeTally
}

func (b *brakeSample) order(i int64) uint16 { return b.off + uint16(i)*brakeStride }

func (b *brakeSample) has(p uint16) bool {
	return b != nil && b.taken[p/64]&(1<<(p%64)) != 0
}

// take hands the sweep the candidates of sampled dir p, the dir, if the
// brake kept it open (else nil), and the scan's counters of it.
func (b *brakeSample) take(p uint16) ([]candidate, *chunkstore.PrefixDir, sweepCounts) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cands, dir, c := b.cands[p], b.open[p], b.counts[p]
	delete(b.cands, p)
	delete(b.open, p)
	b.counts[p] = sweepCounts{}
	return cands, dir, c
}

// close closes the dirs the sweep did not take (it stopped early).
func (b *brakeSample) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p, dir := range b.open {
		dir.Close()
		delete(b.open, p)
	}
}

// report turns the tally into the brake's figures: exact when every dir
// was scanned, else ratio estimates with their 3σ bounds, treating the
// sampled dirs' chunks as a simple random sample of the store's (a chunk's
// prefix is the start of its SHA-256, independent of whether it is
// garbage) with the finite population correction.
func (b *brakeSample) report(percent int, minChunks int64) BrakeReport {
	t := &b.tally
	r := BrakeReport{
		Exact: b.dirs >= chunkstore.PrefixCount, SampledPrefixDirs: b.dirs, SampledChunks: t.chunks,
		ThresholdPercent: percent, MinChunks: minChunks,
	}
	if t.chunks == 0 {
		return r
	}
	n := float64(t.chunks)
	p := float64(t.garbage) / n
	rb := 0.0
	if t.bytes > 0 {
		rb = t.garbageBytes / t.bytes
	}
	r.ChunksPercent, r.BytesPercent = 100*p, 100*rb
	scale := float64(chunkstore.PrefixCount) / float64(max(b.dirs, 1))
	r.EstimatedChunks = int64(math.Round(n * scale))
	removals := float64(t.garbage) * scale
	r.EstimatedRemovals = int64(math.Round(removals))
	r.EstimatedRemovedGiB = t.garbageBytes * scale / (1 << 30)
	upper := removals // the removals' upper bound
	if !r.Exact {
		fpc := 1 - float64(b.dirs)/chunkstore.PrefixCount
		// Agresti–Coull: a sample with no garbage (or only garbage)
		// still gets a bound.
		pa := (float64(t.garbage) + 2) / (n + 4)
		r.ChunksBound = 300 * math.Sqrt(pa*(1-pa)/(n+4)*fpc)
		if t.bytes > 0 && t.chunks > 1 {
			mean := t.bytes / n
			ss := (1-rb)*(1-rb)*t.sqGarbage + rb*rb*t.sqKept
			r.BytesBound = 300 * math.Sqrt(ss/(n-1)/n*fpc) / mean
		}
		upper = (p + r.ChunksBound/100) * n * scale
	}
	over := r.ChunksPercent+r.ChunksBound > float64(percent) || r.BytesPercent+r.BytesBound > float64(percent)
	r.Tripped = percent > 0 && over && upper > float64(minChunks)
	return r
}

// brake scans prefix dirs in a pseudo-random order until it has seen
// brakeSampleChunks chunk files or every dir, and keeps what it found for
// the sweep (doc "Mass-deletion brake"). It runs after the prefix dir check
// and before the sweep's first removal.
func (s *sweeper) brake(ctx context.Context, opts *Options, start int) (*brakeSample, error) {
	b := &brakeSample{
		off:    uint16(rand.UintN(chunkstore.PrefixCount)),
		target: cmp.Or(opts.hooks.brakeSample, brakeSampleChunks),
		cands:  make(map[uint16][]candidate),
		open:   make(map[uint16]*chunkstore.PrefixDir),
		counts: make([]sweepCounts, chunkstore.PrefixCount),
	}
	if o := opts.hooks.brakeOffset; o != nil {
		b.off = *o
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	log := s.log
	pool := opts.pool(ctx, "brake", start, log)
	var wg sync.WaitGroup
	for range pool.Workers() {
		wg.Go(func() {
			w := pool.Worker()
			if err := s.brakeWorker(ctx, w, b); err != nil {
				cancel(err)
			}
			w.Exit()
		})
	}
	wg.Wait()
	opts.stopPool(pool, log)
	b.dirs = int(min(b.next.Load(), chunkstore.PrefixCount))
	if err := context.Cause(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (s *sweeper) brakeWorker(ctx context.Context, w *adapt.Worker, b *brakeSample) error {
	var t brakeTally
	defer func() {
		b.mu.Lock()
		b.tally.merge(&t)
		b.mu.Unlock()
	}()
	st := new(unix.Statx_t)
	for w.Next() {
		if b.seen.Load() >= b.target {
			return nil
		}
		i := b.next.Add(1) - 1
		if i >= chunkstore.PrefixCount {
			return nil
		}
		p := b.order(i)
		before := t.chunks
		dir, err := s.take(p)
		var cands []candidate
		var c sweepCounts
		if dir != nil {
			cands, err = s.scan(ctx, dir, &c, st, nil, &t)
		}
		if err != nil {
			if dir != nil {
				dir.Close()
			}
			return err
		}
		b.mu.Lock()
		b.taken[p/64] |= 1 << (p % 64)
		b.counts[p] = c
		if len(cands) > 0 {
			b.cands[p] = cands
		}
		keep := dir != nil && len(cands) > 0 && dir.Cached()
		if keep {
			b.open[p] = dir
		}
		b.mu.Unlock()
		if dir != nil && !keep {
			dir.Close()
		}
		b.seen.Add(t.chunks - before)
		w.Done(1)
	}
	return context.Cause(ctx)
}

// applyBrake logs the brake's figures, puts them in st and returns a
// *BrakeError when it trips on a real run that is not forced.
func (r *run) applyBrake(b *brakeSample) error {
	tn := r.opts.Tuning
	rep := b.report(tn.BrakePercent, tn.BrakeMinChunks)
	rep.Forced = rep.Tripped && r.opts.Force
	r.st.Brake = &rep
	fields := []zap.Field{
		zap.Bool("exact", rep.Exact), zap.Int("sampled-prefix-dirs", rep.SampledPrefixDirs), zap.Int64("sampled-chunks", rep.SampledChunks),
		zap.Float64("chunks-percent", round1(rep.ChunksPercent)), zap.Float64("chunks-bound", round1(rep.ChunksBound)),
		zap.Float64("bytes-percent", round1(rep.BytesPercent)), zap.Float64("bytes-bound", round1(rep.BytesBound)),
		zap.Int64("estimated-chunks", rep.EstimatedChunks), zap.Int64("estimated-removals", rep.EstimatedRemovals),
		zap.Int("threshold-percent", rep.ThresholdPercent), zap.Int64("min-chunks", rep.MinChunks), zap.Bool("tripped", rep.Tripped),
	}
	switch {
	case !rep.Tripped:
		r.log.Info("mass-deletion brake: below the threshold", fields...)
		return nil
	case r.opts.DryRun:
		r.log.Warn("mass-deletion brake would trip: a real run would remove nothing", fields...)
		return nil
	case rep.Forced:
		r.log.Warn("mass-deletion brake tripped, overridden by --force", fields...)
		return nil
	}
	r.log.Error("mass-deletion brake tripped: removing nothing", fields...)
	return &BrakeError{Base: r.store.Base(), Report: rep}
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
