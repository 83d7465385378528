package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/config"
	"chunkgc/internal/testkit/leakcheck"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// binPath is the chunkgc binary built once for the tests: every CLI test
// runs the real program in its own process.
var binPath string

func TestMain(m *testing.M) {
	rtest.Main(m, rtest.Helpers{"posix-read-lock": holdPOSIXReadLock}, func(m *testing.M) int {
		dir, err := os.MkdirTemp("", "chunkgc-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		binPath = filepath.Join(dir, "chunkgc")
		build := exec.Command("go", "build", "-o", binPath, ".")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build chunkgc:", err)
			return 1
		}
		os.Chmod(dir, 0o755)
		return leakcheck.Run(m, "chunkgc/")
	})
}

// holdPOSIXReadLock is a helper process (rtest.Helper("posix-read-lock",
// path)): it takes a classic POSIX read lock on path (what a PBS daemon
// holds during a backup), says so, and waits for stdin to close.
func holdPOSIXReadLock(args []string) int {
	f, err := os.OpenFile(args[len(args)-1], os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	return 0
}

type result struct {
	stdout, stderr string
	code           int
}

// cli is one test's environment for the binary: its own config and lock root.
type cli struct {
	t       *testing.T
	config  string
	lockDir string
}

func newCLI(t *testing.T) *cli {
	d := t.TempDir()
	return &cli{t: t, config: filepath.Join(d, "datastore.cfg"), lockDir: filepath.Join(d, "locks")}
}

func (c *cli) cmd(args ...string) *exec.Cmd {
	if len(args) > 0 {
		args = append([]string{args[0], "--config", c.config, "--lock-dir", c.lockDir, "--log-format", "json"}, args[1:]...)
	}
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), "CHUNKGC_CONFIG=", "CHUNKGC_LOCK_DIR=", "CHUNKGC_METRICS_DIR=")
	return cmd
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	cmd := c.cmd(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func wantCode(t *testing.T, r result, code int, contains ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range contains {
		if !strings.Contains(r.stdout+r.stderr, s) {
			t.Errorf("output lacks %q\nstdout: %s\nstderr: %s", s, r.stdout, r.stderr)
		}
	}
}

// testStore is a chunk store built directly (storetest.Build, not through
// the CLI) with referenced and garbage chunks aged 72 h into the past; the
// store invariant is checked when the test ends.
type testStore struct {
	base    string
	garbage []string
	refs    []string
}

func makeStore(t *testing.T, base string, referenced, garbage int) *testStore {
	t.Helper()
	opts := []storetest.Option{storetest.At(base)}
	names := make([]string, referenced+garbage)
	for i := range names {
		names[i] = fmt.Sprint("chunk ", i)
		data := []byte(fmt.Sprintf("chunk %d %s", i, strings.Repeat("x", i%200)))
		opts = append(opts, storetest.Chunk(names[i], storetest.Data(data), storetest.Age(72*time.Hour)))
	}
	const perIndex = 500
	for i := 0; i < referenced; i += perIndex {
		opts = append(opts, storetest.Snapshot(fmt.Sprintf("vm/%d/2025-01-01T00:00:00Z", 100+i/perIndex),
			"drive-scsi0.img.fidx", names[i:min(i+perIndex, referenced)]...))
	}
	s := storetest.Build(t, opts...)
	ts := &testStore{base: base}
	for i, n := range names {
		if i < referenced {
			ts.refs = append(ts.refs, s.Path(n))
		} else {
			ts.garbage = append(ts.garbage, s.Path(n))
		}
	}
	return ts
}

// ext4Store is [makeStore] at <mnt>/s, mnt a fresh loop-mounted ext4 of size bytes.
func ext4Store(t *testing.T, size int64, referenced, garbage int) *testStore {
	t.Helper()
	return makeStore(t, filepath.Join(testfs.Loop(t, "ext4", "", size), "s"), referenced, garbage)
}

func countExisting(paths []string) int {
	n := 0
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			n++
		}
	}
	return n
}

func TestUsage(t *testing.T) {
	c := newCLI(t)
	r := c.run()
	wantCode(t, r, exitUsage, "usage: chunkgc")
	for _, name := range commandNames() {
		if !strings.Contains(r.stderr, name) {
			t.Errorf("usage does not list %s", name)
		}
	}
	wantCode(t, c.run("--help"), exitOK, "exit codes: 0 ok, 1 error, 2 usage, 65 mass-deletion brake", "75 busy")
	wantCode(t, c.run("frobnicate"), exitUsage, `unknown command "frobnicate"`)
	wantCode(t, c.run("gc"), exitUsage, "want STORE")
	wantCode(t, c.run("gc", "--output", "xml", "/x/y"), exitUsage, "--output")
}

