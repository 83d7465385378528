package datastore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/zap"

	"chunkgc/internal/testkit/leakcheck"
	"chunkgc/internal/testkit/rtest"
)

// TestMain runs the tests, or a helper process (see asBackup): the
// permission tests re-exec the test binary as the backup user.
func TestMain(m *testing.M) {
	rtest.Main(m, rtest.Helpers{"walk": walkHelper, "list-groups": listGroupsHelper}, leakcheck.Runner("chunkgc/datastore."))
}

// walkHelper runs WalkIndexFiles on the store at args[0] and reports on
// stdout: "index REL" per file, then "ok" or "error [permission] MESSAGE";
// debug logs go to stderr.
func walkHelper(args []string) int {
	if len(args) != 1 {
		fmt.Println("error want BASE, got", args)
		return 2
	}
	log, err := zap.NewDevelopment() // debug level, to stderr
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	err = WalkIndexFiles(context.Background(), args[0], log, func(rel string) error {
		fmt.Println("index", rel)
		return nil
	})
	log.Sync()
	report(err)
	return 0
}

// listGroupsHelper runs ListGroups of the root namespace on the store at
// args[0] and reports as walkHelper does, one "index GROUP" per group.
func listGroupsHelper(args []string) int {
	if len(args) != 1 {
		fmt.Println("error want BASE, got", args)
		return 2
	}
	groups, err := ListGroups(args[0], nil)
	for _, g := range groups {
		fmt.Println("index", g.RelPath())
	}
	report(err)
	return 0
}

// report prints a helper's result line.
func report(err error) {
	switch {
	case err == nil:
		fmt.Println("ok")
	case isPermission(err):
		fmt.Println("error permission", err)
	default:
		fmt.Println("error", err)
	}
}

// walkResult is what one helper run found.
type walkResult struct {
	rels []string
	err  string // "" for success
	perm bool   // the error was a permission error
	log  string // the helper's log output, when it ran in a helper process
}

// parseWalk reads a helper's report.
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
