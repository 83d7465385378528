// Command latfs mounts the latency harness (package chunkgc/bench/latfs)
// over a backing directory until SIGINT or SIGTERM: every FUSE request is
// delayed by -delay and counted per opcode. SIGUSR1 writes the counts since
// the previous SIGUSR1 (or the mount) as one JSON object to -stats-file
// (atomically, by rename; stdout when empty) and zeroes them, so a script
// brackets a run with two signals. The final counts are written on exit.
//
//	latfs -delay 1ms -stats-file /tmp/ops.json /mnt/disk/store /mnt/lat &
//	kill -USR1 $!; chunkgc gc /mnt/lat; kill -USR1 $!; cat /tmp/ops.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"chunkgc/bench/latfs"
)

func main() {
	delay := flag.Duration("delay", 200*time.Microsecond, "delay added to every FUSE request")
	noCal := flag.Bool("no-calibrate", false, "sleep exactly -delay (default: minus the measured sleep overshoot)")
	locks := flag.Bool("locks", false, "forward flock/fcntl locks to the server (counted as SETLK...)")
	statsFile := flag.String("stats-file", "", "where SIGUSR1 and exit write the counts as JSON (default stdout)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: latfs [-delay D] [-stats-file F] BACKING MOUNTPOINT")
		os.Exit(2)
	}
	f, err := latfs.Mount(flag.Arg(0), flag.Arg(1), latfs.Options{Delay: *delay, NoCalibrate: *noCal, EnableLocks: *locks})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "latfs: %s on %s, delay %v (sleep %v)\n", flag.Arg(0), flag.Arg(1), *delay, f.Sleep())
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	for s := range sig {
		if err := write(*statsFile, f.Reset()); err != nil {
			fmt.Fprintln(os.Stderr, "latfs:", err)
		}
		if s != syscall.SIGUSR1 {
			break
		}
	}
	if err := f.Unmount(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func write(path string, c latfs.Counts) error {
	b, err := json.Marshal(struct {
		Total  uint64       `json:"total"`
		Counts latfs.Counts `json:"counts"`
	}{c.Total(), c})
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
