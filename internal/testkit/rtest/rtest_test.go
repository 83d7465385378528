package rtest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOK(t *testing.T) {
	r := &Recorder{TB: t}
	OK(r, nil)
	if r.FatalText != "" {
		t.Fatalf("OK(nil) failed: %s", r.FatalText)
	}
	OK(r, errors.New("boom"))
	if !strings.Contains(r.FatalText, "boom") {
		t.Fatalf("OK(err) did not fail naming the error: %q", r.FatalText)
	}
}

func TestEqual(t *testing.T) {
	r := &Recorder{TB: t}
	Equal(r, "list", []string{"a", "b"}, []string{"a", "b"})
	if r.FatalText != "" {
		t.Fatalf("Equal of equal slices failed: %s", r.FatalText)
	}
	Equal(r, "count", 1, 2)
	if r.FatalText != "count: want 1, got 2" {
		t.Fatalf("Equal(1, 2): got %q", r.FatalText)
	}
}

func TestContains(t *testing.T) {
	r := &Recorder{TB: t}
	Contains(r, "error", "open /a: no such file", "/a", "no such")
	if len(r.ErrorTexts) != 0 {
		t.Fatalf("Contains of present strings failed: %q", r.ErrorTexts)
	}
	Contains(r, "error", "open /a", "/a", "/b", "EIO")
	want := []string{`error "open /a" lacks "/b"`, `error "open /a" lacks "EIO"`}
	if fmt.Sprint(r.ErrorTexts) != fmt.Sprint(want) {
		t.Fatalf("Contains with two missing: got %q, want %q", r.ErrorTexts, want)
	}
}

func TestErrorIs(t *testing.T) {
	r := &Recorder{TB: t}
	ErrorIs(r, &fs.PathError{Op: "open", Path: "p", Err: fs.ErrNotExist}, fs.ErrNotExist)
	if r.FatalText != "" {
		t.Fatalf("ErrorIs of a wrapped match failed: %s", r.FatalText)
	}
	ErrorIs(r, nil, fs.ErrNotExist)
	if r.FatalText == "" {
		t.Fatal("ErrorIs(nil, target) did not fail")
	}
}

func TestSkipOrFail(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &Recorder{TB: t}
		SkipOrFail(r, "needs a thing")
		if ci == "" && (r.SkipText != "needs a thing" || r.FatalText != "") {
			t.Errorf("outside CI: want a skip, got skip %q fatal %q", r.SkipText, r.FatalText)
		}
		if ci != "" && (r.SkipText != "" || !strings.Contains(r.FatalText, "needs a thing")) {
			t.Errorf("under CI: want a failure, got skip %q fatal %q", r.SkipText, r.FatalText)
		}
	}
}

func TestMain(m *testing.M) {
	Main(m, Helpers{"echo": func(args []string) int {
		fmt.Println(strings.Join(args, " "))
		return 3
	}}, (*testing.M).Run)
}

// TestHelper re-executes this test binary as the "echo" helper: it must run
// the helper's function, not the tests, and exit with its code.
func TestHelper(t *testing.T) {
	cmd := Helper("echo", "hello", "helper")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var exit interface{ ExitCode() int }
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("helper: want exit code 3, got %v", err)
	}
	Equal(t, "helper output", "hello helper\n", string(out))
}

func TestDirNames(t *testing.T) {
	dir := t.TempDir()
	Equal(t, "empty dir", []string(nil), DirNames(t, dir))
	for _, n := range []string{"b", "a", "c"} {
		OK(t, os.WriteFile(filepath.Join(dir, n), nil, 0o600))
	}
	Equal(t, "sorted names", []string{"a", "b", "c"}, DirNames(t, dir))
	r := &Recorder{TB: t}
	DirNames(r, filepath.Join(dir, "missing"))
	if !strings.Contains(r.FatalText, "missing") {
		t.Errorf("DirNames of a missing dir: fatal %q, want it to name the dir", r.FatalText)
	}
}
