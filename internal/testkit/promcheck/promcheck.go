// Package promcheck runs promtool, the Prometheus project's checker (Debian
// package prometheus, installed by .ci/run), on metrics textfiles in tests:
// it checks the exposition format and the naming conventions.
//
// It is test support: no production package may import it (enforced by
// internal/testkit/projecttest).
package promcheck

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

// Promtool returns the path of promtool, or skips t outside CI and fails it
// under CI when it is not installed.
func Promtool(t testing.TB) string {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		rtest.SkipOrFail(t, "promtool not installed (Debian package prometheus; .ci/run installs it)")
	}
	return promtool
}

// Check runs `promtool check metrics` on the textfile at path and fails t,
// naming the file and showing what promtool said and the file, when
// promtool exits non-zero or prints anything (a lint warning).
func Check(t testing.TB, promtool, path string) {
	t.Helper()
	f, err := os.Open(path)
	rtest.OK(t, err)
	defer f.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = f
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		b, _ := os.ReadFile(path)
		t.Errorf("promtool check metrics %s: %v\n%s\nfile:\n%s", path, err, out, b)
	}
}
