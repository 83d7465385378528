package adapt

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server models storage with a fixed round trip and room for capacity
// requests at once: real goroutines, real sleeps.
type server struct {
	rtt   time.Duration
	slots chan struct{}
	busy  atomic.Int32
	peak  atomic.Int32
}

func newServer(rtt time.Duration, capacity int) *server {
	return &server{rtt: rtt, slots: make(chan struct{}, capacity)}
}

func (s *server) call() {
	s.slots <- struct{}{}
	raise(&s.peak, s.busy.Add(1))
	time.Sleep(s.rtt)
	s.busy.Add(-1)
	<-s.slots
}

// raise makes v at least n.
func raise(v *atomic.Int32, n int32) {
	for m := v.Load(); n > m && !v.CompareAndSwap(m, n); m = v.Load() {
	}
}

// work runs unit on each of p's workers while the worker holds a slot,
// counting a unit done each time, until unit or Next reports false; the
// returned wait waits for every worker.
func work(p *Pool, unit func() bool) (wait func()) {
	var wg sync.WaitGroup
	for range p.Workers() {
		wg.Go(func() {
			w := p.Worker()
			defer w.Exit()
			for w.Next() && unit() {
				w.Done(1)
			}
		})
	}
	return wg.Wait
}

// runPool runs units units of one server call each on a pool and returns
// its summary and the most units that ran at once.
func runPool(t *testing.T, ctx context.Context, cfg Config, srv *server, units int64) (Summary, int32) {
	t.Helper()
	p := Start(ctx, cfg)
	var next atomic.Int64
	var running, most atomic.Int32
	work(p, func() bool {
		if next.Add(1) > units {
			return false
		}
		raise(&most, running.Add(1))
		srv.call()
		running.Add(-1)
		return true
	})()
	s := p.Stop()
	if a := p.active.Load(); a != 0 {
		t.Errorf("%d slots still held after every worker exited", a)
	}
	return s, most.Load()
}

// TestPoolGrowsOnLatency: on storage with a 1 ms round trip and room for
// 64 requests, a pool that starts at 4 grows well beyond it. The bound is
// loose on purpose (a noisy 2-core machine); TestClimb* pin the logic.
func TestPoolGrowsOnLatency(t *testing.T) {
	srv := newServer(time.Millisecond, 64)
	s, most := runPool(t, context.Background(), Config{Name: "test", Start: 4, Max: 64}, srv, 40000)
	t.Logf("summary %+v, most at once %d", s, most)
	if s.Peak < 16 {
		t.Fatalf("peak limit %d, want ≥ 16 on a latency-bound server", s.Peak)
	}
	if most > 64 {
		t.Fatalf("%d units ran at once, above the cap 64", most)
	}
}

// TestPoolFixed runs exactly Fixed workers and never more at once.
func TestPoolFixed(t *testing.T) {
	srv := newServer(100*time.Microsecond, 100)
	s, most := runPool(t, context.Background(), Config{Fixed: 3}, srv, 3000)
	if s.Final != 3 || s.Peak != 3 || s.Changes != 0 {
		t.Fatalf("summary %+v, want a fixed 3", s)
	}
	if most > 3 {
		t.Fatalf("%d units at once, want ≤ 3", most)
	}
}

// TestPoolLimitHolds: lowering the limit while workers run brings the
// units in flight down to it.
func TestPoolLimitHolds(t *testing.T) {
	p := Start(context.Background(), Config{Start: 16, Max: 16, Interval: time.Hour})
	var running atomic.Int32
	var over atomic.Int32
	stop := make(chan struct{})
	lowered := make(chan struct{})
	wait := work(p, func() bool {
		select {
		case <-stop:
			return false
		default:
		}
		n := running.Add(1)
		select {
		case <-lowered:
			if n > 2 {
				over.Add(1)
			}
		default:
		}
		time.Sleep(50 * time.Microsecond)
		running.Add(-1)
		return true
	})
	time.Sleep(20 * time.Millisecond)
	p.setLimit(2, "test")
	// Workers above the new limit finish the unit they are in.
	time.Sleep(20 * time.Millisecond)
	close(lowered)
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wait()
	p.Stop()
	if n := over.Load(); n > 0 {
		t.Fatalf("%d units started with more than 2 in flight after the limit fell to 2", n)
	}
}

// TestPoolCancel: cancelling the context releases workers waiting for a
// slot and makes Next false for all.
func TestPoolCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p := Start(ctx, Config{Start: 1, Max: 8, Interval: time.Hour})
	var units atomic.Int64
	wait := work(p, func() bool {
		units.Add(1)
		time.Sleep(time.Millisecond)
		return true
	})
	time.Sleep(20 * time.Millisecond)
	cancel()
	wait() // hangs if waiting workers are not woken
	p.Stop()
	if units.Load() == 0 {
		t.Fatal("no unit ran before the cancel")
	}
}
