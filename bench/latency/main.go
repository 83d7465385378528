// Command latency runs chunkgc over the latency harness (bench/latfs) and
// prints medians, ratios and FUSE requests per referenced chunk and per
// prefix dir. For every delay it mounts latfs in this process over the
// directory that holds the fixture store and an empty store, then runs, in
// rotating order, a sequential GC (gc-concurrency=1, what PBS does), the
// default (no override) and a sweep of fixed concurrencies; then the floor
// (bench/floor: only the unavoidable calls) with the best fixed one's
// parallelism, and the default on the empty store (every prefix dir
// empty). Before every run genstore restores the fixture on the backing
// directory (not through FUSE): the garbage the previous run removed is
// written again and every chunk is aged, so every run does the same work.
//
// Requests are counted per run and per phase: the counters are snapshot
// when chunkgc logs "start phase 1", "phase 1 finished", "start phase 2"
// and "gc finished" (read from its JSON log as it runs, so a few requests in
// flight at a boundary may land in the neighbouring phase).
//
//	go run ./bench/latency -dir /mnt/disk -mnt /tmp/lat -bin chunkgc -floor floor -genstore genstore
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"chunkgc/bench/latfs"
	"chunkgc/gc"
)

// Segments of a GC run, split at its log lines.
const (
	segSetup  = iota // lock, store open, cutoff: up to "start phase 1"
	segMark          // phase 1
	segCheck         // between the phases (prefix dir check)
	segSweep         // phase 2
	segFinish        // .gc-status, unlock
	numSegs
)

var segNames = [numSegs]string{"setup", "phase1", "between", "phase2", "finish"}

var segMarkers = [numSegs - 1]string{"start phase 1", "phase 1 finished", "start phase 2", "gc finished"}

type result struct {
	wall, p1, p2 time.Duration
	ops          [numSegs]latfs.Counts // floor: all in segSetup
	removed      int64
}

type variant struct {
	name        string
	concurrency int // -1: default (no override); floor: its workers
	floor       bool
	store       string // "store" or "empty"
	runs        []result
}

type config struct {
	dir, mnt, bin, floor, genstore, lockDir string
	nofile                                  int
	floorWorkers                            int
	chunks, indexes, garbage                int
	runs, runsSeq                           int
	sweep                                   []int
	noSeq, noEmpty                          bool
}

func main() {
	var c config
	delays := flag.String("delays", "200us,1ms", "comma-separated delays per FUSE request")
	sweep := flag.String("sweep", "8,16,32,64", "fixed gc-concurrency values to try")
	flag.StringVar(&c.dir, "dir", "", "backing directory on a real disk, holding store/ and empty/ (made by genstore)")
	flag.StringVar(&c.mnt, "mnt", "", "mount point for latfs (an existing empty directory)")
	flag.StringVar(&c.bin, "bin", "chunkgc", "chunkgc binary")
	flag.StringVar(&c.floor, "floor", "floor", "floor binary")
	flag.StringVar(&c.genstore, "genstore", "genstore", "genstore binary (restores the fixture before every run)")
	flag.StringVar(&c.lockDir, "lock-dir", os.TempDir(), "chunkgc --lock-dir (local, not on the harness)")
	flag.IntVar(&c.chunks, "chunks", 22000, "genstore -chunks")
	flag.IntVar(&c.indexes, "indexes", 20, "genstore -indexes")
	flag.IntVar(&c.garbage, "garbage", 2000, "genstore -garbage-chunks")
	flag.IntVar(&c.runs, "runs", 3, "runs per variant")
	flag.IntVar(&c.floorWorkers, "floor-workers", 0, "run the floor with this many workers in the rotation with the others (0: after them, with the best fixed one's)")
	flag.IntVar(&c.nofile, "nofile", 12288, "RLIMIT_NOFILE of the GC and the floor (prlimit), well below the harness's own; 0 leaves it")
	flag.IntVar(&c.runsSeq, "runs-seq", 1, "runs of the sequential GC (slow: requests x delay)")
	flag.BoolVar(&c.noSeq, "no-seq", false, "skip the sequential GC")
	flag.BoolVar(&c.noEmpty, "no-empty", false, "skip the empty-store run")
	flag.Parse()
	if c.dir == "" || c.mnt == "" {
		fmt.Fprintln(os.Stderr, "latency: -dir and -mnt are required")
		os.Exit(2)
	}
	for _, s := range strings.Split(*sweep, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "latency: -sweep %q: %v\n", *sweep, err)
			os.Exit(2)
		}
		c.sweep = append(c.sweep, n)
	}
	for _, s := range strings.Split(*delays, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintf(os.Stderr, "latency: -delays: %v\n", err)
			os.Exit(2)
		}
		if err := c.runDelay(d); err != nil {
			fmt.Fprintln(os.Stderr, "latency:", err)
			os.Exit(1)
		}
	}
}

