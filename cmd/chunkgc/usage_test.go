package main

import (
	"encoding/json"
	"testing"

	"chunkgc/usage"
)

// TestUsageCLI: "chunkgc usage" reports the referenced chunks of every
// group (text and JSON), per snapshot with --snapshots, what forgetting a
// snapshot would free, and refuses an unknown snapshot and a zero budget.
func TestUsageCLI(t *testing.T) {
	s := ext4Store(t, 256<<20, 1200, 10) // three groups of 500, 500, 200
	c := newCLI(t)
	wantCode(t, c.run("usage", s.base), exitOK, "GROUP", "vm/100", "vm/102", "Total: 3 snapshots, 1200 chunks referenced")

	r := c.run("usage", "--snapshots", "--output", "json", "--what-if-forget", "vm/102/2025-01-01T00:00:00Z", s.base)
	wantCode(t, r, exitOK)
	var rep usage.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("usage --output json: %v: %s", err, r.stdout)
	}
	if len(rep.Groups) != 3 || len(rep.Snapshots) != 3 || rep.Total.Chunks != 1200 {
		t.Fatalf("groups %d, snapshots %d, chunks %d; want 3, 3, 1200", len(rep.Groups), len(rep.Snapshots), rep.Total.Chunks)
	}
	for _, g := range rep.Groups {
		if g.SharedChunks != 0 || g.ExclusiveChunks != g.Chunks {
			t.Errorf("group %s: %d exclusive, %d shared of %d chunks; nothing is shared", g.Name, g.ExclusiveChunks, g.SharedChunks, g.Chunks)
		}
	}
	if rep.WhatIf == nil || rep.WhatIf.FreedChunks != 200 {
		t.Fatalf("what-if: %+v, want 200 chunks freed", rep.WhatIf)
	}
	wantCode(t, c.run("usage", "--what-if-forget", "vm/999/2025-01-01T00:00:00Z", s.base), exitError, "vm/999", "no such snapshot")
	wantCode(t, c.run("usage", "--memory", "0", s.base), exitUsage, "--memory")
	wantCode(t, c.run("usage", "--what-if-keep-last", "1", s.base), exitOK, "Forgetting 0 snapshots would let GC free 0 B")
}
