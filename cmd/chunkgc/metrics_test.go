package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"chunkgc/config"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/promcheck"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/locking"
	"chunkgc/metrics"
)

// registerStore adds store name at base to c's config.
func registerStore(t *testing.T, c *cli, name, base string) {
	t.Helper()
	cfg, err := config.Read(c.config)
	rtest.OK(t, err)
	cfg.SetDatastore(config.Datastore{Name: name, Path: base})
	rtest.OK(t, cfg.WriteFile(c.config, fsys.Keep))
}

// families parses the Prometheus text format.
func families(t *testing.T, b []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, b)
	}
	return mfs
}

// sample is the value of the series of name whose labels include want
// ("k=v" each); ok false when there is none.
func sample(mfs map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		return metrics.SampleValue(m)
	}
	return 0, false
}

func mustSample(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	v, ok := sample(mfs, name, want...)
	if !ok {
		t.Fatalf("no series %s%v", name, want)
	}
	return v
}

// readTextfile reads and parses dir/chunkgc_<store>.prom.
func readTextfile(t *testing.T, dir, store string) ([]byte, map[string]*dto.MetricFamily) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "chunkgc_"+store+".prom"))
	rtest.OK(t, err)
	return b, families(t, b)
}

// gcStatus is what `chunkgc status --output json` says of the figures the
// tests compare.
type gcStatus struct {
	RemovedChunks int64  `json:"removed-chunks"`
	RemovedBytes  uint64 `json:"removed-bytes"`
	DiskChunks    int64  `json:"disk-chunks"`
	StartTime     int64  `json:"start-time"`
	ClockSkewMs   *int64 `json:"clock-skew-ms"`
}

func statusJSON(t *testing.T, c *cli, store string) gcStatus {
	t.Helper()
	r := c.run("status", "--output", "json", store)
	wantCode(t, r, exitOK)
	var st gcStatus
	rtest.OK(t, json.Unmarshal([]byte(r.stdout), &st))
	return st
}

// holdStore holds a classic POSIX read lock on base/.lock (a PBS backup)
// until the returned func is called.
func holdStore(t *testing.T, base string) (release func()) {
	t.Helper()
	h := rtest.Helper("posix-read-lock", filepath.Join(base, ".lock"))
	stdin, _ := h.StdinPipe()
	out, _ := h.StdoutPipe()
	rtest.OK(t, h.Start())
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "locked" {
		t.Fatalf("helper: %q", sc.Text())
	}
	return func() {
		stdin.Close()
		h.Wait()
	}
}

func mtime(t *testing.T, path string) float64 {
	t.Helper()
	fi, err := os.Stat(path)
	rtest.OK(t, err)
	return float64(fi.ModTime().UnixMilli()) / 1000
}

