package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/sys/unix"

	"chunkgc/chunkstore"
	"chunkgc/gc"
	"chunkgc/internal/testkit/leakcheck"
	"chunkgc/internal/testkit/promcheck"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/locking"
)

var update = flag.Bool("update", false, "rewrite the metric table in README.md")

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m, "chunkgc/metrics."))
}

func ptr[T any](v T) *T { return &v }

// fullStatus has a non-zero value in every field, the brake report and the
// clock skew included.
func fullStatus() *gc.Status {
	return &gc.Status{
		PBSFigures: gc.PBSFigures{UPID: "UPID:host:00000001:00000000:00000000:6765D5C0:garbage_collection:store1:root@pam:", IndexFileCount: 3,
			IndexDataBytes: 3 << 30, DiskBytes: 1 << 30, DiskChunks: 256, RemovedBytes: 5 << 20, RemovedChunks: 7,
			PendingBytes: 4096, PendingChunks: 2, RemovedBad: 1, StillBad: 1},
		MissingChunks: 1, StrangeIndexFiles: 1,
		NewIndexFiles: 1, NotChunks: 1, KeptUntouched: 1, KeptLinked: 1, CacheHits: 10, CacheLookups: 20,
		StartTime: 1_766_000_000, MinAtime: 1_765_913_300, OldestWriter: 1_766_000_000,
		DurationPhase1: 1.5, DurationPhase2: 2.25, ClockSkewMs: ptr(int64(-1250)), JournalRun: "20251217T193320Z-1",
		Brake: &gc.BrakeReport{Exact: true, SampledPrefixDirs: 65536, SampledChunks: 263, ChunksPercent: 2.5, ChunksBound: 0.5,
			BytesPercent: 1.25, BytesBound: 0.25, EstimatedChunks: 263, EstimatedRemovals: 7, EstimatedRemovedGiB: 0.5,
			ThresholdPercent: 50, MinChunks: 1000, Tripped: true, Forced: true},
	}
}

// expose writes what g gathers and parses it back.
func expose(t *testing.T, g prometheus.Gatherer) (*Previous, string) {
	t.Helper()
	var b bytes.Buffer
	rtest.OK(t, WriteText(&b, g))
	p, err := ParsePrevious(b.Bytes(), "test")
	rtest.OK(t, err)
	return p, b.String()
}

// value is the series of name (and result label, when not "") of store.
func value(t *testing.T, p *Previous, name, result string) float64 {
	t.Helper()
	v, ok := p.gauge(name, "store1", result)
	if !ok {
		t.Fatalf("no series %s{store=store1,result=%q}", name, result)
	}
	return v
}

func absent(t *testing.T, p *Previous, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, ok := p.families[n]; ok {
			t.Errorf("family %s present, want absent", n)
		}
	}
}

// jsonFields are the JSON names of t's fields, an embedded struct's
// fields in its place as encoding/json writes them.
func jsonFields(t reflect.Type, prefix string) []string {
	var f []string
	for i := range t.NumField() {
		if sf := t.Field(i); sf.Anonymous {
			f = append(f, jsonFields(sf.Type, prefix)...)
			continue
		}
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		f = append(f, prefix+name)
	}
	return f
}

// TestEveryStatusFieldHasAMetric: every .gc-status field and every field of
// its brake report is shown by a metric, or exempt with a reason.
func TestEveryStatusFieldHasAMetric(t *testing.T) {
	shown := map[string]bool{}
	for _, d := range Defs() {
		for _, f := range d.Fields {
			shown[f] = true
		}
	}
	fields := append(jsonFields(reflect.TypeFor[gc.Status](), ""), jsonFields(reflect.TypeFor[gc.BrakeReport](), "brake.")...)
	fields = append(fields, jsonFields(reflect.TypeFor[gc.S3SweepCounts](), "s3.")...)
	fields = append(fields, jsonFields(reflect.TypeFor[gc.S3Requests](), "s3.requests.")...)
	for _, f := range fields {
		if f == "brake" || f == "s3" || f == "s3.requests" || slices.Contains(ExemptFields, f) {
			continue
		}
		if !shown[f] {
			t.Errorf(".gc-status field %s has no metric (add it to figures in metrics.go, or to ExemptFields with a reason)", f)
		}
		delete(shown, f)
	}
	for f := range shown {
		t.Errorf("metric field %s is not a .gc-status field", f)
	}
}

