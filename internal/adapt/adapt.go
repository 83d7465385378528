// Package adapt runs a phase of GC on a pool of workers whose size finds
// itself while the phase runs: a hill climb on measured throughput.
//
// # Why
//
// Both phases of a GC are chains of metadata round trips (a touch is a
// lookup and a setattr; a prefix dir is an open, listings and stats). On a
// local disk the kernel is the bottleneck and a few workers per CPU are as
// fast as many; on network storage every round trip waits for the server,
// and throughput grows with the number of round trips in flight until the
// server, the link or this host's CPUs saturate. No fixed count is right for
// both, and the right count for one store changes when its cache goes cold.
//
// # How
//
// A pool has Max worker goroutines, but only limit of them may hold a slot
// and run units at a time. A controller samples the units finished per
// second every Interval (a sample is taken only once every slot has had the
// chance to finish a few units, or after MaxSample):
//
//  1. Search. From Start, the limit doubles while each doubling raises the
//     rate by at least Gain (15 %): the extra workers still pay for
//     themselves. The first doubling that does not is undone. If no doubling
//     paid, the limit halves while halving costs at most Loss (5 %) of the
//     rate: fewer workers for the same throughput are cheaper for everyone
//     sharing the storage. The first halving that costs more is undone.
//  2. Hold. The limit stays; its rate is tracked. Every Reprobe (2 s) one
//     step is tried again, alternately up and down, under the same rules, so
//     that a pool that settled while the cache was warm grows when it goes
//     cold (latency climbs), and one that grew backs off when the extra
//     workers stop paying.
//
// A probe that loses costs one sample at a worse limit, at most one Interval
// in every Reprobe. The limit never exceeds Max, which the caller bounds by
// the fds the workers may hold; it never falls below 1.
//
// With Fixed set there is no controller: exactly Fixed workers run, and the
// slot check costs two atomic loads per unit.
package adapt

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults of [Config].
const (
	DefaultMax        = 128
	DefaultInterval   = 100 * time.Millisecond
	DefaultMaxSample  = time.Second
	DefaultReprobe    = 2 * time.Second
	DefaultGain       = 0.15
	DefaultLoss       = 0.05
	unitsPerSlotShown = 4 // a sample waits for this many units per slot
)

// DefaultStart is the first limit of an adaptive pool: four workers per
// CPU, the count that saturates a local disk's kernel paths.
func DefaultStart() int { return 4 * runtime.GOMAXPROCS(0) }

// Config configures a [Pool].
type Config struct {
	// Name names the pool in logs (the GC phase).
	Name string
	// Fixed > 0 runs exactly that many workers, with no controller.
	Fixed int
	// Start is the first limit of an adaptive pool; 0 is [DefaultStart].
	Start int
	// Max bounds the limit and is the number of worker goroutines; 0 is
	// [DefaultMax].
	Max int
	// Interval, MaxSample, Reprobe, Gain and Loss tune the controller (see
	// the package doc); zero values take the defaults.
	Interval, MaxSample, Reprobe time.Duration
	Gain, Loss                   float64
	// Log receives each limit change at debug level; nil logs nothing.
	Log *zap.Logger
}

// Pool hands out slots to its workers.
type Pool struct {
	cfg    Config
	limit  atomic.Int32
	active atomic.Int32
	units  atomic.Int64

	mu     sync.Mutex
	cond   sync.Cond
	halted atomic.Bool // set under mu: no more slots, ever

	stop    chan struct{}
	ctlDone chan struct{}
	unwatch func() bool

	// Controller statistics, read after Stop.
	peak, changes int
}

// Start returns a pool for one phase. The caller starts [Pool.Workers]
// goroutines, each of which calls [Pool.Worker] and runs units while
// [Worker.Next] says so, and calls [Pool.Stop] when they have all returned.
// A cancelled ctx makes every Next return false.
func Start(ctx context.Context, cfg Config) *Pool {
	p := &Pool{cfg: cfg, stop: make(chan struct{}), ctlDone: make(chan struct{})}
	p.cond.L = &p.mu
	p.cfg.defaults()
	p.limit.Store(int32(p.cfg.Start))
	p.peak = p.cfg.Start
	p.unwatch = context.AfterFunc(ctx, p.halt)
	if cfg.Fixed > 0 {
		close(p.ctlDone)
	} else {
		go p.control(ctx)
	}
	return p
}