func TestBadInput(t *testing.T) {
	c := newCLI(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "afile")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"malformed tuning", []string{"gc", "--tuning", "gc-atime-cutoff", dir + "/s"}, exitUsage, "gc-atime-cutoff"},
		{"unknown tuning key", []string{"gc", "--tuning", "gc-bogus=1", dir + "/s"}, exitUsage, "gc-bogus"},
		{"cutoff out of range", []string{"gc", "--tuning", "gc-atime-cutoff=0", dir + "/s"}, exitUsage, "1..2880"},
		{"cutoff too large", []string{"gc", "--tuning", "gc-atime-cutoff=2881", dir + "/s"}, exitUsage, "2881"},
		{"bad bool", []string{"create", "--tuning", "gc-atime-safety-check=maybe", "st1", dir + "/s"}, exitUsage, "gc-atime-safety-check"},
		{"missing store path", []string{"gc", dir + "/does-not-exist"}, exitError, dir + "/does-not-exist"},
		{"unconfigured name", []string{"gc", "nosuchstore"}, exitError, "is not configured"},
		{"relative path", []string{"create", "st1", "relative/path"}, exitUsage, "is not absolute"},
		{"file where a dir is expected", []string{"create", "st1", file}, exitError, file},
		{"gc on a file", []string{"gc", file}, exitError, file},
		{"bad store name", []string{"create", "a/b", dir + "/s"}, exitUsage, "a/b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, c.run(tt.args...), tt.code, tt.want)
		})
	}
	if _, err := os.Stat(c.config); err == nil {
		b, _ := os.ReadFile(c.config)
		t.Errorf("bad input registered something: %s", b)
	}
	if _, err := os.Stat(dir + "/s"); err == nil {
		t.Errorf("bad input created %s", dir+"/s")
	}
}

func TestCreateRegisterAndReuse(t *testing.T) {
	mnt := testfs.Loop(t, "ext4", "", 256<<20)
	c := newCLI(t)
	base := filepath.Join(mnt, "store1")
	wantCode(t, c.run("create", "--comment", "main pool", "store1", base), exitOK, "atime probe passed")
	cfg, err := config.Read(c.config)
	if err != nil {
		t.Fatal(err)
	}
	if ds, ok := cfg.Datastore("store1"); !ok || ds.Path != base {
		t.Fatalf("store1 not registered: %s", cfg.Bytes())
	}
	if os.Geteuid() == 0 {
		var st unix.Stat_t
		for _, p := range []string{base, base + "/.chunks", base + "/.chunks/bb9f", base + "/.chunks/ffff", base + "/.lock",
			base + "/.chunks/bb9f/bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"} {
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != 34 || st.Gid != 34 {
				t.Errorf("%s owned by %d:%d, want backup 34:34", p, st.Uid, st.Gid)
			}
		}
	}
	wantCode(t, c.run("create", "store1", filepath.Join(mnt, "other")), exitError, "already exists")
	wantCode(t, c.run("create", "store2", base), exitError, base)
	wantCode(t, c.run("check-atime", "store1"), exitOK, "atime probe passed")

	// Reuse: the same layout is adopted; a damaged one is named.
	c2 := newCLI(t)
	wantCode(t, c2.run("create", "--reuse", "again", base), exitOK)
	if err := os.Remove(filepath.Join(base, ".chunks", "00af")); err != nil {
		t.Fatal(err)
	}
	c3 := newCLI(t)
	wantCode(t, c3.run("create", "--reuse", "broken", base), exitError, "00af")
	if _, err := os.Stat(c3.config); err == nil {
		t.Error("a failed reuse registered the store")
	}
	// Status before any GC names the missing file.
	wantCode(t, c.run("status", "store1"), exitError, ".gc-status")
}

// TestCreateOnAtimeDroppingFUSE: the probe fails, create exits non-zero and
// registers nothing; with the probe tuned off it proceeds and says so.
func TestCreateOnAtimeDroppingFUSE(t *testing.T) {
	rtest.RequireRoot(t)
	mnt := fuseMount(t)
	c := newCLI(t)
	r := c.run("create", "fusestore", filepath.Join(mnt, "s"))
	wantCode(t, r, exitError, "atime")
	if _, err := os.Stat(c.config); err == nil {
		t.Fatal("create registered a store whose probe failed")
	}
	r = c.run("create", "--tuning", "gc-atime-safety-check=0", "fusestore", filepath.Join(mnt, "s"))
	wantCode(t, r, exitOK, "check skipped")
}

