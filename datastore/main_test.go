package datastore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"go.uber.org/zap"

	"chunkgc/internal/testkit/leakcheck"
)

// helperEnv makes the test binary a helper process (see helperMain) instead
// of running tests: the permission tests re-exec it as another user.
const helperEnv = "CHUNKGC_DATASTORE_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperMain(os.Args[1:]))
	}
	os.Exit(leakcheck.Run(m, "chunkgc/datastore."))
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