func TestNames(t *testing.T) {
	for _, d := range Defs() {
		if !strings.HasPrefix(d.Name, "chunkgc_") {
			t.Errorf("%s lacks the chunkgc_ prefix", d.Name)
		}
		if (d.Type == typeCounter) != strings.HasSuffix(d.Name, "_total") {
			t.Errorf("%s: a %s; only counters end in _total", d.Name, d.Type)
		}
		if strings.Contains(d.Name, "percent") || strings.Contains(d.Name, "gib") || strings.HasSuffix(d.Name, "_ms") {
			t.Errorf("%s: not in base units", d.Name)
		}
	}
}

// TestStatusGroup: every figure of a full status, in base units.
func TestStatusGroup(t *testing.T) {
	at := time.Unix(1_766_000_004, 500_000_000)
	p, text := expose(t, Build(Input{Store: "store1", Status: fullStatus(), StatusTime: at}))
	tests := []struct {
		name, label string
		want        float64
	}{
		{"chunkgc_index_files", "", 3},
		{"chunkgc_index_data_bytes", "", 3 << 30},
		{"chunkgc_removed_chunks", "", 7},
		{"chunkgc_removed_bytes", "", 5 << 20},
		{"chunkgc_clock_skew_seconds", "", -1.25},
		{"chunkgc_brake_chunks_ratio", "", 0.025},
		{"chunkgc_brake_threshold_ratio", "", 0.5},
		{"chunkgc_brake_estimated_removed_bytes", "", 1 << 29},
		{"chunkgc_brake_forced", "", 1},
		{"chunkgc_start_timestamp_seconds", "", 1_766_000_000},
		{"chunkgc_last_success_timestamp_seconds", "", 1_766_000_004.5},
	}
	for _, tt := range tests {
		rtest.Equal(t, tt.name, tt.want, value(t, p, tt.name, tt.label))
	}
	for _, want := range []string{
		`chunkgc_phase_duration_seconds{phase="mark",store="store1"} 1.5`,
		`chunkgc_phase_duration_seconds{phase="sweep",store="store1"} 2.25`,
		`chunkgc_status_info{journal_run="20251217T193320Z-1",quarantine_run="",resumed_from="",resumed_phase="",store="store1",upid="UPID:host:`,
		"# TYPE chunkgc_disk_bytes gauge",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q:\n%s", want, text)
		}
	}
	absent(t, p, nameResult, nameRuns, nameLastFailure)

	// Probe off and brake off: their families are absent, not zero.
	st := fullStatus()
	st.ClockSkewMs, st.Brake = nil, nil
	p, _ = expose(t, Build(Input{Store: "store1", Status: st}))
	absent(t, p, "chunkgc_clock_skew_seconds", "chunkgc_brake_tripped", nameLastSuccess)
}

func TestClassify(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		give error
		want Result
	}{
		{"ok", context.Background(), nil, ResultOK},
		{"error", context.Background(), errors.New("boom"), ResultError},
		{"busy", context.Background(), fmt.Errorf("gc lock: %w", locking.ErrLocked), ResultBusy},
		{"brake", context.Background(), &gc.BrakeError{Base: "/s"}, ResultBrake},
		{"canceled", context.Background(), fmt.Errorf("phase 2: %w", context.Canceled), ResultCanceled},
		{"error after cancel", canceled, errors.New("EIO on the way out"), ResultCanceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rtest.Equal(t, "result", tt.want, Classify(tt.ctx, tt.give))
		})
	}
}

