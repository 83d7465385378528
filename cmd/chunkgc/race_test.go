package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// TestBackupsRacingGC: backups ingest files whose chunks are old garbage
// while GC sweeps again and again. Every chunk of every finished index must
// exist afterwards. Real processes on both sides.
func TestBackupsRacingGC(t *testing.T) {
	rounds := 4
	if os.Getenv("CHUNKGC_LONG") != "" {
		rounds = 60
	}
	mnt := testfs.Loop(t, "ext4", "", 1<<30)
	c := newCLI(t)
	base := filepath.Join(mnt, "s")
	wantCode(t, c.run("create", "--tuning", "gc-atime-safety-check=0", "racestore", base), exitOK)
	src := t.TempDir()

	for round := range rounds {
		file := forgottenBackup(t, c, "racestore", base, src, round, 256)
		old := time.Now().Add(-72 * time.Hour)
		ageAll(t, base, old)

		var wg sync.WaitGroup
		var ingestErr error
		var ingestOut string
		wg.Go(func() {
			cmd := c.cmd("ingest", "--chunk-size", "65536", "racestore", "vm/901", file)
			out, err := cmd.Output()
			ingestOut, ingestErr = string(out), err
		})
		wg.Go(func() { gcLoop(t, c, 3, "--tuning", "gc-atime-safety-check=0,gc-concurrency=2", "racestore") })
		wg.Wait()
		if ingestErr != nil {
			t.Fatalf("round %d: ingest: %v", round, ingestErr)
		}
		if _, refs := storetest.CheckReferenced(t, base); refs == 0 {
			t.Fatalf("round %d: no references checked; ingest printed %q", round, ingestOut)
		}
		if t.Failed() {
			t.Fatalf("round %d lost chunks", round)
		}
	}
}

// gcLoop runs chunkgc gc args n times, each to exit 0 or busy (75).
func gcLoop(t *testing.T, c *cli, n int, args ...string) {
	for range n {
		cmd := c.cmd(append([]string{"gc"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitBusy {
				t.Errorf("gc %v: %v\n%s", args, err, out)
			}
		}
	}
}

func ageAll(t *testing.T, base string, when time.Time) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(base, ".chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			return os.Chtimes(p, when, when)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// forgottenBackup writes the file disk<round> of n chunks of 64 KiB under
// dir (a round's bytes are its own), backs it up once into store (at base)
// and forgets that snapshot: its chunks are now garbage that the next
// backup of the same file needs again. It returns the file.
func forgottenBackup(t *testing.T, c *cli, store, base, dir string, round, n int) string {
	t.Helper()
	file := filepath.Join(dir, fmt.Sprintf("disk%d", round))
	data := make([]byte, n*64<<10)
	for i := range data {
		data[i] = byte(i/7 + round*31 + i>>16)
	}
	rtest.OK(t, os.WriteFile(file, data, 0o644))
	r := c.run("ingest", "--chunk-size", "65536", store, "vm/900", file)
	wantCode(t, r, exitOK)
	rel, err := filepath.Rel(base, strings.TrimSpace(r.stdout))
	rtest.OK(t, err)
	wantCode(t, c.run("forget", store, rel), exitOK)
	return file
}