func (c *Config) defaults() {
	if c.Fixed > 0 {
		c.Start, c.Max = c.Fixed, c.Fixed
		return
	}
	if c.Max <= 0 {
		c.Max = DefaultMax
	}
	if c.Start <= 0 {
		c.Start = DefaultStart()
	}
	c.Start = min(c.Start, c.Max)
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.MaxSample <= 0 {
		c.MaxSample = DefaultMaxSample
	}
	if c.Reprobe <= 0 {
		c.Reprobe = DefaultReprobe
	}
	if c.Gain <= 0 {
		c.Gain = DefaultGain
	}
	if c.Loss <= 0 {
		c.Loss = DefaultLoss
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
}

// Workers is how many worker goroutines the caller starts: the fixed count,
// or the cap of an adaptive pool (most of them wait for a slot).
func (p *Pool) Workers() int { return p.cfg.Max }

// Limit is the current number of slots.
func (p *Pool) Limit() int { return int(p.limit.Load()) }

// halt wakes every waiting worker for good.
func (p *Pool) halt() {
	p.mu.Lock()
	p.halted.Store(true)
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Summary is what a pool did, for the phase's log line.
type Summary struct {
	Final   int // the limit at the end
	Peak    int // the largest limit
	Changes int // how often the controller changed the limit
}

// Stop ends the controller and wakes any worker still waiting, then
// returns the pool's summary. Call it after every worker has returned.
func (p *Pool) Stop() Summary {
	p.unwatch()
	close(p.stop)
	<-p.ctlDone
	p.halt()
	return Summary{Final: p.Limit(), Peak: p.peak, Changes: p.changes}
}

// Worker is one worker goroutine's handle; it is not safe for concurrent use.
type Worker struct {
	p    *Pool
	held bool
}

// Worker returns a handle for the calling worker goroutine.
func (p *Pool) Worker() *Worker { return &Worker{p: p} }

// Next waits until w holds a slot and reports true, or reports false when
// the pool was stopped or its context cancelled. A worker keeps its slot
// from one unit to the next unless the limit fell below the slots held.
func (w *Worker) Next() bool {
	p := w.p
	if w.held && p.active.Load() <= p.limit.Load() {
		return !p.halted.Load()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if w.held && p.active.Load() > p.limit.Load() {
		w.held = false
		p.active.Add(-1)
	}
	for !w.held {
		if p.halted.Load() {
			return false
		}
		if p.active.Load() < p.limit.Load() {
			p.active.Add(1)
			w.held = true
			break
		}
		p.cond.Wait()
	}
	return !p.halted.Load()
}

// Done counts n finished units (touches, prefix dirs) of w's work.
func (w *Worker) Done(n int) { w.p.units.Add(int64(n)) }

// Exit gives w's slot back; a worker calls it once, when it returns.
func (w *Worker) Exit() {
	if !w.held {
		return
	}
	p := w.p
	p.mu.Lock()
	w.held = false
	p.active.Add(-1)
	p.cond.Signal()
	p.mu.Unlock()
}

// setLimit changes the number of slots; workers above a lower limit give
// theirs up at their next unit.
func (p *Pool) setLimit(n int, why string) {
	n = max(1, min(n, p.cfg.Max))
	old := p.Limit()
	if n == old {
		return
	}
	p.mu.Lock()
	p.limit.Store(int32(n))
	p.cond.Broadcast()
	p.mu.Unlock()
	p.changes++
	p.peak = max(p.peak, n)
	p.cfg.Log.Debug("worker limit changed", zap.String("pool", p.cfg.Name),
		zap.Int("from", old), zap.Int("to", n), zap.String("why", why))
}

// control is the controller goroutine of an adaptive pool.
func (p *Pool) control(ctx context.Context) {
	defer close(p.ctlDone)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	c := climber{cfg: &p.cfg}
	lastUnits, lastAt := int64(0), time.Now()
	for {
		select {
		case <-p.stop:
			return
		case <-ctx.Done():
			return
		case now := <-t.C:
			units := p.units.Load()
			du, dt := units-lastUnits, now.Sub(lastAt)
			if du < int64(unitsPerSlotShown*p.Limit()) && dt < p.cfg.MaxSample {
				continue
			}
			lastUnits, lastAt = units, now
			if n, why := c.sample(p.Limit(), float64(du)/dt.Seconds(), now); n != p.Limit() {
				p.setLimit(n, why)
			}
		}
	}
}
