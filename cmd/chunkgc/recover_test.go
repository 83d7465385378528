package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/gc"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/journal"
)

// TestBrakeHidesNothingCLI: the real binary, default tuning, a namespace
// holding most referenced chunks renamed away (as an unmounted namespace
// looks): gc exits 65, prints the brake's figures in its JSON, says how to
// proceed and removes nothing; --dry-run reports the trip and exits 0;
// with the namespace back, gc removes only the real garbage.
func TestBrakeHidesNothingCLI(t *testing.T) {
	mnt := testfs.Loop(t, "ext4", "", 256<<20)
	base := filepath.Join(mnt, "s")
	var opts []storetest.Option
	var nsNames, rootNames, garbage []string
	for i := range 1800 {
		n := fmt.Sprint("chunk ", i)
		opts = append(opts, storetest.Chunk(n, storetest.Size(200), storetest.Age(72*time.Hour)))
		switch {
		case i < 1500:
			nsNames = append(nsNames, n)
		case i < 1700:
			rootNames = append(rootNames, n)
		default:
			garbage = append(garbage, n)
		}
	}
	opts = append(opts, storetest.At(base),
		storetest.Snapshot("ns/prod/vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", nsNames...),
		storetest.Snapshot("vm/200/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", rootNames...))
	s := storetest.Build(t, opts...)
	paths := func(names []string) []string {
		var p []string
		for _, n := range names {
			p = append(p, s.Path(n))
		}
		return p
	}
	hidden := filepath.Join(base, ".ns-away")
	if err := os.Rename(filepath.Join(base, "ns"), hidden); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t)
	noProbe := "gc-atime-safety-check=0"

	r := c.run("gc", "--tuning", noProbe, "--output", "json", base)
	wantCode(t, r, exitBrake, "mass-deletion brake", "--force", "gc-brake-percent")
	var st gc.Status
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &st); err != nil {
		t.Fatalf("stdout is not the status JSON: %v\n%s", err, r.stdout)
	}
	if st.Brake == nil || !st.Brake.Tripped || !st.Brake.Exact || st.Brake.EstimatedRemovals != 1600 {
		t.Fatalf("brake figures %+v, want tripped, exact, 1600 removals", st.Brake)
	}
	if n := countExisting(paths(nsNames)); n != len(nsNames) {
		t.Fatalf("the braked run removed %d chunks of the hidden namespace", len(nsNames)-n)
	}
	if n := countExisting(paths(garbage)); n != len(garbage) {
		t.Fatalf("the braked run removed %d garbage chunks", len(garbage)-n)
	}
	wantCode(t, c.run("gc", "--tuning", noProbe, "--dry-run", "--output", "json", base), exitOK, `"tripped":true`)

	if err := os.Rename(hidden, filepath.Join(base, "ns")); err != nil {
		t.Fatal(err)
	}
	wantCode(t, c.run("gc", "--tuning", noProbe, base), exitOK, "Removed chunks: 100")
	if n := countExisting(paths(nsNames)) + countExisting(paths(rootNames)); n != 1700 {
		t.Fatalf("%d referenced chunks lost", 1700-n)
	}
}

