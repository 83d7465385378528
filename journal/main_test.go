package journal

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/leakcheck"
	"chunkgc/internal/testkit/rtest"
)

// TestMain runs the tests, or, re-executed by [rtest.Helper] as the helper
// "writer", writerHelper: the crash test SIGKILLs a writing process.
func TestMain(m *testing.M) {
	rtest.Main(m, rtest.Helpers{"writer": writerHelper}, leakcheck.Runner("chunkgc/journal."))
}

// rec returns the deterministic record i: the crash test's child writes
// rec(0), rec(1), … and the parent checks what it reads against them.
func rec(i int) Record {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return Record{
		Digest: blob.Sum(b[:]),
		Size:   uint64(i) * 4099,
		Atime:  int64(i)*1_000_000_007 + 1_700_000_000_000_000_000,
		Flags:  Flags(i % 8),
	}
}

// testHeader returns a header for run id.
func testHeader(id string, start int64) Header {
	return Header{RunID: id, Store: "store1", Host: "pbs1", StartTime: start, MinAtime: start - 86400 - 300, Cutoff: 24*time.Hour + 5*time.Minute}
}

// writerHelper is the crash test's child: DIR RUNID FLUSH-RECORDS
// FLUSH-INTERVAL. It creates the journal, says "ready", then adds rec(0),
// rec(1), … from one goroutine, saying "n <i>" every 64 records, until it
// is killed.
func writerHelper(args []string) int {
	if len(args) != 4 {
		fmt.Println("error usage: DIR RUNID FLUSH-RECORDS FLUSH-INTERVAL")
		return 2
	}
	n, err := strconv.Atoi(args[2])
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	interval, err := time.ParseDuration(args[3])
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	dirfd, err := unix.Open(args[0], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	w, err := create(fsys.Real{}, dirfd, args[0], testHeader(args[1], 1), fsys.Keep, options{flushRecords: n, flushInterval: interval})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "ready")
	out.Flush()
	for i := 0; i < 50_000_000; i++ {
		if err := w.Add(rec(i)); err != nil {
			fmt.Fprintln(out, "error", err)
			out.Flush()
			return 1
		}
		if i%64 == 63 {
			fmt.Fprintln(out, "n", i)
			out.Flush()
		}
	}
	fmt.Fprintln(out, "done")
	out.Flush()
	return 0
}
