package main

import (
	"testing"

	"chunkgc/internal/testkit/atimefuse"
)

func fuseMount(t *testing.T) string { return atimefuse.Mount(t, t.TempDir()) }