// TestMetricsTextfileEveryEnd: a brake, a forced ok run and a busy run each
// write the textfile; the figures stay those of .gc-status across the busy
// run, the last failure and the counters carry over, `chunkgc metrics`
// prints what the file holds, a dry run writes nothing,
// CHUNKGC_METRICS_DIR works like the flag, and a store that cannot be
// opened gets result error.
func TestMetricsTextfileEveryEnd(t *testing.T) {
	s := ext4Store(t, 256<<20, 10, 40) // 80 % garbage
	c := newCLI(t)
	registerStore(t, c, "store1", s.base)
	dir := t.TempDir()

	r := c.run("gc", "--metrics-dir", dir, "--tuning", "gc-brake-min-chunks=10", "store1")
	wantCode(t, r, exitBrake, "mass-deletion brake", "metrics written")
	_, m := readTextfile(t, dir, "store1")
	rtest.Equal(t, "brake result", 1.0, mustSample(t, m, "chunkgc_last_run_result", "store=store1", "result=brake"))
	rtest.Equal(t, "ok result", 0.0, mustSample(t, m, "chunkgc_last_run_result", "store=store1", "result=ok"))
	rtest.Equal(t, "probe", 1.0, mustSample(t, m, "chunkgc_last_run_atime_probe_result", "store=store1", "result=passed"))
	braked := mustSample(t, m, "chunkgc_last_failure_timestamp_seconds", "store=store1")
	if _, ok := sample(m, "chunkgc_removed_chunks"); ok {
		t.Error("figures of a store never collected")
	}
	if countExisting(s.garbage) != len(s.garbage) {
		t.Fatal("the braked run removed chunks")
	}

	r = c.run("gc", "--metrics-dir", dir, "--tuning", "gc-brake-min-chunks=10", "--force", "store1")
	wantCode(t, r, exitOK, "Removed chunks: 40")
	st := statusJSON(t, c, "store1")
	_, m = readTextfile(t, dir, "store1")
	rtest.Equal(t, "ok result", 1.0, mustSample(t, m, "chunkgc_last_run_result", "store=store1", "result=ok"))
	rtest.Equal(t, "removed", float64(st.RemovedChunks), mustSample(t, m, "chunkgc_removed_chunks", "store=store1"))
	rtest.Equal(t, "removed bytes", float64(st.RemovedBytes), mustSample(t, m, "chunkgc_removed_bytes", "store=store1"))
	rtest.Equal(t, "disk chunks", float64(st.DiskChunks), mustSample(t, m, "chunkgc_disk_chunks", "store=store1"))
	rtest.Equal(t, "start", float64(st.StartTime), mustSample(t, m, "chunkgc_start_timestamp_seconds", "store=store1"))
	rtest.Equal(t, "skew", float64(*st.ClockSkewMs)/1000, mustSample(t, m, "chunkgc_clock_skew_seconds", "store=store1"))
	rtest.Equal(t, "forced", 1.0, mustSample(t, m, "chunkgc_brake_forced", "store=store1"))
	rtest.Equal(t, "last failure kept", braked, mustSample(t, m, "chunkgc_last_failure_timestamp_seconds", "store=store1"))
	success := mustSample(t, m, "chunkgc_last_success_timestamp_seconds", "store=store1")

	release := holdStore(t, s.base)
	r = c.run("gc", "--metrics-dir", dir, "store1")
	release()
	wantCode(t, r, exitBusy, "store lock")
	file, m := readTextfile(t, dir, "store1")
	rtest.Equal(t, "busy result", 1.0, mustSample(t, m, "chunkgc_last_run_result", "store=store1", "result=busy"))
	rtest.Equal(t, "probe", 1.0, mustSample(t, m, "chunkgc_last_run_atime_probe_result", "store=store1", "result=unknown"))
	rtest.Equal(t, "removed kept", float64(st.RemovedChunks), mustSample(t, m, "chunkgc_removed_chunks", "store=store1"))
	rtest.Equal(t, "last success = .gc-status mtime", mtime(t, filepath.Join(s.base, ".gc-status")),
		mustSample(t, m, "chunkgc_last_success_timestamp_seconds", "store=store1"))
	rtest.Equal(t, "last success kept", success, mustSample(t, m, "chunkgc_last_success_timestamp_seconds", "store=store1"))
	rtest.Equal(t, "last failure kept", braked, mustSample(t, m, "chunkgc_last_failure_timestamp_seconds", "store=store1"))
	for res, n := range map[string]float64{"ok": 1, "brake": 1, "busy": 1, "error": 0, "canceled": 0} {
		rtest.Equal(t, "runs "+res, n, mustSample(t, m, "chunkgc_runs_total", "store=store1", "result="+res))
	}

	// chunkgc metrics: what the file holds; without the dir, the status only.
	r = c.run("metrics", "--metrics-dir", dir, "store1")
	wantCode(t, r, exitOK)
	rtest.Equal(t, "chunkgc metrics = textfile", string(file), r.stdout)
	r = c.run("metrics", "store1")
	wantCode(t, r, exitOK, `chunkgc_removed_chunks{store="store1"} 40`)
	if strings.Contains(r.stdout, "chunkgc_last_run_result") {
		t.Errorf("chunkgc metrics without a textfile shows a last run:\n%s", r.stdout)
	}

	// A dry run writes nothing; the environment variable works as the flag.
	dry := t.TempDir()
	wantCode(t, c.run("gc", "--dry-run", "--metrics-dir", dry, "store1"), exitOK)
	ents, err := os.ReadDir(dry)
	rtest.OK(t, err)
	rtest.Equal(t, "files after a dry run", 0, len(ents))
	envDir := t.TempDir()
	cmd := c.cmd("gc", "store1")
	cmd.Env = append(cmd.Env, "CHUNKGC_METRICS_DIR="+envDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gc with CHUNKGC_METRICS_DIR: %v\n%s", err, out)
	}
	_, m = readTextfile(t, envDir, "store1")
	rtest.Equal(t, "removed by the env run", 0.0, mustSample(t, m, "chunkgc_removed_chunks", "store=store1"))

	// A store that cannot be opened: result error, under its escaped path.
	gone := filepath.Join(t.TempDir(), "gone")
	wantCode(t, c.run("gc", "--metrics-dir", dir, gone), exitError)
	_, m = readTextfile(t, dir, locking.EscapePath(gone))
	rtest.Equal(t, "error result", 1.0, mustSample(t, m, "chunkgc_last_run_result", "result=error"))
}

// freePort is a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	rtest.OK(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	rtest.OK(t, l.Close())
	return port
}

