// Command chunkgc collects garbage in PBS-style chunk datastores.
//
// README.md ("Command line") and the usage text in cli.go are the command
// line contract: commands, flags, output and exit codes.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"
)

// exitGrace is how long chunkgc waits, after SIGINT or SIGTERM, for the
// running command to unwind (release its locks, close its files) before it
// exits anyway: a call into a hung network or FUSE filesystem does not
// return when the context is cancelled, and systemd's stop must not wait
// for it. Exiting is safe at any point: every removal is a single unlink
// that has either happened or not, and the kernel drops every lock.
const exitGrace = 1500 * time.Millisecond

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	go func() {
		<-ctx.Done()
		time.Sleep(exitGrace)
		code := exitInterrupted
		if sigTerm(ctx) {
			code = 128 + int(unix.SIGTERM)
		}
		fmt.Fprintf(os.Stderr, "chunkgc: interrupted (%v), and a system call did not return within %v; exiting with %d\n",
			context.Cause(ctx), exitGrace, code)
		os.Exit(code)
	}()
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
