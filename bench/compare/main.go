// Command compare times the syscall floor (with N workers and with one), a strictly sequential GC
// (gc-concurrency=1, what PBS does) and the parallel GC on one store, in
// alternation, and prints medians and ratios. Every variant runs as its own
// process so wall time and peak RSS are measured the same way for all.
//
//	go run ./bench/compare -store /mnt/bench/store -bin /tmp/chunkgc -floor /tmp/floor -runs 5 [-cold]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chunkgc/gc"
)

type variant struct {
	name string
	args []string
	wall []time.Duration
	rss  []int64 // KiB
}

func main() {
	store := flag.String("store", "", "store to collect (no garbage, so every run does the same work)")
	bin := flag.String("bin", "chunkgc", "chunkgc binary")
	floor := flag.String("floor", "floor", "floor binary")
	runs := flag.Int("runs", 5, "runs per variant")
	workers := flag.Int("workers", 0, "parallel workers for floor and parallel GC (0 = chunkgc's default)")
	cold := flag.Bool("cold", false, "drop the page cache before every run (root)")
	lockDir := flag.String("lock-dir", os.TempDir(), "chunkgc --lock-dir")
	fixed := flag.String("fixed", "16,32", "more fixed gc-concurrency settings to time beside -workers; the best of them and parallel is what adaptive is held to")
	flag.Parse()
	if *store == "" {
		fmt.Fprintln(os.Stderr, "compare: -store is required")
		os.Exit(2)
	}
	w := *workers
	if w == 0 {
		w = gc.DefaultConcurrency() // what chunkgc picks when gc-concurrency is 0
	}
	gcArgs := func(concurrency int) []string {
		return []string{*bin, "gc", "--lock-dir", *lockDir, "--log-level", "warn",
			"--tuning", fmt.Sprintf("gc-atime-safety-check=0,gc-concurrency=%d", concurrency), *store}
	}
	vs := []*variant{
		{name: "floor", args: []string{*floor, "-workers", fmt.Sprint(w), *store}},
		{name: "sequential", args: gcArgs(1)},
		{name: "parallel", args: gcArgs(w)},
		{name: "floor-1", args: []string{*floor, "-workers", "1", *store}},
		{name: "adaptive", args: gcArgs(0)},
	}
	for _, f := range strings.Split(*fixed, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "compare: -fixed: %q is not a worker count\n", f)
			os.Exit(2)
		}
		vs = append(vs, &variant{name: "fixed-" + f, args: gcArgs(n)})
	}
	for r := range *runs {
		for i := range vs {
			v := vs[(i+r)%len(vs)] // rotate the order so no variant always runs first
			if *cold {
				if err := dropCaches(); err != nil {
					fmt.Fprintln(os.Stderr, "compare:", err)
					os.Exit(1)
				}
			}
			wall, rss, err := measure(v.args, strings.HasPrefix(v.name, "floor"))
			if err != nil {
				fmt.Fprintf(os.Stderr, "compare: %s: %v\n", v.name, err)
				os.Exit(1)
			}
			v.wall = append(v.wall, wall)
			v.rss = append(v.rss, rss)
			fmt.Printf("run %d %-10s %8.3fs  maxrss %6d KiB\n", r, v.name, wall.Seconds(), rss)
		}
	}
	med := func(v *variant) float64 { return median(v.wall).Seconds() }
	mode := "warm"
	if *cold {
		mode = "cold"
	}
	fmt.Printf("\n%s cache, %d runs, workers %d, store %s\n", mode, *runs, w, *store)
	for _, v := range vs {
		fmt.Printf("median %-10s %8.3fs  peak rss %6d KiB\n", v.name, med(v), slices.Max(v.rss))
	}
	fmt.Printf("ratio parallel/floor      %.2f  (target <= 1.25)\n", med(vs[2])/med(vs[0]))
	fmt.Printf("ratio sequential/parallel %.2f  (target >= 1.8 warm, >= 2 cold)\n", med(vs[1])/med(vs[2]))
	fmt.Printf("ceiling floor-1/floor     %.2f  (what the kernel allows: the same syscalls, 1 vs %d workers)\n", med(vs[3])/med(vs[0]), w)
	best := vs[2]
	for _, v := range vs[5:] {
		if med(v) < med(best) {
			best = v
		}
	}
	fmt.Printf("ratio adaptive/floor      %.2f  (target <= 1.25: the default, gc-concurrency=0)\n", med(vs[4])/med(vs[0]))
	fmt.Printf("ratio adaptive/best-fixed %.2f  (target <= 1.15; best fixed is %s)\n", med(vs[4])/med(best), best.name)
}

// measure runs args and returns its wall time and peak RSS. For the floor
// (selfTimed) the time is the one it prints for its syscalls alone
// ("total=Xs"), not counting how it read the digests beforehand.
func measure(args []string, selfTimed bool) (time.Duration, int64, error) {
	cmd := exec.Command(args[0], args[1:]...)
	var stderr, stdout strings.Builder
	cmd.Stderr = &stderr
	cmd.Stdout = &stdout
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %v\n%s", args, err, stderr.String())
	}
	if selfTimed {
		i := strings.LastIndex(stdout.String(), "total=")
		if i < 0 {
			return 0, 0, fmt.Errorf("%v printed no total=: %s", args, stdout.String())
		}
		secs, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(stdout.String()[i+6:]), "s"), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%v: %w", args, err)
		}
		wall = time.Duration(secs * float64(time.Second))
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var rss int64
	if ru != nil {
		rss = ru.Maxrss
	}
	return wall, rss, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}