func (c *config) runDelay(delay time.Duration) error {
	f, err := latfs.Mount(c.dir, c.mnt, latfs.Options{Delay: delay})
	if err != nil {
		return err
	}
	defer func() {
		if err := f.Unmount(); err != nil {
			fmt.Fprintln(os.Stderr, "latency:", err)
		}
	}()
	fmt.Printf("== delay %v per request (sleep %v after calibration) on %s\n", delay, f.Sleep(), c.dir)

	seq := &variant{name: "sequential", concurrency: 1, store: "store"}
	def := &variant{name: "default", concurrency: -1, store: "store"}
	vs := []*variant{def}
	var fixed []*variant
	for _, n := range c.sweep {
		v := &variant{name: fmt.Sprintf("fixed-%d", n), concurrency: n, store: "store"}
		fixed = append(fixed, v)
		vs = append(vs, v)
	}
	var floor *variant
	if c.floorWorkers > 0 {
		// Known beforehand: the floor joins the rotation, so that a
		// drift of the machine hits it as it hits the others.
		floor = &variant{name: fmt.Sprintf("floor-%d", c.floorWorkers), concurrency: c.floorWorkers, floor: true, store: "store"}
		vs = append(vs, floor)
	}
	if !c.noSeq {
		vs = append(vs, seq)
	}
	for r := range c.runs {
		for i := range vs {
			v := vs[(i+r)%len(vs)] // rotate so no variant always runs first
			if v == seq && len(v.runs) >= c.runsSeq {
				continue
			}
			if err := c.runOne(f, v); err != nil {
				return err
			}
		}
	}
	best := fixed[0]
	for _, v := range fixed {
		if med(v, wallOf) < med(best, wallOf) {
			best = v
		}
	}
	if floor == nil {
		floor = &variant{name: fmt.Sprintf("floor-%d", best.concurrency), concurrency: best.concurrency, floor: true, store: "store"}
		for range c.runs {
			if err := c.runOne(f, floor); err != nil {
				return err
			}
		}
	}
	var empty *variant
	if !c.noEmpty {
		empty = &variant{name: "default-empty", concurrency: -1, store: "empty"}
		if err := c.runOne(f, empty); err != nil {
			return err
		}
	}
	c.report(delay, seq, def, best, floor, empty, append(append([]*variant{seq, def}, fixed...), floor, empty))
	return nil
}

// restore rewrites the fixture on the backing disk: the same chunks, aged,
// and the same indexes.
func (c *config) restore(store string) error {
	args := []string{"-chunks", fmt.Sprint(c.chunks), "-indexes", fmt.Sprint(c.indexes),
		"-garbage-chunks", fmt.Sprint(c.garbage), "-size", "40"}
	if store == "empty" {
		args = []string{"-chunks", "0", "-indexes", "1"}
	}
	cmd := exec.Command(c.genstore, append(args, filepath.Join(c.dir, store))...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %w\n%s", cmd.Args, err, out)
	}
	return nil
}

func (c *config) runOne(f *latfs.FS, v *variant) error {
	if err := c.restore(v.store); err != nil {
		return err
	}
	store := filepath.Join(c.mnt, v.store)
	var args []string
	if v.floor {
		args = []string{c.floor, "-workers", fmt.Sprint(v.concurrency), store}
	} else {
		props := "gc-atime-safety-check=0"
		if v.concurrency > 0 {
			props += fmt.Sprintf(",gc-concurrency=%d", v.concurrency)
		}
		args = []string{c.bin, "gc", "--lock-dir", c.lockDir, "--log-level", "info", "--log-format", "json",
			"--output", "json", "--tuning", props, store}
	}
	if c.nofile > 0 {
		// The harness serves every dir the GC holds open with an fd of
		// its own, in this process: a GC that may cache as many fds as
		// this process has would exhaust the server (EMFILE), which no
		// NFS client does to its server.
		args = append([]string{"prlimit", fmt.Sprintf("--nofile=%d:%d", c.nofile, c.nofile), "--"}, args...)
	}
	var res result
	cmd := exec.Command(args[0], args[1:]...)
	var stdout strings.Builder
	cmd.Stdout = &stdout
	logs, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	var tail []string // the last log lines, for an error
	f.Reset()
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	seg := segSetup
	sc := bufio.NewScanner(logs)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if seg < numSegs-1 && strings.Contains(line, segMarkers[seg]) {
			res.ops[seg] = f.Reset()
			seg++
		}
		tail = append(tail, line)
		if len(tail) > 20 {
			tail = tail[1:]
		}
	}
	_, _ = io.Copy(io.Discard, logs)
	err = cmd.Wait()
	res.wall = time.Since(t0)
	res.ops[seg] = f.Reset()
	if err != nil {
		return fmt.Errorf("%s: %v: %w\n%s", v.name, args, err, strings.Join(tail, "\n"))
	}
	if v.floor {
		out := stdout.String()
		i := strings.LastIndex(out, "total=")
		secs, perr := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(out[max(i, 0)+6:]), "s"), 64)
		if i < 0 || perr != nil {
			return fmt.Errorf("%s printed no total=: %s", v.name, out)
		}
		res.wall = time.Duration(secs * float64(time.Second)) // its calls alone, not reading the indexes
		for _, kv := range strings.Fields(out) {
			k, val, _ := strings.Cut(kv, "=")
			if secs, err := strconv.ParseFloat(strings.TrimSuffix(val, "s"), 64); err == nil && (k == "mark" || k == "sweep") {
				d := time.Duration(secs * float64(time.Second))
				if k == "mark" {
					res.p1 = d
				} else {
					res.p2 = d
				}
			}
		}
	} else {
		var st gc.Status
		if err := json.Unmarshal([]byte(stdout.String()), &st); err != nil {
			return fmt.Errorf("%s: status: %w: %s", v.name, err, stdout.String())
		}
		res.p1 = time.Duration(st.DurationPhase1 * float64(time.Second))
		res.p2 = time.Duration(st.DurationPhase2 * float64(time.Second))
		res.removed = st.RemovedChunks
		if v.store == "store" && st.RemovedChunks != int64(c.garbage) {
			return fmt.Errorf("%s: removed %d chunks, want the %d garbage chunks", v.name, st.RemovedChunks, c.garbage)
		}
	}
	v.runs = append(v.runs, res)
	var total uint64
	for _, o := range res.ops {
		total += o.Total()
	}
	fmt.Printf("  %-14s %8.2fs  phase1 %7.2fs  phase2 %7.2fs  requests %7d\n", v.name, res.wall.Seconds(), res.p1.Seconds(), res.p2.Seconds(), total)
	return nil
}

