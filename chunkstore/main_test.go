package chunkstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/leakcheck"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/tuning"
)

func TestMain(m *testing.M) {
	rtest.Main(m, rtest.Helpers{"probe": probeHelper}, leakcheck.Runner("chunkgc/", "go-fuse"))
}

// probeHelper runs in the test binary re-executed as a helper (see
// runAsBackup): it opens the store at args[0] and runs the atime probe,
// printing the error if any.
func probeHelper(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: probe <base>")
		return 2
	}
	s, err := Open(args[0], Options{Owner: fsys.Keep})
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

// scratchDir returns a fresh empty directory for a test that creates full
// stores: on its own tmpfs when root (65,536 mkdirs on a busy disk take
// minutes), else in t.TempDir().
func scratchDir(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		return t.TempDir()
	}
	dir := filepath.Join(testfs.Tmpfs(t, ""), "scratch")
	rtest.OK(t, os.Mkdir(dir, 0o755))
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
	rtest.OK(t, os.MkdirAll(filepath.Join(base, chunksName), 0o750))
	for _, p := range prefixes {
		rtest.OK(t, os.Mkdir(filepath.Join(base, chunksName, prefixName(p)), 0o750))
	}
	s, err := Open(base, opts)
	rtest.OK(t, err)
	t.Cleanup(func() { checkNoTmp(t, s); rtest.OK(t, s.Close()) })
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
	rtest.OK(t, err)
	return b, d
}

// testChunk returns the blob of some data and its digest.
func testChunk(t testing.TB, data string) ([]byte, blob.Digest) {
	t.Helper()
	b, err := blob.Encode([]byte(data), false)
	rtest.OK(t, err)
	return b, blob.Sum([]byte(data))
}

// oneChunk makes the chunk of data and a [miniStore] with opts holding
// its prefix dir, and inserts the chunk (a new chunk: Insert touches
// nothing).
func oneChunk(t testing.TB, data string, opts Options) (*Store, blob.Digest) {
	t.Helper()
	b, d := testChunk(t, data)
	s := miniStore(t, t.TempDir(), opts, d.Prefix())
	_, _, err := s.Insert(b, d)
	rtest.OK(t, err)
	return s, d
}

// faultChunk is [oneChunk] with testOpts whose seam is the returned set.
func faultChunk(t testing.TB, data string) (*Store, *faultfs.Set, blob.Digest) {
	t.Helper()
	set := faultfs.New(t, nil)
	opts := testOpts(t)
	opts.Syscalls = set
	s, d := oneChunk(t, data, opts)
	return s, set, d
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
	rtest.OK(t, os.Chtimes(path, atime, mtime))
}
