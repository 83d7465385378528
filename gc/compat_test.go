package gc

import (
	"testing"

	"chunkgc/internal/testkit/rtest"
)

// ok and equal remain only for hardening_test.go, which is being moved to
// rtest in a parallel change; delete this file once nothing calls them.

func ok(t *testing.T, err error) {
	t.Helper()
	rtest.OK(t, err)
}

func equal[T comparable](t *testing.T, what string, want, got T) {
	t.Helper()
	rtest.Equal(t, what, want, got)
}
