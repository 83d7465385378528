package journal

import (
	"bufio"
	"errors"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/rtest"
)

// TestCrash SIGKILLs a process writing a journal at random points (after a
// random number of its progress lines, with frames of random sizes, half
// the rounds with a 1 ms flush timer racing the Adds): the journal then
// reads as incomplete, and its records are exactly rec(0)…rec(k-1), the
// prefix the one writing goroutine added, in order.
func TestCrash(t *testing.T) {
	const rounds = 12
	rnd := rand.New(rand.NewPCG(2026, 12))
	total := 0
	for round := range rounds {
		dir := t.TempDir()
		id := "crash-" + strconv.Itoa(round)
		flushN := 1 + rnd.IntN(40)
		interval := time.Hour
		if round%2 == 1 {
			interval = time.Millisecond
		}
		lines := rnd.IntN(200)
		cmd := rtest.Helper("writer", dir, id, strconv.Itoa(flushN), interval.String())
		out, err := cmd.StdoutPipe()
		rtest.OK(t, err)
		rtest.OK(t, cmd.Start())
		r := bufio.NewReader(out)
		line := func() string {
			s, err := r.ReadString('\n')
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: helper: %v (said %q)", round, err, s)
			}
			return strings.TrimSuffix(s, "\n")
		}
		if s := line(); s != "ready" {
			t.Fatalf("round %d: helper said %q", round, s)
		}
		for range lines {
			if s := line(); !strings.HasPrefix(s, "n ") {
				t.Fatalf("round %d: helper said %q", round, s)
			}
		}
		// A random moment into what follows, to vary the kill point; not a wait.
		time.Sleep(time.Duration(rnd.IntN(2000)) * time.Microsecond)
		rtest.OK(t, cmd.Process.Signal(unix.SIGKILL))
		err = cmd.Wait()
		if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
			t.Fatalf("round %d: want the helper killed by SIGKILL, got %v", round, err)
		}

		j, err := ReadFile(rtest.DirFD(t, dir), dir, FileName(id))
		rtest.OK(t, err)
		if j.Complete() {
			t.Fatalf("round %d: a killed writer's journal is complete", round)
		}
		for i, got := range j.Records {
			if got != rec(i) {
				t.Fatalf("round %d: record %d is %+v, want %+v", round, i, got, rec(i))
			}
		}
		// Every frame before the progress lines read was written: with the
		// timer off, all but the last partial frame of the reported records.
		if reported := lines * 64; interval == time.Hour && len(j.Records) < reported-flushN {
			t.Errorf("round %d: %d records read, the helper had added %d in frames of %d", round, len(j.Records), reported, flushN)
		}
		t.Logf("round %d: frames of %d, timer %v, killed after %d lines: %d records, tail %v", round, flushN, interval, lines, len(j.Records), j.Tail)
		total += len(j.Records)
	}
	if total == 0 {
		t.Fatal("no round read any record")
	}
}
