package gc

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Progress is a running GC's position, as [Tracker.Snapshot] reads it.
type Progress struct {
	// Phase is "prepare", "mark", "check", "sweep" or "done".
	Phase string
	// Done and Total count the phase's units: index files in mark (Total
	// is the initial listing; new indexes can make Done exceed it), prefix
	// dirs in check and sweep. Total is 0 when unknown.
	Done, Total int64
	// Removed and RemovedBytes are the chunk files the sweep removed (or
	// quarantined) so far.
	Removed      int64
	RemovedBytes uint64
	// Start is the run's start; PhaseStart the phase's.
	Start, PhaseStart time.Time
}

// Fraction is Done/Total, in 0..1 (0 when Total is unknown).
func (p Progress) Fraction() float64 {
	if p.Total <= 0 {
		return 0
	}
	return min(1, float64(p.Done)/float64(p.Total))
}

// ETA estimates the rest of the phase from its rate so far; ok is false
// until there is a rate to go by.
func (p Progress) ETA(now time.Time) (eta time.Duration, ok bool) {
	el := now.Sub(p.PhaseStart)
	if p.Total <= 0 || p.Done <= 0 || el <= 0 {
		return 0, false
	}
	left := max(0, p.Total-p.Done)
	return time.Duration(float64(el) / float64(p.Done) * float64(left)).Round(time.Second), true
}

// Fields are the zap fields of p: phase, done, total, percent, ETA and what
// was removed so far.
func (p Progress) Fields(now time.Time) []zap.Field {
	f := []zap.Field{zap.String("progress-phase", p.Phase), zap.Int64("done", p.Done), zap.Int64("total", p.Total),
		zap.Int("percent", int(100*p.Fraction())), zap.Int64("removed-so-far", p.Removed),
		zap.Uint64("removed-bytes-so-far", p.RemovedBytes)}
	if eta, ok := p.ETA(now); ok {
		f = append(f, zap.Duration("eta", eta))
	}
	return f
}

// Tracker is a running GC's progress, updated by the run with atomic adds
// (one per index file, prefix dir and removal) and safe to read from any
// goroutine: the CLI's progress line, sd_notify status and SIGUSR1 report
// read it. The zero value is ready; pass one in [Options.Tracker].
type Tracker struct {
	// OnPhase, when set before the run, is called (on the run's
	// goroutine) at the start of every phase: a display that samples the
	// tracker could miss a phase shorter than its tick. It must be quick.
	OnPhase func(Progress)

	phase        atomic.Pointer[string]
	done, total  atomic.Int64
	removed      atomic.Int64
	removedBytes atomic.Uint64
	start        atomic.Int64 // unix nanoseconds
	phaseStart   atomic.Int64
}

// Snapshot reads the tracker. Its fields are read one by one, so a
// snapshot taken at a phase change may mix the two phases' counts.
func (t *Tracker) Snapshot() Progress {
	p := Progress{Phase: "prepare", Done: t.done.Load(), Total: t.total.Load(), Removed: t.removed.Load(),
		RemovedBytes: t.removedBytes.Load(), Start: time.Unix(0, t.start.Load()), PhaseStart: time.Unix(0, t.phaseStart.Load())}
	if ph := t.phase.Load(); ph != nil {
		p.Phase = *ph
	}
	return p
}

func (t *Tracker) begin(now time.Time) {
	t.start.Store(now.UnixNano())
	t.setPhase("prepare", 0)
}

// setPhase starts phase name of total units.
func (t *Tracker) setPhase(name string, total int64) {
	t.done.Store(0)
	t.total.Store(total)
	t.phaseStart.Store(time.Now().UnixNano())
	t.phase.Store(&name)
	if t.OnPhase != nil {
		t.OnPhase(t.Snapshot())
	}
}

// add and removal count work; like logFields they do nothing on a nil
// Tracker (a sweeper run by a benchmark has none).
func (t *Tracker) add(n int64) {
	if t != nil {
		t.done.Add(n)
	}
}

func (t *Tracker) removal(size uint64) {
	if t != nil {
		t.removed.Add(1)
		t.removedBytes.Add(size)
	}
}

// logFields are what the periodic progress log lines add: with removed
// (the sweep's) the removals so far, and the phase's ETA once it has a
// rate.
func (t *Tracker) logFields(removed bool) []zap.Field {
	if t == nil {
		return nil
	}
	p := t.Snapshot()
	var f []zap.Field
	if removed {
		f = append(f, zap.Int64("removed-so-far", p.Removed))
	}
	if eta, ok := p.ETA(time.Now()); ok {
		f = append(f, zap.Duration("eta", eta))
	}
	return f
}