func TestGCCutoffFlagAndStatus(t *testing.T) {
	s := ext4Store(t, 256<<20, 50, 40)
	young := filepath.Join(s.base, ".chunks", "0000", strings.Repeat("0", 60)+"abcd")
	if err := os.WriteFile(young, []byte("young garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	hourAgo := time.Now().Add(-2 * time.Hour)
	os.Chtimes(young, hourAgo, hourAgo)
	c := newCLI(t)

	r := c.run("gc", "--dry-run", "--output", "json", s.base)
	wantCode(t, r, exitOK, `"removed-chunks":40`, `"dry-run":true`)
	if n := countExisting(s.garbage); n != 40 {
		t.Fatalf("dry run removed %d chunks", 40-n)
	}
	r = c.run("gc", "--tuning", "gc-atime-cutoff=60", s.base)
	wantCode(t, r, exitOK, "Removed chunks: 41", "Deduplication factor")
	if countExisting(s.garbage) != 0 || countExisting([]string{young}) != 0 {
		t.Error("garbage left after GC with 60 min cutoff")
	}
	if countExisting(s.refs) != len(s.refs) {
		t.Error("referenced chunk removed")
	}
	r = c.run("status", "--output", "json", s.base)
	wantCode(t, r, exitOK, `"removed-chunks":41`, `"upid":"UPID:`)
	wantCode(t, c.run("status", s.base), exitOK, "Removed chunks: 41")
}

// startGC starts a GC process and returns it with a reader of its JSON log.
func startGC(t *testing.T, c *cli, args ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := c.cmd(append([]string{"gc"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewScanner(stderr)
}

// signalGC starts a GC of a new store on ext4 with n referenced and n
// garbage chunks and sends it sig once its log says when.
func signalGC(t *testing.T, n int, when string, sig syscall.Signal) (*testStore, *cli, *exec.Cmd, *bufio.Scanner) {
	t.Helper()
	s := ext4Store(t, 256<<20, n, n)
	c := newCLI(t)
	gc, log := startGC(t, c, s.base)
	waitLog(t, log, when)
	if err := gc.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return s, c, gc, log
}

// waitLog reads log lines until one contains s.
func waitLog(t *testing.T, sc *bufio.Scanner, s string) {
	t.Helper()
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return
		}
	}
	t.Fatalf("log ended before %q", s)
}

func atimes(t *testing.T, paths []string) []int64 {
	var out []int64
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Atim.Nano())
	}
	return out
}

// TestSecondGCIsBusy: while one GC runs (stopped with SIGSTOP inside its
// run), a second exits 75 and touches nothing.
func TestSecondGCIsBusy(t *testing.T) {
	s, c, first, log := signalGC(t, 20, "starting garbage collection", syscall.SIGSTOP)
	before := atimes(t, append(s.refs, s.garbage...))
	r := c.run("gc", s.base)
	wantCode(t, r, exitBusy, "busy")
	after := atimes(t, append(s.refs, s.garbage...))
	for i := range before {
		if before[i] != after[i] {
			t.Fatal("the busy GC touched a chunk")
		}
	}
	if countExisting(s.garbage) != len(s.garbage) {
		t.Fatal("the busy GC removed chunks")
	}
	first.Process.Signal(syscall.SIGCONT)
	go func() {
		for log.Scan() {
		}
	}()
	if err := first.Wait(); err != nil {
		t.Fatalf("first GC: %v", err)
	}
	if countExisting(s.garbage) != 0 {
		t.Error("first GC left garbage")
	}
}

// TestGCRefusesWhileBackupHoldsStore: a process holding a classic POSIX read
// lock on <base>/.lock (a PBS backup) makes GC exit 75.
func TestGCRefusesWhileBackupHoldsStore(t *testing.T) {
	s := ext4Store(t, 256<<20, 5, 5)
	h := rtest.Helper("posix-read-lock", filepath.Join(s.base, ".lock"))
	stdin, _ := h.StdinPipe()
	out, _ := h.StdoutPipe()
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "locked" {
		t.Fatalf("helper: %q", sc.Text())
	}
	c := newCLI(t)
	wantCode(t, c.run("gc", s.base), exitBusy, "store lock")
	if countExisting(s.garbage) != len(s.garbage) {
		t.Fatal("GC removed chunks while a backup held the store")
	}
	stdin.Close()
	h.Wait()
	wantCode(t, c.run("gc", "--tuning", "gc-atime-safety-check=0", s.base), exitOK, "Removed chunks: 5")
}

// TestSIGTERMAbort: SIGTERM during the sweep exits 143, leaves .gc-status
// alone, releases the locks, and loses nothing referenced.
func TestSIGTERMAbort(t *testing.T) {
	// Less than half garbage: the mass-deletion brake lets it through.
	s := ext4Store(t, 512<<20, 2000, 1500)
	c := newCLI(t)
	gc, log := startGC(t, c, "--log-level", "debug", "--tuning", "gc-atime-safety-check=0,gc-concurrency=1", s.base)
	waitLog(t, log, "chunk removed")
	if err := gc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var tail strings.Builder
	for log.Scan() {
		tail.WriteString(log.Text() + "\n")
	}
	err := gc.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 143 {
		t.Fatalf("exit %v, want 143\n%s", err, tail.String())
	}
	if !strings.Contains(tail.String(), "interrupted") {
		t.Errorf("no interrupted log line:\n%s", tail.String())
	}
	if _, err := os.Stat(filepath.Join(s.base, ".gc-status")); err == nil {
		t.Error(".gc-status written by an interrupted run")
	}
	if countExisting(s.refs) != len(s.refs) {
		t.Fatal("referenced chunk lost")
	}
	wantCode(t, c.run("gc", "--tuning", "gc-atime-safety-check=0", s.base), exitOK)
	if countExisting(s.garbage) != 0 {
		t.Error("garbage left after the follow-up GC")
	}
}

// TestKill9AtRandomPoints kills GC with SIGKILL at random moments; after
// each kill every referenced chunk exists, and a final GC runs to the end.
func TestKill9AtRandomPoints(t *testing.T) {
	rounds := 20
	if os.Getenv("CHUNKGC_LONG") != "" {
		rounds = 200
	}
	s := ext4Store(t, 512<<20, 3000, 2500) // under the brake's 50 %
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := newCLI(t)
	for round := range rounds {
		probe := "0"
		if round%5 == 0 {
			probe = "1"
		}
		cmd := c.cmd("gc", "--tuning", "gc-atime-safety-check="+probe, s.base)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		if n := countExisting(s.refs); n != len(s.refs) {
			t.Fatalf("round %d: %d referenced chunks lost", round, len(s.refs)-n)
		}
		storetest.CheckReferenced(t, s.base)
		// Garbage is aged again so later rounds still have work to do.
		old := time.Now().Add(-72 * time.Hour)
		for _, p := range s.garbage {
			os.Chtimes(p, old, old)
		}
	}
	wantCode(t, c.run("gc", "--tuning", "gc-atime-safety-check=0", s.base), exitOK)
	if countExisting(s.refs) != len(s.refs) {
		t.Fatal("referenced chunk lost")
	}
}

// TestDemoAsNormalUser runs `chunkgc demo` as the unprivileged backup user,
// the way a newcomer runs it, and checks it removes the garbage it made.
func TestDemoAsNormalUser(t *testing.T) {
	// Not t.TempDir: its parent is 0700 root, which the backup user cannot enter.
	dir, err := os.MkdirTemp("", "chunkgc-demo-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cmd := exec.Command(binPath, "demo", "--log-format", "console", filepath.Join(dir, "demo"))
	cmd.Env = append(os.Environ(), "CHUNKGC_LOCK_DIR=", "CHUNKGC_CONFIG=")
	if os.Geteuid() == 0 {
		os.Chmod(dir, 0o777)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 34, Gid: 34}}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"atime probe passed", "Removed chunks: ", "Deduplication factor", "demo store:"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if bytes.Contains(out, []byte("Removed chunks: 0\n")) {
		t.Errorf("demo removed nothing:\n%s", out)
	}
	storetest.CheckReferenced(t, filepath.Join(dir, "demo", "store"))
}

// TestSIGINTDuringProbe: Ctrl-C while the probe waits its second exits 130,
// removes nothing and leaves the locks free.
func TestSIGINTDuringProbe(t *testing.T) {
	s, c, gc, log := signalGC(t, 10, "using access time cutoff", syscall.SIGINT)
	for log.Scan() {
	}
	err := gc.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Fatalf("exit %v, want 130", err)
	}
	if countExisting(s.garbage) != len(s.garbage) {
		t.Fatal("an interrupted GC removed chunks")
	}
	wantCode(t, c.run("gc", "--tuning", "gc-atime-safety-check=0", s.base), exitOK, "Removed chunks: 10")
}
