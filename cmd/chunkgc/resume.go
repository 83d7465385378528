package main

import (
	"os"
	"time"
)

// checkpointIntervalEnv shortens how often gc writes its checkpoint, for
// tests that kill the binary at random points (a Go duration, e.g.
// "50ms"); unset means the default (5 s).
const checkpointIntervalEnv = "CHUNKGC_CHECKPOINT_INTERVAL"

// recheckSlackEnv replaces the 300 s by which a resumed run backdates the
// interrupted start when it looks for snapshots changed since (a Go
// duration; negative: none), for tests whose stores are seconds old.
const recheckSlackEnv = "CHUNKGC_RECHECK_SLACK"

// resumeEnv reads checkpointIntervalEnv and recheckSlackEnv.
func resumeEnv() (interval, slack time.Duration, err error) {
	if v := os.Getenv(checkpointIntervalEnv); v != "" {
		interval, err = time.ParseDuration(v)
		if err != nil || interval <= 0 {
			return 0, 0, usagef("%s=%q: want a positive duration such as 50ms", checkpointIntervalEnv, v)
		}
	}
	if v := os.Getenv(recheckSlackEnv); v != "" {
		slack, err = time.ParseDuration(v)
		if err != nil {
			return 0, 0, usagef("%s=%q: want a duration such as -1s", recheckSlackEnv, v)
		}
	}
	return interval, slack, nil
}
