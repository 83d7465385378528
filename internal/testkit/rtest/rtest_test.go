package rtest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Fatalf and Skip instead of stopping
// the test; the embedded TB serves every other method.
type recorder struct {
	testing.TB
	fatal, skip string
	errors      []string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }

func (r *recorder) Skip(args ...any) { r.skip = fmt.Sprint(args...) }

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func TestOK(t *testing.T) {
	r := &recorder{TB: t}
	OK(r, nil)
	if r.fatal != "" {
		t.Fatalf("OK(nil) failed: %s", r.fatal)
	}
	OK(r, errors.New("boom"))
	if !strings.Contains(r.fatal, "boom") {
		t.Fatalf("OK(err) did not fail naming the error: %q", r.fatal)
	}
}

func TestEqual(t *testing.T) {
	r := &recorder{TB: t}
	Equal(r, "list", []string{"a", "b"}, []string{"a", "b"})
	if r.fatal != "" {
		t.Fatalf("Equal of equal slices failed: %s", r.fatal)
	}
	Equal(r, "count", 1, 2)
	if r.fatal != "count: want 1, got 2" {
		t.Fatalf("Equal(1, 2): got %q", r.fatal)
	}
}

func TestContains(t *testing.T) {
	r := &recorder{TB: t}
	Contains(r, "error", "open /a: no such file", "/a", "no such")
	if len(r.errors) != 0 {
		t.Fatalf("Contains of present strings failed: %q", r.errors)
	}
	Contains(r, "error", "open /a", "/a", "/b", "EIO")
	want := []string{`error "open /a" lacks "/b"`, `error "open /a" lacks "EIO"`}
	if fmt.Sprint(r.errors) != fmt.Sprint(want) {
		t.Fatalf("Contains with two missing: got %q, want %q", r.errors, want)
	}
}

func TestErrorIs(t *testing.T) {
	r := &recorder{TB: t}
	ErrorIs(r, &fs.PathError{Op: "open", Path: "p", Err: fs.ErrNotExist}, fs.ErrNotExist)
	if r.fatal != "" {
		t.Fatalf("ErrorIs of a wrapped match failed: %s", r.fatal)
	}
	ErrorIs(r, nil, fs.ErrNotExist)
	if r.fatal == "" {
		t.Fatal("ErrorIs(nil, target) did not fail")
	}
}

func TestSkipOrFail(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		SkipOrFail(r, "needs a thing")
		if ci == "" && (r.skip != "needs a thing" || r.fatal != "") {
			t.Errorf("outside CI: want a skip, got skip %q fatal %q", r.skip, r.fatal)
		}
		if ci != "" && (r.skip != "" || !strings.Contains(r.fatal, "needs a thing")) {
			t.Errorf("under CI: want a failure, got skip %q fatal %q", r.skip, r.fatal)
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