func wallOf(r result) time.Duration { return r.wall }

func med(v *variant, f func(result) time.Duration) time.Duration {
	var ds []time.Duration
	for _, r := range v.runs {
		ds = append(ds, f(r))
	}
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func (c *config) report(delay time.Duration, seq, def, best, floor, empty *variant, all []*variant) {
	refs := float64(c.chunks - c.garbage)
	dirs := 65536.0
	fmt.Printf("\ndelay %v, %d referenced chunks in %d indexes, %d garbage, 65536 prefix dirs; runs %d (sequential %d); default concurrency %d\n",
		delay, c.chunks-c.garbage, c.indexes, c.garbage, c.runs, len(seq.runs), gc.DefaultConcurrency())
	fmt.Printf("%-14s %9s %9s %9s %10s %10s %10s %10s\n", "variant", "median", "phase1", "phase2", "requests", "/ref chunk", "/prefix", "between")
	for _, v := range all {
		if v == nil || len(v.runs) == 0 {
			continue
		}
		r := v.runs[len(v.runs)-1].ops // counts barely vary between runs: the last
		var total uint64
		for _, o := range r {
			total += o.Total()
		}
		perRef := float64(r[segMark].Total()) / refs
		perDir := float64(r[segSweep].Total()) / dirs
		between := float64(r[segCheck].Total()) / dirs
		if v.floor {
			perRef, perDir, between = 0, 0, 0 // one segment: see the breakdown
		}
		if v.store == "empty" {
			perRef = 0
		}
		fmt.Printf("%-14s %8.2fs %8.2fs %8.2fs %10d %10.2f %10.2f %10.2f\n", v.name,
			med(v, wallOf).Seconds(), med(v, func(r result) time.Duration { return r.p1 }).Seconds(),
			med(v, func(r result) time.Duration { return r.p2 }).Seconds(), total, perRef, perDir, between)
	}
	ratio := func(a, b *variant) string {
		if a == nil || b == nil || len(a.runs) == 0 || len(b.runs) == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", med(a, wallOf).Seconds()/med(b, wallOf).Seconds())
	}
	fmt.Printf("best fixed: %s\n", best.name)
	fmt.Printf("ratio sequential/default %s  (target >= 20 at 1ms, >= 6 at 200us)\n", ratio(seq, def))
	fmt.Printf("ratio default/floor      %s  (target <= 1.3 at 1ms; floor = %s)\n", ratio(def, floor), floor.name)
	fmt.Printf("ratio default/best       %s  (target <= 1.15)\n", ratio(def, best))
	fmt.Printf("ratio sequential/best    %s\n", ratio(seq, best))
	fmt.Println("requests per opcode and segment (last run):")
	for _, v := range []*variant{def, best, floor, empty} {
		if v == nil || len(v.runs) == 0 {
			continue
		}
		r := v.runs[len(v.runs)-1].ops
		for s, o := range r {
			if len(o) == 0 {
				continue
			}
			name := segNames[s]
			if v.floor {
				name = "all"
			}
			fmt.Printf("  %-14s %-8s %s\n", v.name, name, o)
		}
		if v.store == "empty" {
			fmt.Printf("  %-14s per empty prefix dir in phase 2: %s\n", v.name, perUnit(r[segSweep], dirs))
		} else if !v.floor {
			fmt.Printf("  %-14s per referenced chunk in phase 1: %s\n", v.name, perUnit(r[segMark], refs))
			fmt.Printf("  %-14s per prefix dir in phase 2:       %s\n", v.name, perUnit(r[segSweep], dirs))
		}
	}
	fmt.Println()
}

func perUnit(c latfs.Counts, n float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "total=%.3f", float64(c.Total())/n)
	for _, k := range c.Keys() {
		fmt.Fprintf(&b, " %s=%.3f", k, float64(c[k])/n)
	}
	return b.String()
}
