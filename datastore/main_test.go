package datastore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// helperEnv makes the test binary a helper process (see helperMain) instead
// of running tests: the permission tests re-exec it as another user.
const helperEnv = "CHUNKGC_DATASTORE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain(os.Args[1:]))
	}
	code := m.Run()
	if code == 0 {
		if g := leakedGoroutines(); len(g) > 0 {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n\n%s\n", strings.Join(g, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines that tests of this
// package started and did not wait for. Goroutines that are just exiting get
// a few scheduler rounds to finish.
func leakedGoroutines() []string {
	var leaked []string
	for range 100 {
		leaked = leaked[:0]
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		for i, g := range strings.Split(string(buf[:n]), "\n\n") {
			if i > 0 && strings.Contains(g, "chunkgc/datastore.") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		runtime.Gosched()
	}
	return leaked
}

// helperMain runs one helper command and reports on stdout, one line per
// item; debug logs go to stderr as JSON.
//
//	walk BASE   WalkIndexFiles: "index REL" per file, then "ok" or
//	            "error [permission] MESSAGE"
func helperMain(args []string) int {
	if len(args) != 2 || args[0] != "walk" {
		fmt.Println("error bad helper command", args)
		return 2
	}
	log, err := zap.NewDevelopment() // debug level, to stderr
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	err = WalkIndexFiles(context.Background(), args[1], log, func(rel string) error {
		fmt.Println("index", rel)
		return nil
	})
	log.Sync()
	reportWalk(err)
	return 0
}

func reportWalk(err error) {
	switch {
	case err == nil:
		fmt.Println("ok")
	case isPermission(err):
		fmt.Println("error permission", err)
	default:
		fmt.Println("error", err)
	}
}

// walkResult is what one walk found.
type walkResult struct {
	rels []string
	err  string // "" for success
	perm bool   // the error was a permission error
	log  string // the walk's log output, when it ran in a helper process
}

// parseWalk reads a helper's walk report.
func parseWalk(out string) (walkResult, error) {
	var r walkResult
	for line := range strings.Lines(out) {
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "index "):
			r.rels = append(r.rels, strings.TrimPrefix(line, "index "))
		case line == "ok":
			return r, nil
		case strings.HasPrefix(line, "error permission "):
			r.err, r.perm = strings.TrimPrefix(line, "error permission "), true
			return r, nil
		case strings.HasPrefix(line, "error "):
			r.err = strings.TrimPrefix(line, "error ")
			return r, nil
		}
	}
	return r, errors.New("helper output ends without a result:\n" + out)
}