// TestRunGroup: result and probe state sets, the skew a refused probe
// measured, and the last failure and counters carried over a run.
func TestRunGroup(t *testing.T) {
	start := time.Unix(1_766_000_000, 0)
	end := start.Add(90 * time.Second)
	skewErr := fmt.Errorf("atime safety check: %w", &chunkstore.ClockSkewError{Skew: -45 * time.Second, Bound: 30 * time.Second})
	tests := []struct {
		name      string
		run       Run
		wantProbe Probe
		wantSkew  float64 // NaN: absent
	}{
		{"ok", Run{Result: ResultOK, Status: fullStatus()}, ProbePassed, -1.25},
		{"probe off", Run{Result: ResultOK, Status: &gc.Status{}}, ProbeDisabled, -1},
		{"clock skew", Run{Result: ResultError, Err: skewErr}, ProbeClockSkew, -45},
		{"not honoured", Run{Result: ResultError, Err: fmt.Errorf("atime safety check: %w", &chunkstore.ProbeError{})}, ProbeNotHonoured, -1},
		{"replaced", Run{Result: ResultError, Err: fmt.Errorf("x: %w", chunkstore.ErrProbeChunkReplaced)}, ProbeChunkReplaced, -1},
		{"busy", Run{Result: ResultBusy, Err: locking.ErrLocked}, ProbeUnknown, -1},
		{"brake", Run{Result: ResultBrake, Err: &gc.BrakeError{}, Status: fullStatus()}, ProbePassed, -1.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.run
			r.Start, r.End = start, end
			p, _ := expose(t, Build(Input{Store: "store1", Run: &r}))
			for _, x := range Results {
				rtest.Equal(t, "result "+string(x), bool01(x == r.Result), value(t, p, nameResult, string(x)))
				rtest.Equal(t, "runs "+string(x), bool01(x == r.Result), value(t, p, nameRuns, string(x)))
			}
			for _, x := range Probes {
				rtest.Equal(t, "probe "+string(x), bool01(x == tt.wantProbe), value(t, p, nameProbe, string(x)))
			}
			if tt.wantSkew == -1 {
				absent(t, p, nameRunSkew)
			} else {
				rtest.Equal(t, "skew", tt.wantSkew, value(t, p, nameRunSkew, ""))
			}
			rtest.Equal(t, "duration", 90.0, value(t, p, nameRunDuration, ""))
			rtest.Equal(t, "run time", float64(end.Unix()), value(t, p, nameRunTime, ""))
			if r.Result.failure() {
				rtest.Equal(t, "last failure", float64(end.Unix()), value(t, p, nameLastFailure, ""))
			} else {
				absent(t, p, nameLastFailure)
			}
		})
	}
}

func TestRunGroupCarriesOver(t *testing.T) {
	t0 := time.Unix(1_766_000_000, 0)
	prev := (*Previous)(nil)
	steps := []struct {
		res         Result
		wantFailure time.Time // zero: absent
	}{
		{ResultError, t0},
		{ResultOK, t0},
		{ResultBusy, t0},
		{ResultBrake, t0.Add(3 * time.Hour)},
		{ResultOK, t0.Add(3 * time.Hour)},
	}
	for i, s := range steps {
		end := t0.Add(time.Duration(i) * time.Hour)
		var st *gc.Status
		if s.res == ResultOK {
			st = fullStatus()
		}
		p, _ := expose(t, Build(Input{Store: "store1", Status: st, StatusTime: end, Previous: prev,
			Run: &Run{Result: s.res, Status: st, Start: end.Add(-time.Minute), End: end}}))
		rtest.Equal(t, fmt.Sprintf("step %d last failure", i), float64(s.wantFailure.Unix()), value(t, p, nameLastFailure, ""))
		// Another store's series in the same file are not this store's.
		prev = p
	}
	want := map[Result]float64{ResultOK: 2, ResultError: 1, ResultBusy: 1, ResultBrake: 1, ResultCanceled: 0}
	for res, n := range want {
		rtest.Equal(t, "runs "+string(res), n, value(t, prev, nameRuns, string(res)))
	}
	if _, ok := prev.gauge(nameRuns, "store2", string(ResultOK)); ok {
		t.Error("store2 has series in store1's file")
	}
}

