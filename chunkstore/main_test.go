package chunkstore

import (
	"chunkgc/internal/fsys"

	"chunkgc/internal/testkit/leakcheck"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/tuning"
)

// helperEnv makes the test binary a helper process (see runHelper) instead of
// running the tests: the probe test re-executes itself as the backup user.
const helperEnv = "CHUNKSTORE_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[len(os.Args)-1]))
	}
	os.Exit(leakcheck.Run(m, "chunkgc/", "go-fuse"))
}

// runHelper runs in the re-executed test binary. Mode "probe" opens the store
// at base and runs the atime probe, printing the error if any.
func runHelper(mode, base string) int {
	switch mode {
	case "probe":
		s, err := Open(base, Options{Owner: fsys.Keep})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer s.Close()
		if _, err := s.ProbeAtime(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("probe passed as uid %d\n", os.Geteuid())
		return 0
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

func equal[T comparable](t testing.TB, what string, want, got T) {
	t.Helper()
	if want != got {
		t.Fatalf("%s: want %v, got %v", what, want, got)
	}
}

// scratchDir returns a fresh empty directory for a test that creates full
// stores: on its own tmpfs when root (65,536 mkdirs on a busy disk take
// minutes), else in t.TempDir().
func scratchDir(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return t.TempDir()
	}
	dir := filepath.Join(testfs.Tmpfs(t, ""), "scratch")
	ok(t, os.Mkdir(dir, 0o755))
	return dir
}

// noOwner leaves ownership alone.
var noOwner = fsys.Keep

// testOpts are the options of a test store: logging to t, no chown, no sync.
func testOpts(t testing.TB) Options {
	return Options{Log: zaptest.NewLogger(t), Owner: noOwner, SyncLevel: tuning.SyncNone}
}

// observedOpts are testOpts whose log also goes to an observer.
func observedOpts(t testing.TB) (Options, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	opts := testOpts(t)
	opts.Log = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	return opts, logs
}

// miniStore makes the smallest store Open accepts at base, with only the
// given prefix dirs, and opens it. Tests that do not need the full layout
// use it instead of Create.
func miniStore(t testing.TB, base string, opts Options, prefixes ...uint16) *Store {
	t.Helper()
	ok(t, os.MkdirAll(filepath.Join(base, chunksName), 0o750))
	for _, p := range prefixes {
		ok(t, os.Mkdir(filepath.Join(base, chunksName, prefixName(p)), 0o750))
	}
	s, err := Open(base, opts)
	ok(t, err)
	t.Cleanup(func() { checkNoTmp(t, s); ok(t, s.Close()) })
	return s
}

// checkNoTmp is the store invariant every test ends with: no tmp file is
// left in any prefix dir.
func checkNoTmp(t testing.TB, s *Store) {
	t.Helper()
	dirs, err := os.ReadDir(s.chunks)
	if err != nil {
		t.Errorf("invariant: %v", err)
		return
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		names, err := os.ReadDir(filepath.Join(s.chunks, d.Name()))
		if err != nil {
			t.Errorf("invariant: %v", err)
			continue
		}
		for _, n := range names {
			if strings.Contains(n.Name(), ".tmp_") {
				t.Errorf("invariant: tmp file left: %s/%s", d.Name(), n.Name())
			}
		}
	}
}

// zeroChunk returns the probe's zero chunk blob and digest.
func zeroChunk(t testing.TB) ([]byte, blob.Digest) {
	t.Helper()
	b, d, err := blob.ZeroChunk(blob.ZeroChunkSize)
	ok(t, err)
	return b, d
}

// testChunk returns the blob of some data and its digest.
func testChunk(t testing.TB, data string) ([]byte, blob.Digest) {
	t.Helper()
	b, err := blob.Encode([]byte(data), false)
	ok(t, err)
	return b, blob.Sum([]byte(data))
}

func lstat(t testing.TB, path string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("lstat %s: %v", path, err)
	}
	return &st
}

func ts(t unix.Timespec) time.Time { return time.Unix(t.Unix()) }

// old is a time long before any test runs.
var old = time.Date(2000, 1, 2, 3, 4, 5, 6000, time.UTC)

// setTimes sets atime and mtime of path.
func setTimes(t testing.TB, path string, atime, mtime time.Time) {
	t.Helper()
	ok(t, os.Chtimes(path, atime, mtime))
}

// --- seam wrappers -------------------------------------------------------

// utimesFault fails the failAt-th UtimesNanoAt call with err.
type utimesFault struct {
	fsys.Real
	failAt       int32
	err          unix.Errno
	calls, fired atomic.Int32
}

func (f *utimesFault) UtimesNanoAt(dirfd int, name string, ts []unix.Timespec, flags int) error {
	if f.calls.Add(1) == f.failAt {
		f.fired.Add(1)
		return &fs.PathError{Op: "utimensat", Path: name, Err: f.err}
	}
	return f.Real.UtimesNanoAt(dirfd, name, ts, flags)
}

// replaceOnStatx replaces the file it is about to stat, by renaming a fresh
// copy over it, at the given Statx calls (1-based).
type replaceOnStatx struct {
	fsys.Real
	chunks       string // the .chunks dir the names are relative to
	at           map[int32]bool
	calls, fired atomic.Int32
}

func (f *replaceOnStatx) Statx(dirfd int, name string, flags, mask int, stx *unix.Statx_t) error {
	if f.at[f.calls.Add(1)] {
		path := filepath.Join(f.chunks, name)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		tmp := path + ".replacement"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		f.fired.Add(1)
	}
	return f.Real.Statx(dirfd, name, flags, mask, stx)
}
