package rtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	Main(m, Helpers{"echo-args": func(args []string) int {
		os.Stdout.WriteString(strings.Join(args, " "))
		return 3
	}}, (*testing.M).Run)
}

// fakeTB records Skip and Fatal instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Skip(...any)                    { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any)          { f.failed = true }
func (f *fakeTB) Logf(format string, a ...any)   {}
func (f *fakeTB) Errorf(format string, a ...any) { f.failed = true }

func TestSkipOrFail(t *testing.T) {
	tests := []struct {
		name        string
		give        string // CI
		wantSkipped bool
		wantFailed  bool
	}{
		{"outside CI", "", true, false},
		{"under CI", "true", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.give)
			f := &fakeTB{TB: t}
			SkipOrFail(f, "needs something")
			if f.skipped != tt.wantSkipped || f.failed != tt.wantFailed {
				t.Fatalf("skipped %v failed %v, want %v %v", f.skipped, f.failed, tt.wantSkipped, tt.wantFailed)
			}
		})
	}
}

// TestHelper: a helper process runs the named helper with the arguments and
// exits with its code.
func TestHelper(t *testing.T) {
	out, err := Helper("echo-args", "a", "b").Output()
	ee, isExit := err.(*exec.ExitError)
	if !isExit || ee.ExitCode() != 3 {
		t.Fatalf("helper: want exit 3, got %v", err)
	}
	Equal(t, "helper output", "a b", string(out))
}

func TestEqual(t *testing.T) {
	f := &fakeTB{TB: t}
	Equal(f, "same", []int{1, 2}, []int{1, 2})
	Equal(f, "none", error(nil), nil)
	if f.failed {
		t.Fatal("Equal failed on equal values")
	}
	Equal(f, "differ", 1, 2)
	if !f.failed {
		t.Fatal("Equal passed different values")
	}
}
