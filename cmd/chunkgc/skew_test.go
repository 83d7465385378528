package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chunkgc/config"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/skewfuse"
	"chunkgc/internal/testkit/testfs"
)

// TestCreateRefusesSkewedFileServer: on a file server 10 min behind, create
// probes, refuses naming both clocks, exits 1 and registers nothing; with
// the bound raised it registers the store with that tuning. check-atime
// prints the skew, and fails once the command line lowers the bound again.
func TestCreateRefusesSkewedFileServer(t *testing.T) {
	rtest.RequireRoot(t)
	backing := testfs.Loop(t, "ext4", "noatime", 256<<20)
	mnt := skewfuse.Mount(t, backing, -10*time.Minute)
	c := newCLI(t)
	base := filepath.Join(mnt, "s")

	r := c.run("create", "skewed", base)
	wantCode(t, r, exitError, "not registered", "file server time 20", "host time 20", "behind", "gc-max-clock-skew=30 s")
	if _, err := os.Stat(c.config); err == nil {
		b, _ := os.ReadFile(c.config)
		t.Fatalf("create registered a store on a skewed file server: %s", b)
	}

	r = c.run("create", "--reuse", "--tuning", "gc-max-clock-skew=900", "skewed", base)
	wantCode(t, r, exitOK, "clock-skew")
	cfg, err := config.Read(c.config)
	if err != nil {
		t.Fatal(err)
	}
	ds, ok := cfg.Datastore("skewed")
	if !ok || ds.Tuning != "gc-max-clock-skew=900" {
		t.Fatalf("not registered with its tuning: %s", cfg.Bytes())
	}

	r = c.run("check-atime", "skewed")
	wantCode(t, r, exitOK, "atime probe passed", "file server clock skew -", "bound gc-max-clock-skew=900 s")
	r = c.run("check-atime", "--tuning", "gc-max-clock-skew=60", "skewed")
	wantCode(t, r, exitError, "file server clock skew -", "behind", "gc-max-clock-skew=60")
}

// TestGCOnSkewedFileServer: the real binary refuses GC on a server 10 min
// behind with the default bound (exit 1, nothing removed), and with the
// bound raised in the config runs, removes the old garbage and reports the
// skew in its JSON; --tuning on the command line lowers the bound again.
func TestGCOnSkewedFileServer(t *testing.T) {
	rtest.RequireRoot(t)
	backing := testfs.Loop(t, "ext4", "noatime", 256<<20)
	ts := makeStore(t, filepath.Join(backing, "s"), 20, 10) // on the backing fs: fast
	mnt := skewfuse.Mount(t, backing, -10*time.Minute)
	base := filepath.Join(mnt, "s")
	c := newCLI(t)

	r := c.run("gc", base)
	wantCode(t, r, exitError, "file server time 20", "host time 20", "gc-max-clock-skew")
	if n := countExisting(ts.garbage); n != len(ts.garbage) {
		t.Fatalf("refused GC removed %d chunks", len(ts.garbage)-n)
	}
	if _, err := os.Stat(filepath.Join(backing, "s", ".gc-status")); err == nil {
		t.Error("refused GC wrote .gc-status")
	}

	cfg, err := config.Read(c.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg.SetDatastore(config.Datastore{Name: "skewed", Path: base, Tuning: "gc-max-clock-skew=900"})
	if err := cfg.WriteFile(c.config, fsys.Keep); err != nil {
		t.Fatal(err)
	}
	r = c.run("gc", "--tuning", "gc-max-clock-skew=30", "skewed")
	wantCode(t, r, exitError, "gc-max-clock-skew=30 s")

	r = c.run("gc", "--output", "json", "skewed")
	wantCode(t, r, exitOK, `"clock-skew-ms":-`)
	var st struct {
		RemovedChunks int64  `json:"removed-chunks"`
		ClockSkewMs   *int64 `json:"clock-skew-ms"`
		StartTime     int64  `json:"start-time"`
		MinAtime      int64  `json:"min-atime"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &st); err != nil {
		t.Fatalf("json output %q: %v", r.stdout, err)
	}
	if st.ClockSkewMs == nil || *st.ClockSkewMs > -599000 || *st.ClockSkewMs < -601000 {
		t.Errorf("clock-skew-ms %v, want about -600000", st.ClockSkewMs)
	}
	if lowered := st.StartTime - int64((1445*time.Minute)/time.Second) - st.MinAtime; lowered < 600 || lowered > 601 {
		t.Errorf("min-atime lowered by %d s, want 600", lowered)
	}
	if st.RemovedChunks != int64(len(ts.garbage)) || countExisting(ts.garbage) != 0 {
		t.Errorf("removed %d chunks, want the %d old garbage chunks", st.RemovedChunks, len(ts.garbage))
	}
	if countExisting(ts.refs) != len(ts.refs) {
		t.Error("referenced chunk removed")
	}
	wantCode(t, c.run("status", "skewed"), exitOK, "File server clock skew: -")
}
