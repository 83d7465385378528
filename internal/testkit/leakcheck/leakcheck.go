// Package leakcheck finds goroutines a package's tests started and did not
// wait for (STYLE §5: every goroutine has an owner that waits for it).
//
// # Use
//
// In TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m, "chunkgc/gc.")) }
//
// A goroutine leaks when its stack mentions one of the given substrings once
// all tests passed; goroutines that are just exiting get scheduler rounds to
// finish. It needs no third-party module (goleak is not in the budget).
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Run runs the tests and, if they passed, fails the run when a goroutine
// whose stack mentions any of match is still alive.
func Run(m *testing.M, match ...string) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	if g := Leaked(match...); len(g) > 0 {
		fmt.Fprintf(os.Stderr, "leaked goroutines:\n\n%s\n", strings.Join(g, "\n\n"))
		return 1
	}
	return 0
}

// Runner is [Run] with match bound, for rtest.Main's run argument.
func Runner(match ...string) func(*testing.M) int {
	return func(m *testing.M) int { return Run(m, match...) }
}

// Leaked returns the stacks of live goroutines (other than the caller's)
// that mention any of match, after giving exiting ones time to finish.
func Leaked(match ...string) []string {
	var leaked []string
	for i := range 100 {
		leaked = leaked[:0]
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		for i, g := range strings.Split(string(buf[:n]), "\n\n") {
			if i == 0 {
				continue // the caller
			}
			for _, m := range match {
				if strings.Contains(g, m) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		runtime.Gosched()
		time.Sleep(time.Duration(i) * 100 * time.Microsecond) // up to ~0.5 s in all
	}
	return leaked
}
