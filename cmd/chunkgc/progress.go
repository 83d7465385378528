package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/gc"
)

// progress shows a running GC's [gc.Tracker]: a live line on a terminal's
// stderr, STATUS= lines to systemd when $NOTIFY_SOCKET is set (systemctl
// status shows the last), and a log line at once on SIGUSR1.
type progress struct {
	tr   *gc.Tracker
	log  *zap.Logger
	bar  *progressbar.ProgressBar // nil: stderr is not a terminal
	barW io.Writer
	// notify sends a STATUS= line; nil without $NOTIFY_SOCKET.
	notify func(status string) error
	usr1   chan os.Signal
	stop   chan struct{}
	done   chan struct{}
	// mu guards the systemd state: OnPhase sends from the run's goroutine.
	mu sync.Mutex
	// last phase and status sent to systemd
	phase, status string
	sent          time.Time
	barPhase      string
}

// progressTick is how often the line and the systemd status are updated.
const progressTick = 250 * time.Millisecond

// notifyEvery bounds the STATUS= updates within a phase.
const notifyEvery = 2 * time.Second

func startProgress(e *env, log *zap.Logger, tr *gc.Tracker) *progress {
	p := &progress{tr: tr, log: log, usr1: make(chan os.Signal, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if f, ok := e.stderr.(*os.File); ok && isTerminal(f) {
		p.barW = f
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		p.notify = func(status string) error {
			_, err := daemon.SdNotify(false, "STATUS="+status)
			return err
		}
	}
	if p.notify != nil {
		tr.OnPhase = func(s gc.Progress) {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.send(s, time.Now())
		}
	}
	signal.Notify(p.usr1, unix.SIGUSR1)
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(progressTick)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			p.update(true)
			return
		case <-p.usr1:
			now := time.Now()
			p.log.Info("progress", p.tr.Snapshot().Fields(now)...)
		case <-t.C:
			p.update(false)
		}
	}
}

// Stop ends the display: the line is finished and systemd told the end.
func (p *progress) Stop() {
	signal.Stop(p.usr1)
	close(p.stop)
	<-p.done
}

func (p *progress) update(final bool) {
	now := time.Now()
	s := p.tr.Snapshot()
	if p.barW != nil {
		p.drawBar(s, final)
	}
	if p.notify == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Phase != p.phase || final || now.Sub(p.sent) >= notifyEvery {
		p.send(s, now)
	}
}

// send tells systemd the status of s, unless it is the last one sent;
// under p.mu.
func (p *progress) send(s gc.Progress, now time.Time) {
	status := statusLine(s, now)
	if status == p.status {
		return
	}
	if err := p.notify(status); err != nil {
		p.log.Debug("sd_notify failed", zap.Error(err))
	}
	p.phase, p.status, p.sent = s.Phase, status, now
}

// phaseUnit names what a phase counts.
func phaseUnit(phase string) string {
	switch phase {
	case "mark":
		return "indexes"
	case "check", "sweep":
		return "prefix dirs"
	}
	return ""
}

// statusLine is the one-line status: phase, units, percent, ETA, removed.
func statusLine(s gc.Progress, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", s.Phase)
	if s.Total > 0 {
		fmt.Fprintf(&b, " %d/%d %s (%.0f%%)", s.Done, s.Total, phaseUnit(s.Phase), 100*s.Fraction())
	}
	if eta, ok := s.ETA(now); ok {
		fmt.Fprintf(&b, ", ETA %s", eta)
	}
	if s.Removed > 0 {
		fmt.Fprintf(&b, ", removed %d chunks (%s)", s.Removed, gc.HumanBytes(s.RemovedBytes))
	}
	return b.String()
}

// drawBar updates the terminal line, starting a new bar at each phase
// with units to count.
func (p *progress) drawBar(s gc.Progress, final bool) {
	if s.Phase != p.barPhase {
		if p.bar != nil {
			p.bar.Finish()
			fmt.Fprintln(p.barW)
			p.bar = nil
		}
		p.barPhase = s.Phase
		if s.Total > 0 {
			p.bar = newBar(p.barW, s.Phase, s.Total)
		}
	}
	if p.bar == nil {
		return
	}
	if s.Removed > 0 {
		p.bar.Describe(fmt.Sprintf("%-6s removed %d (%s)", s.Phase, s.Removed, gc.HumanBytes(s.RemovedBytes)))
	}
	p.bar.Set64(min(s.Done, s.Total))
	if final {
		p.bar.Finish()
		fmt.Fprintln(p.barW)
		p.bar = nil
	}
}

func newBar(w io.Writer, phase string, total int64) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(fmt.Sprintf("%-6s", phase)),
		progressbar.OptionSetItsString(phaseUnit(phase)),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(progressTick),
		progressbar.OptionSetRenderBlankState(true),
	)
}
