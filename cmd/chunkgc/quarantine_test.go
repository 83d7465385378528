package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chunkgc/gc"
)

func runStatusJSON(t *testing.T, r result) gc.Status {
	t.Helper()
	var st gc.Status
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &st); err != nil {
		t.Fatalf("gc --output json: %v: %s", err, r.stdout)
	}
	return st
}

func missing(paths []string) (n int) {
	for _, p := range paths {
		if _, err := os.Lstat(p); err != nil {
			n++
		}
	}
	return n
}

// TestRestoreCLI: "chunkgc gc" with gc-quarantine-hours quarantines the
// garbage; "chunkgc restore" brings back one digest, then the rest of the
// run; an asked-for digest not in the quarantine is reported and exits 1;
// bad arguments are errors naming them.
func TestRestoreCLI(t *testing.T) {
	s := ext4Store(t, 256<<20, 50, 40)
	c := newCLI(t)
	r := c.run("gc", "--tuning", "gc-atime-safety-check=0,gc-quarantine-hours=24", "--output", "json", s.base)
	wantCode(t, r, exitOK, `"quarantined-chunks":40`)
	st := runStatusJSON(t, r)
	if st.QuarantineRun == "" {
		t.Fatalf("status names no quarantine run: %s", r.stdout)
	}
	if n := missing(s.garbage); n != 40 {
		t.Fatalf("%d of 40 garbage chunks left .chunks, want all", n)
	}

	one := filepath.Base(s.garbage[0])
	wantCode(t, c.run("restore", "--digest", one, s.base), exitOK, "Restored chunks: 1")
	if missing(s.garbage[:1]) != 0 {
		t.Fatal("restore --digest did not bring the chunk back")
	}
	wantCode(t, c.run("restore", "--digest", one, s.base), exitError, "Not in the quarantine: "+one)
	wantCode(t, c.run("restore", "--digest", "zz", s.base), exitUsage, "-digest", "64 hex digits")
	wantCode(t, c.run("restore", "--run", "nosuchrun", s.base), exitError, "nosuchrun")

	r = c.run("restore", "--run", st.QuarantineRun, "--output", "json", s.base)
	wantCode(t, r, exitOK, `"restored-chunks":39`)
	if n := missing(s.garbage); n != 0 {
		t.Fatalf("%d garbage chunks not restored", n)
	}
}

// TestRestoreWhileGCRuns: a restore (a real process) run while a second GC
// (a real process) sweeps with quarantine on leaves every restored chunk
// in .chunks: the prefix dir's shared flock and the touch before it is
// released keep the sweep from taking them again. Without the touch, a
// chunk restored into a dir the sweep had not reached yet would go back
// to the quarantine.
func TestRestoreWhileGCRuns(t *testing.T) {
	s := ext4Store(t, 512<<20, 200, 3000)
	c := newCLI(t)
	const tn = "gc-atime-safety-check=0,gc-quarantine-hours=24,gc-brake-percent=0"
	r := c.run("gc", "--tuning", tn, "--output", "json", s.base)
	wantCode(t, r, exitOK, `"quarantined-chunks":3000`)
	run := runStatusJSON(t, r).QuarantineRun

	cmd, log := startGC(t, c, "--tuning", tn+",gc-concurrency=1", s.base)
	waitLog(t, log, "start phase 2")
	wantCode(t, c.run("restore", "--run", run, s.base), exitOK, "Restored chunks: 3000")
	go func() {
		for log.Scan() {
		}
	}()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gc during restore: %v", err)
	}
	if n := missing(s.garbage); n != 0 {
		t.Fatalf("%d restored chunks were taken again by the GC that ran meanwhile", n)
	}
}
