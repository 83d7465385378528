package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// TestWritersForgetAndGCStress: several real processes back up into, forget
// from and collect the same two groups for a bounded time. Afterwards every
// snapshot that was created and not forgotten exists, every forgotten one is
// gone, every referenced chunk exists, and no lock is left that blocks a
// final ingest, forget and GC.
func TestWritersForgetAndGCStress(t *testing.T) {
	d := 8 * time.Second
	if os.Getenv("CHUNKGC_LONG") != "" {
		d = 3 * time.Minute
	}
	mnt := testfs.Loop(t, "ext4", "", 1<<30)
	c := newCLI(t)
	base := filepath.Join(mnt, "s")
	wantCode(t, c.run("create", "--tuning", "gc-atime-safety-check=0", "stress", base), exitOK)
	src := t.TempDir()
	files := make([]string, 4)
	for i := range files {
		files[i] = filepath.Join(src, fmt.Sprintf("f%d", i))
		data := make([]byte, 20*64<<10)
		for j := range data {
			data[j] = byte(j/64 + i*(j%3))
		}
		if err := os.WriteFile(files[i], data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var (
		mu        sync.Mutex
		created   = map[string]bool{} // rel path -> still expected
		forgotten = map[string]bool{}
		queue     []string
	)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 3 { // writers
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				group := []string{"vm/700", "ct/701"}[(w+i)%2]
				cmd := c.cmd("ingest", "--chunk-size", "65536", "stress", group, files[(w+i)%len(files)])
				out, err := cmd.Output()
				if err != nil {
					if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == exitBusy {
						continue // group locked by another writer or a forget
					}
					t.Errorf("ingest: %v %s", err, out)
					return
				}
				rel, _ := filepath.Rel(base, strings.TrimSpace(string(out)))
				mu.Lock()
				created[rel] = true
				queue = append(queue, rel)
				mu.Unlock()
			}
		})
	}
	wg.Go(func() { // forgetter: removes the oldest known snapshot, again and again
		for time.Now().Before(deadline) {
			mu.Lock()
			var rel string
			if len(queue) > 2 {
				rel, queue = queue[0], queue[1:]
			}
			mu.Unlock()
			if rel == "" {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			r := c.run("forget", "stress", rel)
			mu.Lock()
			switch r.code {
			case exitOK:
				forgotten[rel] = true
				delete(created, rel)
			case exitBusy:
				queue = append(queue, rel) // locked right now: try later
			default:
				t.Errorf("forget %s: %d %s", rel, r.code, r.stderr)
			}
			mu.Unlock()
		}
	})
	wg.Go(func() { // collector
		for time.Now().Before(deadline) {
			r := c.run("gc", "--tuning", "gc-atime-safety-check=0,gc-atime-cutoff=1", "stress")
			if r.code != exitOK && r.code != exitBusy {
				t.Errorf("gc: %d %s", r.code, r.stderr)
			}
		}
	})
	wg.Wait()

	for rel := range created {
		if _, err := os.Stat(filepath.Join(base, rel)); err != nil {
			t.Errorf("snapshot %s was not forgotten but is gone: %v", rel, err)
		}
	}
	for rel := range forgotten {
		if _, err := os.Stat(filepath.Join(base, rel)); err == nil {
			t.Errorf("forgotten snapshot %s still exists", rel)
		}
	}
	if len(created)+len(forgotten) < 3 || len(forgotten) == 0 {
		t.Fatalf("stress did too little: %d created, %d forgotten", len(created), len(forgotten))
	}
	t.Logf("%d snapshots kept, %d forgotten", len(created), len(forgotten))
	storetest.CheckReferenced(t, base)
	wantCode(t, c.run("ingest", "stress", "vm/700", files[0]), exitOK)
	wantCode(t, c.run("gc", "--tuning", "gc-atime-safety-check=0", "stress"), exitOK)
}

// TestKilledWriterLeavesNoLock: an ingest killed with SIGKILL mid-backup
// leaves no lock that blocks anyone; GC reaps its registry entry as stale.
func TestKilledWriterLeavesNoLock(t *testing.T) {
	mnt := testfs.Loop(t, "ext4", "", 1<<30)
	c := newCLI(t)
	base := filepath.Join(mnt, "s")
	wantCode(t, c.run("create", "--tuning", "gc-atime-safety-check=0", "killw", base), exitOK)
	big := filepath.Join(t.TempDir(), "big")
	data := make([]byte, 256<<20)
	for i := range data {
		data[i] = byte(i>>12) ^ byte(i)
	}
	if err := os.WriteFile(big, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := c.cmd("ingest", "--chunk-size", "65536", "killw", "vm/800", big)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the writer has registered (a visible registry entry), then
	// kill it in the middle of its 4096-chunk backup.
	writers := filepath.Join(c.lockDir, "killw", "writers")
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if entries, _ := os.ReadDir(writers); len(entries) > 0 && !strings.HasPrefix(entries[0].Name(), ".") {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatal("ingest never registered as a writer")
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	entries, _ := os.ReadDir(filepath.Join(c.lockDir, "killw", "writers"))
	if len(entries) == 0 {
		t.Fatal("the killed writer left no registry entry: the test did not kill it mid-backup")
	}
	r := c.run("gc", "--tuning", "gc-atime-safety-check=0", "killw")
	wantCode(t, r, exitOK)
	if !strings.Contains(r.stderr, "stale") {
		t.Errorf("GC did not report reaping a stale writer:\n%s", r.stderr)
	}
	entries, _ = os.ReadDir(filepath.Join(c.lockDir, "killw", "writers"))
	if len(entries) != 0 {
		t.Errorf("stale registry entries left: %v", entries)
	}
	small := filepath.Join(t.TempDir(), "small")
	os.WriteFile(small, data[:1<<20], 0o644)
	r = c.run("ingest", "killw", "vm/800", small)
	wantCode(t, r, exitOK)
	rel, _ := filepath.Rel(base, strings.TrimSpace(r.stdout))
	wantCode(t, c.run("forget", "killw", rel), exitOK)
	storetest.CheckReferenced(t, base)
}