// TestTextfileAsWriteToTextfile: the textfile holds exactly what
// prometheus.WriteToTextfile writes for the same registry, is 0644, and
// leaves no temporary file.
func TestTextfileAsWriteToTextfile(t *testing.T) {
	dir := t.TempDir()
	end := time.Unix(1_766_000_100, 0)
	reg := Build(Input{Store: "store1", Status: fullStatus(), StatusTime: end,
		Run: &Run{Result: ResultOK, Status: fullStatus(), Start: end.Add(-time.Minute), End: end}})
	path, err := WriteTextfile(dir, "store1", reg)
	rtest.OK(t, err)
	rtest.Equal(t, "path", filepath.Join(dir, "chunkgc_store1.prom"), path)
	ref := filepath.Join(t.TempDir(), "ref.prom")
	rtest.OK(t, prometheus.WriteToTextfile(ref, reg))
	got, err := os.ReadFile(path)
	rtest.OK(t, err)
	want, err := os.ReadFile(ref)
	rtest.OK(t, err)
	rtest.Equal(t, "textfile", string(want), string(got))
	fi, err := os.Stat(path)
	rtest.OK(t, err)
	rtest.Equal(t, "mode", os.FileMode(0o644), fi.Mode().Perm())
	ents, err := os.ReadDir(dir)
	rtest.OK(t, err)
	rtest.Equal(t, "files in dir", 1, len(ents))

	prev, err := ReadPrevious(dir, "store1")
	rtest.OK(t, err)
	rtest.Equal(t, "runs ok", 1.0, value(t, prev, nameRuns, string(ResultOK)))
}

// TestReadPrevious: a missing file is no previous file; a symlink or FIFO
// planted in its place is an error naming the path, never followed or
// waited on; a garbled file is an error naming the path.
func TestReadPrevious(t *testing.T) {
	dir := t.TempDir()
	p, err := ReadPrevious(dir, "store1")
	rtest.OK(t, err)
	if p != nil {
		t.Fatal("previous textfile from nowhere")
	}
	path := filepath.Join(dir, TextfileName("store1"))
	secret := filepath.Join(t.TempDir(), "secret.prom")
	rtest.OK(t, os.WriteFile(secret, []byte("chunkgc_runs_total{store=\"store1\",result=\"ok\"} 99\n"), 0o644))
	rtest.OK(t, os.Symlink(secret, path))
	_, err = ReadPrevious(dir, "store1")
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("symlink: err %v, want an error naming %s", err, path)
	}
	rtest.OK(t, os.Remove(path))
	rtest.OK(t, mkfifo(path))
	_, err = ReadPrevious(dir, "store1")
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("fifo: err %v, want an error naming %s", err, path)
	}
	rtest.OK(t, os.Remove(path))
	rtest.OK(t, os.WriteFile(path, []byte("chunkgc_runs_total{{{\n"), 0o644))
	_, err = ReadPrevious(dir, "store1")
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("garbled: err %v, want an error naming %s", err, path)
	}
	// Writing replaces the symlink, never writes through it.
	rtest.OK(t, os.Remove(path))
	rtest.OK(t, os.Symlink(secret, path))
	_, err = WriteTextfile(dir, "store1", Build(Input{Store: "store1", Status: fullStatus()}))
	rtest.OK(t, err)
	b, _ := os.ReadFile(secret)
	rtest.Equal(t, "secret", "chunkgc_runs_total{store=\"store1\",result=\"ok\"} 99\n", string(b))
}

func TestReadStatus(t *testing.T) {
	base := t.TempDir()
	_, _, err := ReadStatus(base)
	rtest.ErrorIs(t, err, fs.ErrNotExist)
	b, err := json.Marshal(fullStatus())
	rtest.OK(t, err)
	path := filepath.Join(base, gc.StatusFile)
	rtest.OK(t, os.WriteFile(path, b, 0o644))
	mtime := time.Unix(1_766_000_123, 0)
	rtest.OK(t, os.Chtimes(path, mtime, mtime))
	st, at, err := ReadStatus(base)
	rtest.OK(t, err)
	rtest.Equal(t, "removed", int64(7), st.RemovedChunks)
	rtest.Equal(t, "mtime", mtime.Unix(), at.Unix())
}

