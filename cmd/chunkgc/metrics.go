package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"time"

	"go.uber.org/zap"

	"chunkgc/gc"
	"chunkgc/metrics"
)

// metricsDirFlag registers --metrics-dir on fset; its default is
// $CHUNKGC_METRICS_DIR, which the systemd unit sets with Environment=.
func metricsDirFlag(fset *flag.FlagSet) *string {
	return fset.String("metrics-dir", os.Getenv(metrics.EnvDir),
		"directory of node_exporter's textfile collector: write chunkgc_<store>.prom there at the end of every run (env "+metrics.EnvDir+"; empty: none)")
}

// gcMetrics writes the metrics textfile for the gc command's run in dir,
// whatever its end (README "Metrics"), and returns runErr joined with the
// write's error: a run that worked but could not write its metrics exits
// 1, and a failed one keeps its exit code. Nothing is written without a
// dir, for a dry run, or when the command line or the STORE argument was
// wrong (there is no store to name the file after; runErr says why).
// start is when the command began, st and runErr what gc.Run returned.
func (e *env) gcMetrics(ctx context.Context, fset *flag.FlagSet, dir string, dryRun bool, start time.Time, st *gc.Status, runErr error) error {
	if dir == "" || dryRun || e.log == nil || fset.NArg() != 1 || errors.Is(runErr, flag.ErrHelp) {
		return runErr
	}
	if _, ok := errors.AsType[*usageError](runErr); ok {
		return runErr
	}
	ref, err := e.resolveStore(fset.Arg(0))
	if err != nil {
		return runErr
	}
	log := e.log.With(zap.String("store", ref.name), zap.String("metrics-dir", dir))
	end := time.Now()
	res := metrics.Classify(ctx, runErr)
	in := metrics.Input{Store: ref.name, Run: &metrics.Run{Result: res, Err: runErr, Status: st, Start: start, End: end}}
	if res == metrics.ResultOK {
		// The run's end is when it wrote .gc-status, as a later run reads it.
		in.Status, in.StatusTime = st, end
		if at, err := metrics.StatusTime(ref.base); err == nil {
			in.StatusTime = at
		}
	} else {
		// The figures of the last successful run stay, with their age.
		last, at, err := metrics.ReadStatus(ref.base)
		switch {
		case err == nil:
			in.Status, in.StatusTime = last, at
		case !errors.Is(err, fs.ErrNotExist):
			log.Warn("last gc status unreadable: the metrics show no figures", zap.Error(err))
		}
	}
	prev, err := metrics.ReadPrevious(dir, ref.name)
	if err != nil {
		log.Warn("previous metrics textfile unreadable: the last failure time and the run counters start anew", zap.Error(err))
	}
	in.Previous = prev
	path, err := metrics.WriteTextfile(dir, ref.name, metrics.Build(in))
	if err != nil {
		return errors.Join(runErr, err)
	}
	log.Info("metrics written", zap.String("path", path), zap.String("result", string(res)))
	return runErr
}

// runMetrics prints the last GC result of STORE (.gc-status) as Prometheus
// metrics, with the last run's from the textfile in --metrics-dir when
// there is one: what the textfile shows, had no GC run since.
func runMetrics(ctx context.Context, e *env, args []string) error {
	fset := e.flags("metrics")
	dir := metricsDirFlag(fset)
	ref, err := e.storeArg(fset, args, nil)
	if err != nil {
		return err
	}
	st, at, statusErr := metrics.ReadStatus(ref.base)
	if statusErr != nil && !errors.Is(statusErr, fs.ErrNotExist) {
		return fmt.Errorf("datastore %s: %w", ref.name, statusErr)
	}
	var prev *metrics.Previous
	if *dir != "" {
		if prev, err = metrics.ReadPrevious(*dir, ref.name); err != nil {
			return fmt.Errorf("datastore %s: %w", ref.name, err)
		}
	}
	if st == nil && prev == nil {
		return fmt.Errorf("datastore %s: %w", ref.name, statusErr)
	}
	return metrics.WriteText(e.stdout, metrics.Current(ref.name, st, at, prev))
}
