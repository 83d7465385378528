package main

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"chunkgc/gc"
	"chunkgc/internal/testkit/rtest"
)

// TestStatusLine: the systemd status names the phase, units, percent, ETA
// and what was removed.
func TestStatusLine(t *testing.T) {
	now := time.Now()
	s := gc.Progress{Phase: "sweep", Done: 16384, Total: 65536, Removed: 12, RemovedBytes: 3 << 20, PhaseStart: now.Add(-10 * time.Second)}
	got := statusLine(s, now)
	want := "sweep 16384/65536 prefix dirs (25%), ETA 30s, removed 12 chunks (3 MiB)"
	if got != want {
		t.Fatalf("statusLine = %q, want %q", got, want)
	}
	if got := statusLine(gc.Progress{Phase: "prepare"}, now); got != "prepare" {
		t.Fatalf("statusLine of prepare = %q", got)
	}
}

// TestProgressBar: on a terminal the line shows the phase, count and
// percent, a new line per phase (the bar is drawn into a buffer here: the
// terminal check itself is isTerminal's).
func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	tr := new(gc.Tracker)
	p := &progress{tr: tr, barW: &buf}
	p.drawBar(gc.Progress{Phase: "mark", Done: 10, Total: 40}, false)
	p.drawBar(gc.Progress{Phase: "mark", Done: 40, Total: 40}, false)
	p.drawBar(gc.Progress{Phase: "sweep", Done: 65536, Total: 65536, Removed: 3, RemovedBytes: 4096}, true)
	out := buf.String()
	rtest.Contains(t, "progress line", out, "mark", "40/40", "100%", "sweep", "65536/65536", "removed 3 (4 KiB)")
}

// TestNotifySocket: under systemd (a $NOTIFY_SOCKET, here a unix datagram
// socket of the test's) a GC sends STATUS= lines for each phase, with
// counts and percent, and one when done.
func TestNotifySocket(t *testing.T) {
	s := ext4Store(t, 256<<20, 600, 600)
	c := newCLI(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 1024)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	cmd := c.cmd("gc", "--tuning", "gc-atime-safety-check=0", s.base)
	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gc: %v\n%s", err, out)
	}
	var got []string
	deadline := time.After(5 * time.Second)
collect:
	for {
		select {
		case m := <-msgs:
			got = append(got, m)
			if m == "STATUS=done" {
				break collect
			}
		case <-deadline:
			break collect
		}
	}
	all := strings.Join(got, "\n")
	rtest.Contains(t, "status lines", all, "STATUS=mark", "indexes", "STATUS=sweep", "prefix dirs (", "%)", "STATUS=done")
}

// TestSIGUSR1LogsProgress: kill -USR1 makes a running GC log its progress
// at once, with phase, counts and percent, and the GC goes on to finish.
func TestSIGUSR1LogsProgress(t *testing.T) {
	s := ext4Store(t, 512<<20, 2000, 2000)
	c := newCLI(t)
	cmd, log := startGC(t, c, "--tuning", "gc-atime-safety-check=0,gc-concurrency=1,gc-brake-percent=0", s.base)
	waitLog(t, log, "start phase 2")
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	for log.Scan() {
		line := log.Text()
		if strings.Contains(line, `"msg":"progress"`) {
			rtest.Contains(t, "progress line", line, `"progress-phase":`, `"done":`, `"total":`, `"percent":`)
			break
		}
		if strings.Contains(line, "gc finished") {
			t.Fatal("GC finished without logging its progress on SIGUSR1")
		}
	}
	go func() {
		for log.Scan() {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gc after SIGUSR1: %v", err)
	}
}

// BenchmarkProgressUpdate is one tick of the terminal line: what the
// display costs per 250 ms, whatever the store's size (README "Progress").
//
//	go test -run '^$' -bench ProgressUpdate ./cmd/chunkgc
func BenchmarkProgressUpdate(b *testing.B) {
	p := &progress{tr: new(gc.Tracker), barW: io.Discard}
	p.drawBar(gc.Progress{Phase: "sweep", Total: 65536}, false)
	n := int64(0)
	for b.Loop() {
		n = (n + 7) % 65536
		p.drawBar(gc.Progress{Phase: "sweep", Done: n, Total: 65536, Removed: n, RemovedBytes: uint64(n) << 12}, false)
	}
}
