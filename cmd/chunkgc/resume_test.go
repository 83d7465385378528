package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chunkgc/gc"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// ckpt is the part of the checkpoint this test reads.
type ckpt struct {
	UPID  string `json:"upid"`
	Phase string `json:"phase"`
	Mark  struct {
		Groups string `json:"groups"`
	} `json:"mark"`
	Sweep struct {
		Next int `json:"next"`
	} `json:"sweep"`
}

// progress orders checkpoints of one chain: phase, then groups marked or
// prefix dirs swept.
func (c *ckpt) progress(t *testing.T) (phase, n int) {
	b, err := base64.StdEncoding.DecodeString(c.Mark.Groups)
	if err != nil {
		t.Fatal(err)
	}
	if c.Phase == "sweep" {
		return 1, c.Sweep.Next
	}
	return 0, len(b) / 8
}

func readCkpt(t *testing.T, base string) *ckpt {
	b, err := os.ReadFile(gc.CheckpointPath(base))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var c ckpt
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("checkpoint after SIGKILL is not JSON (not written atomically?): %v", err)
	}
	return &c
}

// TestResumeAfterKill9 SIGKILLs the real binary at random points of both
// phases, over and over: each run resumes the checkpoint the killed one
// left. After every kill every referenced chunk exists (and the store
// invariant holds), the checkpoint belongs to the chain's first run and
// its progress never goes back. Every few kills a run goes to the end: it
// names the run it resumed and did less than a fresh run, exactly by what
// the checkpoint recorded (touches of the groups marked, prefix dirs
// swept).
func TestResumeAfterKill9(t *testing.T) {
	rounds := 50
	if os.Getenv("CHUNKGC_LONG") != "" {
		rounds = 300
	}
	const groups, perGroup, garbage = 100, 50, 2000
	mnt := testfs.Loop(t, "ext4", "", 256<<20)
	base := filepath.Join(mnt, "s")
	opts := []storetest.Option{storetest.At(base)}
	var names []string
	for i := range groups*perGroup + garbage {
		n := fmt.Sprint("chunk ", i)
		names = append(names, n)
		opts = append(opts, storetest.Chunk(n, storetest.Data([]byte(fmt.Sprintf("chunk %d %s", i, strings.Repeat("x", i%100)))), storetest.Age(72*time.Hour)))
	}
	for g := range groups {
		opts = append(opts, storetest.Snapshot(fmt.Sprintf("vm/%d/2025-01-01T00:00:00Z", 100+g), "drive-scsi0.img.fidx",
			names[g*perGroup:(g+1)*perGroup]...))
	}
	s := storetest.Build(t, opts...)
	var refs, garb []string
	content := map[string][]byte{}
	for i, n := range names {
		if i < groups*perGroup {
			refs = append(refs, s.Path(n))
			continue
		}
		garb = append(garb, s.Path(n))
		b, err := os.ReadFile(s.Path(n))
		if err != nil {
			t.Fatal(err)
		}
		content[s.Path(n)] = b
	}
	reGarbage := func() { // put the removed garbage back, 72 h old
		old := time.Now().Add(-72 * time.Hour)
		for _, p := range garb {
			if _, err := os.Lstat(p); os.IsNotExist(err) {
				if err := os.WriteFile(p, content[p], 0o644); err != nil {
					t.Fatal(err)
				}
			}
			os.Chtimes(p, old, old)
		}
	}

	reGarbage() // reading the garbage above moved its atime (relatime)
	// ctimes have whole seconds: the first run starts in a later second
	// than the store was built, so its snapshots count as unchanged.
	for built := time.Now().Unix(); time.Now().Unix() <= built; {
		time.Sleep(10 * time.Millisecond)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	c := newCLI(t)
	t.Setenv("CHUNKGC_CHECKPOINT_INTERVAL", "10ms") // the binary inherits them
	t.Setenv("CHUNKGC_RECHECK_SLACK", "-1s")
	tun := "gc-atime-safety-check=0,gc-concurrency=2"
	var chain *ckpt // the chain's first checkpoint
	lastPhase, lastN := 0, 0
	completed, resumedFinishes := 0, 0
	phases := map[string]int{}
	for round := range rounds {
		probe := tun
		if round%10 == 0 {
			probe = "gc-atime-safety-check=1,gc-concurrency=2" // the probe re-runs on resume
		}
		cmd, log := startGC(t, c, "--tuning", probe, base)
		if round%2 == 0 {
			// Phase 1 lasts some 100 ms: aim at it every other round.
			waitLog(t, log, "start phase 1")
			time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		} else {
			delay := time.Duration(rng.IntN(1500)) * time.Millisecond
			if probe != tun {
				delay += time.Second
			}
			time.Sleep(delay)
		}
		cmd.Process.Kill()
		for log.Scan() {
		}
		cmd.Wait()
		if n := countExisting(refs); n != len(refs) {
			t.Fatalf("round %d: %d referenced chunks lost", round, len(refs)-n)
		}
		storetest.CheckReferenced(t, base)

		cp := readCkpt(t, base)
		if cp == nil {
			if chain != nil {
				// Only a run that finished removes it: the kill came
				// too late, and .gc-status says so.
				st, err := gc.ReadStatus(base)
				if err != nil || (st.ResumedFrom != chain.UPID && st.UPID != chain.UPID) {
					t.Fatalf("round %d: the checkpoint of run %s vanished after a kill, and no run of it finished (%v)", round, chain.UPID, err)
				}
				chain, lastPhase, lastN = nil, 0, 0
			}
			continue // killed before its first checkpoint, or after it finished
		}
		phase, n := cp.progress(t)
		phases[cp.Phase]++
		if chain == nil {
			chain = cp
		} else {
			if cp.UPID != chain.UPID {
				t.Fatalf("round %d: checkpoint of %s, the chain started with %s: the killed run did not resume", round, cp.UPID, chain.UPID)
			}
			if phase < lastPhase || (phase == lastPhase && n < lastN) {
				t.Fatalf("round %d: progress went back from (%d, %d) to (%d, %d)", round, lastPhase, lastN, phase, n)
			}
		}
		lastPhase, lastN = phase, n
		if round%7 != 6 {
			continue
		}
		// Let this one finish.
		fin := c.cmd("gc", "--tuning", tun, "--output", "json", base)
		out, err := fin.Output()
		if err != nil {
			t.Fatalf("round %d: resumed gc: %v\n%s", round, err, out)
		}
		var st gc.Status
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatal(err)
		}
		if st.ResumedFrom != chain.UPID {
			t.Fatalf("round %d: finished run resumed %q, want %q", round, st.ResumedFrom, chain.UPID)
		}
		wantTouched, wantSwept := int64(groups*perGroup), int64(65536)
		if phase == 0 {
			wantTouched -= int64(n * perGroup)
		} else {
			wantTouched, wantSwept = 0, int64(65536-n)
		}
		if st.TouchedChunks != wantTouched || st.SweptPrefixDirs != wantSwept {
			t.Fatalf("round %d: resumed from (%d, %d): touched %d, swept %d; want %d, %d", round, phase, n,
				st.TouchedChunks, st.SweptPrefixDirs, wantTouched, wantSwept)
		}
		if st.TouchedChunks+st.SweptPrefixDirs < int64(groups*perGroup)+65536 {
			resumedFinishes++
		}
		if left, cp := countExisting(garb), readCkpt(t, base); left != 0 || cp != nil {
			t.Fatalf("round %d: %d garbage chunks and checkpoint %+v left after the finished run\n%s", round, left, cp, out)
		}
		completed++
		chain, lastPhase, lastN = nil, 0, 0
		reGarbage()
	}
	t.Logf("%d rounds, checkpoints by phase %v, %d runs finished (%d of them with less work than a fresh one)", rounds, phases, completed, resumedFinishes)
	if phases["mark"] == 0 || phases["sweep"] == 0 || resumedFinishes == 0 {
		t.Fatalf("kills left checkpoints by phase %v and %d finished runs did less: both phases must be hit", phases, resumedFinishes)
	}
	wantCode(t, c.run("gc", "--tuning", tun, "--fresh", base), exitOK)
	if countExisting(refs) != len(refs) {
		t.Fatal("referenced chunk lost")
	}
}

// TestFreshFlag: --fresh ignores the checkpoint a killed run left and
// says so; the usage text lists it.
func TestFreshFlag(t *testing.T) {
	s := ext4Store(t, 256<<20, 2000, 500)
	c := newCLI(t)
	cmd, log := startGC(t, c, "--tuning", "gc-atime-safety-check=0,gc-concurrency=1", s.base)
	waitLog(t, log, "start phase 2")
	cmd.Process.Kill()
	cmd.Wait()
	if readCkpt(t, s.base) == nil {
		t.Fatal("no checkpoint after a kill in phase 2")
	}
	r := c.run("gc", "--tuning", "gc-atime-safety-check=0", "--fresh", "--output", "json", s.base)
	wantCode(t, r, exitOK, "--fresh: ignoring the checkpoint")
	if strings.Contains(r.stdout, "resumed-from") {
		t.Errorf("--fresh run resumed: %s", r.stdout)
	}
	wantCode(t, c.run("--help"), exitOK, "--fresh")
}
