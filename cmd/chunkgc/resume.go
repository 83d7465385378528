package main

import (
	"os"
	"time"
)

// checkpointIntervalEnv shortens how often gc writes its checkpoint, for
// tests that kill the binary at random points (a Go duration, e.g.
// "50ms"); unset means the default (5 s).
const checkpointIntervalEnv = "CHUNKGC_CHECKPOINT_INTERVAL"

// checkpointInterval reads checkpointIntervalEnv.
func checkpointInterval() (time.Duration, error) {
	v := os.Getenv(checkpointIntervalEnv)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, usagef("%s=%q: want a positive duration such as 50ms", checkpointIntervalEnv, v)
	}
	return d, nil
}
