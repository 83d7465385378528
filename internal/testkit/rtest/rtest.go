// Package rtest is the small assertion and environment kit every chunkgc test
// uses, in the manner of restic's internal/test: [OK] and [Equal] for the
// common checks, [SkipOrFail] for "a missing capability skips outside CI and
// fails inside it", and [Helper] for tests that re-execute their own binary
// as a helper process (as another user, or to hold a lock in another process).
//
// It is test support: no production package may import it (enforced by
// internal/testkit/projecttest).
package rtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// OK fails t at once when err is not nil.
func OK(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// Equal fails t at once when got is not want (reflect.DeepEqual), naming
// what was compared.
func Equal[T any](t testing.TB, what string, want, got T) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("%s: want %v, got %v", what, want, got)
	}
}

// Contains marks t failed (and goes on) for each of wants that s lacks,
// naming what s is and quoting it.
func Contains(t testing.TB, what, s string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(s, want) {
			t.Errorf("%s %q lacks %q", what, s, want)
		}
	}
}

// ErrorIs fails t at once unless errors.Is(err, target).
func ErrorIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("want an error matching %v, got %v", target, err)
	}
}

// ErrorAs fails t at once unless err matches the sentinel target with
// errors.Is and holds an E (errors.AsType); it returns that E.
func ErrorAs[E error](t testing.TB, err, target error) E {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("want an error matching %v, got %v", target, err)
	}
	e, ok := errors.AsType[E](err)
	if !ok {
		t.Fatalf("want an error holding a %T, got %T: %v", e, err, err)
	}
	return e
}

// ErrorAt fails t, and carries on, unless err matches every one of targets
// and names path (as "path:", the way an *fs.PathError does); what names
// the call that returned err.
func ErrorAt(t testing.TB, what string, err error, path string, targets ...error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want an error naming %s", what, path)
		return
	}
	for _, target := range targets {
		if !errors.Is(err, target) {
			t.Errorf("%s: want an error matching %v, got %v", what, target, err)
		}
	}
	if !strings.Contains(err.Error(), path+":") {
		t.Errorf("%s: error %q does not name %s", what, err, path)
	}
}

// DirFD opens dir as a directory fd for *at calls (O_RDONLY|O_DIRECTORY|
// O_CLOEXEC), closed when the test ends.
func DirFD(t testing.TB, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	OK(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// DirNames returns the names in dir as [os.ReadDir] sorts them, nil for an
// empty dir; it fails t at once when dir cannot be read.
func DirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	OK(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Recorder is a [testing.TB] that records Fatalf, Errorf and Skip instead
// of acting on them, for the tests of test helpers; the embedded TB serves
// every other method. After a recorded Fatalf or Skip the helper goes on.
type Recorder struct {
	testing.TB
	FatalText  string   // the last Fatalf's message
	SkipText   string   // the last Skip's message
	ErrorTexts []string // every Errorf's message
}

func (r *Recorder) Helper() {}

func (r *Recorder) Fatalf(format string, args ...any) { r.FatalText = fmt.Sprintf(format, args...) }

func (r *Recorder) Skip(args ...any) { r.SkipText = fmt.Sprint(args...) }

func (r *Recorder) Errorf(format string, args ...any) {
	r.ErrorTexts = append(r.ErrorTexts, fmt.Sprintf(format, args...))
}

// InCI reports whether the tests run under CI (the environment variable CI
// is set): there a missing capability is a failure, not a skip.
func InCI() bool { return os.Getenv("CI") != "" }

// SkipOrFail skips t with reason outside CI and fails it under CI.
func SkipOrFail(t testing.TB, reason string) {
	t.Helper()
	if !InCI() {
		t.Skip(reason)
		return
	}
	t.Fatalf("%s (a missing capability is a failure under CI)", reason)
}

// SkipOrFailf is SkipOrFail with a format.
func SkipOrFailf(t testing.TB, format string, args ...any) {
	t.Helper()
	SkipOrFail(t, fmt.Sprintf(format, args...))
}

// RequireRoot skips t (fails it under CI) unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(t, "needs root")
	}
}

// helperEnv names the helper a re-executed test binary runs (see Helper).
const helperEnv = "CHUNKGC_TEST_HELPER"

// Helpers maps a helper name to its main: it gets the arguments after the
// name and returns the exit code.
type Helpers map[string]func(args []string) int

// Main is the TestMain of a package with helper processes: run as a helper
// (see [Helper]) it runs that helper and exits with its code; otherwise it
// runs the tests with run (leakcheck.Run, or m.Run).
func Main(m *testing.M, helpers Helpers, run func(*testing.M) int) {
	if name := os.Getenv(helperEnv); name != "" {
		fn, found := helpers[name]
		if !found {
			os.Stderr.WriteString("rtest: unknown helper " + name + "\n")
			os.Exit(2)
		}
		os.Exit(fn(os.Args[1:]))
	}
	os.Exit(run(m))
}

// Helper returns a command that re-executes the test binary as helper name
// with args (see [Main]). Its environment is the test's plus the helper's
// name, and GORACE told not to sleep 1 s at exit under -race.
func Helper(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), helperEnv+"="+name, "GORACE="+gorace)
	return cmd
}
