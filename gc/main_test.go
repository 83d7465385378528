package gc

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/testkit/leakcheck"
)

func TestMain(m *testing.M) {
	smallFdBudget()
	os.Exit(leakcheck.Run(m, "chunkgc/gc.", "chunkgc/chunkstore.", "chunkgc/locking."))
}

// smallFdBudget makes chunkstore's process-wide prefix dir fd budget (the
// soft RLIMIT_NOFILE less a reserve, fixed at its first use) a quarter of
// the hard limit, and then gives the process its full limit back. The
// prefix dir check caches an fd per prefix dir while the budget lasts, and
// the FUSE servers of these tests (skewfuse, atimefuse, the round-trip
// counter) run in this process and hold a backing fd for every dir the
// kernel has open on their mount, or has closed and not yet released:
// with the whole limit as budget the two together run out of fds. A
// production FUSE or NFS server is another process.
func smallFdBudget() {
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) != nil || rl.Max == unix.RLIM_INFINITY {
		return
	}
	full := rl.Cur
	rl.Cur = rl.Max / 4
	if unix.Setrlimit(unix.RLIMIT_NOFILE, &rl) != nil {
		return
	}
	defer func() { rl.Cur = full; unix.Setrlimit(unix.RLIMIT_NOFILE, &rl) }()
	dir, err := os.MkdirTemp("", "fdbudget")
	if err != nil {
		return
	}
	defer os.RemoveAll(dir)
	if os.MkdirAll(filepath.Join(dir, ".chunks", "0000"), 0o750) != nil {
		return
	}
	s, err := chunkstore.Open(dir, chunkstore.Options{})
	if err != nil {
		return
	}
	defer s.Close()
	s.Touch(blob.Digest{}) // opens .chunks/0000 and so fixes the budget; the chunk is missing
}