// TestCurrent: `chunkgc metrics` shows .gc-status and the run group of the
// textfile with the help of this version, also for a file an older one
// wrote with another help.
func TestCurrent(t *testing.T) {
	end := time.Unix(1_766_000_100, 0)
	old, _ := expose(t, Build(Input{Store: "store1", Run: &Run{Result: ResultBusy, Err: locking.ErrLocked, Start: end, End: end}}))
	old.families[nameResult].Help = ptr("an older help")
	p, text := expose(t, Current("store1", fullStatus(), end, old))
	rtest.Equal(t, "busy", 1.0, value(t, p, nameResult, "busy"))
	rtest.Equal(t, "removed", 7.0, value(t, p, "chunkgc_removed_chunks", ""))
	if !strings.Contains(text, "# HELP "+nameResult+" "+helpResult) {
		t.Errorf("help not this version's:\n%s", text)
	}
	p, _ = expose(t, Current("store1", fullStatus(), end, nil))
	absent(t, p, nameResult)
}

// TestPromtoolCheckMetrics runs `promtool check metrics` (the Debian package
// prometheus) on textfiles of every kind of run: it checks the format and
// the naming conventions.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := promcheck.Promtool(t)
	end := time.Unix(1_766_000_100, 0)
	skewErr := &chunkstore.ClockSkewError{Skew: -45 * time.Second}
	for _, in := range []Input{
		{Store: "store1", Status: fullStatus(), StatusTime: end, Run: &Run{Result: ResultOK, Status: fullStatus(), Start: end, End: end}},
		{Store: "store1", Status: fullStatus(), StatusTime: end, Run: &Run{Result: ResultError, Err: skewErr, Start: end, End: end}},
		{Store: "store1", Run: &Run{Result: ResultBusy, Err: locking.ErrLocked, Start: end, End: end}},
		{Store: "store1", Status: fullStatus()},
	} {
		dir := t.TempDir()
		path, err := WriteTextfile(dir, in.Store, Build(in))
		rtest.OK(t, err)
		promcheck.Check(t, promtool, path)
	}
}

// README "Metrics" holds the table readmeTable generates between these
// markers; go test ./metrics -run README -update rewrites it.
const (
	readmeBegin = "<!-- metrics table: generated by go test ./metrics -run README -update -->\n"
	readmeEnd   = "<!-- end of metrics table -->\n"
)

func readmeTable() string {
	var b strings.Builder
	b.WriteString("| metric | type | labels | from | help |\n|---|---|---|---|---|\n")
	for _, d := range Defs() {
		labels := append([]string{labelStore}, d.Labels...)
		from := "run"
		if !d.Run {
			from = "status"
			if len(d.Fields) > 0 {
				from = "`" + strings.Join(d.Fields, "`, `") + "`"
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", d.Name, d.Type, strings.Join(labels, ", "), from, strings.ReplaceAll(d.Help, "|", "\\|"))
	}
	return b.String()
}

// TestREADMEListsEveryMetric: README's metric table is the one Defs gives.
func TestREADMEListsEveryMetric(t *testing.T) {
	path := filepath.Join("..", "README.md")
	b, err := os.ReadFile(path)
	rtest.OK(t, err)
	s := string(b)
	i, j := strings.Index(s, readmeBegin), strings.Index(s, readmeEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q and %q", readmeBegin, readmeEnd)
	}
	got, want := s[i+len(readmeBegin):j], readmeTable()
	if got == want {
		return
	}
	if *update {
		rtest.OK(t, os.WriteFile(path, []byte(s[:i+len(readmeBegin)]+want+s[j:]), 0o644))
		return
	}
	t.Errorf("README.md metric table differs from Defs (go test ./metrics -run README -update):\ngot:\n%s\nwant:\n%s", got, want)
}

func mkfifo(path string) error {
	if err := unix.Mkfifo(path, 0o644); err != nil {
		return &fs.PathError{Op: "mkfifo", Path: path, Err: err}
	}
	return nil
}