// nodeExporter starts the real prometheus-node-exporter with only the
// textfile collector, reading dir, and returns its /metrics URL.
func nodeExporter(t *testing.T, bin, dir string) string {
	t.Helper()
	for attempt := 0; ; attempt++ {
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		cmd := exec.Command(bin, "--web.listen-address="+addr, "--collector.disable-defaults",
			"--collector.textfile", "--collector.textfile.directory="+dir)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		rtest.OK(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		url := "http://" + addr + "/metrics"
		err := waitHTTP(url, exited, 20*time.Second)
		if err == nil {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return url
		}
		cmd.Process.Kill()
		<-exited
		if attempt == 2 {
			t.Fatalf("node exporter on %s: %v\n%s", addr, err, log.String())
		}
	}
}

// waitHTTP polls url until it answers 200, the process exits or the time
// is up.
func waitHTTP(url string, exited <-chan error, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := scrapeCtx(ctx, url); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func scrapeCtx(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return b, nil
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := scrapeCtx(ctx, url)
	rtest.OK(t, err)
	return families(t, b)
}

// TestMetricsNodeExporterScrape: the real node_exporter (Debian package
// prometheus-node-exporter) serves the textfile of a real GC run through
// the chunkgc binary: the scraped figures are those of .gc-status, the
// textfile collector reports no error, promtool accepts the file; a busy
// run changes the result and keeps the figures.
func TestMetricsNodeExporterScrape(t *testing.T) {
	exporter, err := exec.LookPath("prometheus-node-exporter")
	if err != nil {
		exporter, err = exec.LookPath("node_exporter")
	}
	if err != nil {
		rtest.SkipOrFail(t, "prometheus-node-exporter not installed (Debian package prometheus-node-exporter; .ci/run installs it)")
	}
	promtool := promcheck.Promtool(t)
	s := ext4Store(t, 256<<20, 30, 20)
	c := newCLI(t)
	registerStore(t, c, "store1", s.base)
	dir := t.TempDir()
	url := nodeExporter(t, exporter, dir)

	wantCode(t, c.run("gc", "--metrics-dir", dir, "store1"), exitOK, "Removed chunks: 20")
	st := statusJSON(t, c, "store1")
	m := scrape(t, url)
	rtest.Equal(t, "scrape error", 0.0, mustSample(t, m, "node_textfile_scrape_error"))
	if _, ok := sample(m, "node_textfile_mtime_seconds", "file="+filepath.Join(dir, "chunkgc_store1.prom")); !ok {
		if _, ok := sample(m, "node_textfile_mtime_seconds", "file=chunkgc_store1.prom"); !ok {
			t.Error("node exporter lists no mtime for chunkgc_store1.prom")
		}
	}
	rtest.Equal(t, "removed chunks", float64(st.RemovedChunks), mustSample(t, m, "chunkgc_removed_chunks", "store=store1"))
	rtest.Equal(t, "removed bytes", float64(st.RemovedBytes), mustSample(t, m, "chunkgc_removed_bytes", "store=store1"))
	rtest.Equal(t, "disk chunks", float64(st.DiskChunks), mustSample(t, m, "chunkgc_disk_chunks", "store=store1"))
	rtest.Equal(t, "ok", 1.0, mustSample(t, m, "chunkgc_last_run_result", "store=store1", "result=ok"))
	rtest.Equal(t, "probe passed", 1.0, mustSample(t, m, "chunkgc_last_run_atime_probe_result", "store=store1", "result=passed"))
	mustSample(t, m, "chunkgc_phase_duration_seconds", "store=store1", "phase=sweep")

	promcheck.Check(t, promtool, filepath.Join(dir, "chunkgc_store1.prom"))

	release := holdStore(t, s.base)
	wantCode(t, c.run("gc", "--metrics-dir", dir, "store1"), exitBusy)
	release()
	m = scrape(t, url)
	rtest.Equal(t, "scrape error", 0.0, mustSample(t, m, "node_textfile_scrape_error"))
	rtest.Equal(t, "busy", 1.0, mustSample(t, m, "chunkgc_last_run_result", "store=store1", "result=busy"))
	rtest.Equal(t, "removed chunks kept", float64(st.RemovedChunks), mustSample(t, m, "chunkgc_removed_chunks", "store=store1"))
	rtest.Equal(t, "busy runs", 1.0, mustSample(t, m, "chunkgc_runs_total", "store=store1", "result=busy"))
}

// TestMetricsCanceledRun: SIGTERM during the atime probe's sleep exits 143
// and the textfile says canceled, a failure, with the probe unknown.
func TestMetricsCanceledRun(t *testing.T) {
	s := ext4Store(t, 256<<20, 5, 5)
	c := newCLI(t)
	registerStore(t, c, "store1", s.base)
	dir := t.TempDir()
	gc, log := startGC(t, c, "--metrics-dir", dir, "store1")
	waitLog(t, log, "using access time cutoff")
	rtest.OK(t, gc.Process.Signal(syscall.SIGTERM))
	for log.Scan() {
	}
	err := gc.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 143 {
		t.Fatalf("exit %v, want 143", err)
	}
	_, m := readTextfile(t, dir, "store1")
	rtest.Equal(t, "canceled", 1.0, mustSample(t, m, "chunkgc_last_run_result", "store=store1", "result=canceled"))
	rtest.Equal(t, "probe", 1.0, mustSample(t, m, "chunkgc_last_run_atime_probe_result", "store=store1", "result=unknown"))
	mustSample(t, m, "chunkgc_last_failure_timestamp_seconds", "store=store1")
	if countExisting(s.garbage) != len(s.garbage) {
		t.Fatal("the canceled run removed chunks")
	}
}