// TestJournalCLI: after a GC, "chunkgc journal" lists the run, --run prints
// its chunks, --digest says when and why a chunk was removed (and that a
// referenced one was not); bad arguments are usage errors.
func TestJournalCLI(t *testing.T) {
	s := ext4Store(t, 256<<20, 50, 40)
	c := newCLI(t)
	wantCode(t, c.run("journal", s.base), exitOK, "no deletion journals")
	r := c.run("gc", "--tuning", "gc-atime-safety-check=0", "--output", "json", s.base)
	wantCode(t, r, exitOK, `"removed-chunks":40`)
	var st gc.Status
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &st); err != nil || st.JournalRun == "" {
		t.Fatalf("status names no journal run (%v): %s", err, r.stdout)
	}
	wantCode(t, c.run("journal", s.base), exitOK, st.JournalRun, "complete")

	r = c.run("journal", "--run", st.JournalRun, "--output", "json", s.base)
	wantCode(t, r, exitOK)
	var run struct {
		Complete bool `json:"complete"`
		Chunks   []struct {
			Digest string `json:"digest"`
			Before int64  `json:"before-min-atime-s"`
		} `json:"chunks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &run); err != nil {
		t.Fatal(err)
	}
	if !run.Complete || len(run.Chunks) != 40 {
		t.Fatalf("journal --run: complete %v, %d chunks, want 40", run.Complete, len(run.Chunks))
	}
	for _, ch := range run.Chunks {
		if ch.Before <= 0 {
			t.Errorf("chunk %s: atime not before min-atime (%d s)", ch.Digest, ch.Before)
		}
	}
	gone := filepath.Base(s.garbage[0])
	wantCode(t, c.run("journal", "--digest", gone, s.base), exitOK, "removed by run "+st.JournalRun, "before the run's min-atime")
	kept := filepath.Base(s.refs[0])
	wantCode(t, c.run("journal", "--digest", kept, s.base), exitOK, "not removed by any run")

	wantCode(t, c.run("journal", "--digest", "zz", s.base), exitUsage, "--digest")
	wantCode(t, c.run("journal", "--run", "../x", s.base), exitUsage, "--run")
	wantCode(t, c.run("journal", "--run", "nosuchrun", s.base), exitError, "nosuchrun")
}

// TestJournalCLIRefusesSymlinks: the backup user (who owns the store tree)
// replaces .chunkgc, or .chunkgc/journal, by a symlink to a directory
// outside the store holding a valid journal, or journal by a file: every
// "chunkgc journal" form, run as root, exits 1 with an error naming the
// component, and prints nothing of that journal.
func TestJournalCLIRefusesSymlinks(t *testing.T) {
	rtest.RequireRoot(t)
	// The decoy: root's, outside the store, a valid journal of run "decoy"
	// that removed the chunk gone.
	decoy := filepath.Join(t.TempDir(), "decoy")
	rtest.OK(t, os.MkdirAll(filepath.Join(decoy, gc.JournalDir), 0o750))
	gone := blob.Sum([]byte("decoy chunk"))
	w, err := journal.Create(nil, rtest.DirFD(t, filepath.Join(decoy, gc.JournalDir)), filepath.Join(decoy, gc.JournalDir),
		journal.Header{RunID: "decoy", Store: "elsewhere", StartTime: 1_700_000_000, MinAtime: 1_699_900_000}, fsys.Keep)
	rtest.OK(t, err)
	rtest.OK(t, w.Add(journal.Record{Digest: gone, Size: 42, Atime: 1_600_000_000e9}))
	rtest.OK(t, w.Close(journal.Trailer{Records: 1, Bytes: 42}))

	tests := []struct {
		name   string
		script string // run as backup in the store's base
		at     string // the component the error names, relative to the base
		says   string
	}{
		{".chunkgc a symlink", "ln -s " + filepath.Join(decoy, gc.StateDir) + " .chunkgc", gc.StateDir, "is a symbolic link"},
		{"journal a symlink", "mkdir .chunkgc && ln -s " + filepath.Join(decoy, gc.JournalDir) + " .chunkgc/journal", gc.JournalDir, "is a symbolic link"},
		{"journal a file", "mkdir .chunkgc && echo x > .chunkgc/journal", gc.JournalDir, "not a directory"},
	}
	// One store for all (building and chowning its 65536 prefix dirs is
	// the slow part); each case starts from no .chunkgc.
	s := makeStore(t, filepath.Join(reachableDir(t), "s"), 2, 0)
	storetest.ChownTree(t, s.base)
	c := newCLI(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storetest.AsBackup(t, s.base, "rm -rf .chunkgc && "+tt.script)
			for _, args := range [][]string{
				{"journal", s.base},
				{"journal", "--output", "json", s.base},
				{"journal", "--run", "decoy", s.base},
				{"journal", "--digest", gone.String(), s.base},
			} {
				r := c.run(args...)
				wantCode(t, r, exitError, filepath.Join(s.base, tt.at)+": "+tt.says)
				if r.stdout != "" {
					t.Errorf("%v printed %q", args, r.stdout)
				}
				if strings.Contains(r.stderr, "elsewhere") || strings.Contains(r.stderr, "1699900000") {
					t.Errorf("%v: stderr shows the decoy journal: %s", args, r.stderr)
				}
			}
		})
	}
}

// TestJournalAfterKill9MidSweep: a GC SIGKILLed (a real signal) during
// phase 2 leaves a journal that reads without error as an incomplete
// prefix, and every chunk it lists is indeed gone.
func TestJournalAfterKill9MidSweep(t *testing.T) {
	s := ext4Store(t, 512<<20, 4000, 4000)
	c := newCLI(t)
	dir := gc.JournalPath(s.base)
	withRecords := 0
	for round := range 6 {
		cmd, log := startGC(t, c, "--tuning", "gc-atime-safety-check=0,gc-concurrency=1,gc-brake-percent=0", s.base)
		waitLog(t, log, "start phase 2")
		time.Sleep(time.Duration(300+250*round) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()

		var infos []journal.Info
		dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			infos, err = journal.List(nil, dirfd, dir)
			rtest.OK(t, err)
		case !errors.Is(err, unix.ENOENT):
			t.Fatal(err)
		}
		for _, in := range infos {
			if in.Err != nil {
				t.Fatalf("round %d: journal %s unreadable after SIGKILL: %v", round, in.Name, in.Err)
			}
			j, err := journal.ReadFile(dirfd, dir, in.Name)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			for _, rec := range j.Records {
				p := filepath.Join(s.base, ".chunks", rec.Digest.String()[:4], rec.Digest.String())
				if _, err := os.Lstat(p); !os.IsNotExist(err) {
					t.Errorf("round %d: journal %s lists %s, which exists", round, in.Name, rec.Digest)
				}
			}
			if !j.Complete() && len(j.Records) > 0 {
				withRecords++
			}
			os.Remove(in.Path)
		}
		if dirfd >= 0 {
			unix.Close(dirfd)
		}
		if n := countExisting(s.refs); n != len(s.refs) {
			t.Fatalf("round %d: %d referenced chunks lost", round, len(s.refs)-n)
		}
		old := time.Now().Add(-72 * time.Hour)
		for _, p := range s.garbage {
			if _, err := os.Lstat(p); os.IsNotExist(err) {
				os.WriteFile(p, []byte("garbage again"), 0o644)
			}
			os.Chtimes(p, old, old)
		}
	}
	if withRecords == 0 {
		t.Fatal("no round was killed with an incomplete journal holding records: the test asserted nothing")
	}
	t.Logf("%d of 6 rounds left an incomplete journal with records", withRecords)
}
