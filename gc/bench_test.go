package gc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/journal"
	"chunkgc/locking"
	"chunkgc/tuning"
)

// benchIndexes is the number of fixed indexes a bench store's chunks are
// spread over.
const benchIndexes = 20

// benchStore is a chunk store of n chunks, each referenced by exactly one of
// benchIndexes fixed indexes, on a tmpfs when root (else in a temp dir), so
// that mark and sweep measure the code and the syscalls rather than a disk.
// storetest.Build lays it out (and checks it when the benchmark ends).
type benchStore struct {
	store *chunkstore.Store
	locks *locking.Dir
	n     int
}

func newBenchStore(tb testing.TB, n int) *benchStore {
	tb.Helper()
	dir := tb.TempDir()
	if os.Geteuid() == 0 {
		dir = testfs.Tmpfs(tb, "")
	}
	opts := []storetest.Option{storetest.At(filepath.Join(dir, "store"))}
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprint("bench chunk ", i)
		opts = append(opts, storetest.Chunk(names[i], storetest.Data(fmt.Appendf(nil, "bench chunk %d of %d", i, n))))
	}
	for i := range benchIndexes {
		opts = append(opts, storetest.Snapshot(fmt.Sprintf("vm/%d/2025-01-01T00:00:00Z", 100+i), "drive-scsi0.img.fidx",
			names[i*n/benchIndexes:(i+1)*n/benchIndexes]...))
	}
	st := storetest.Build(tb, opts...)
	store, err := chunkstore.Open(st.Base(), chunkstore.Options{Owner: fsys.Keep, SyncLevel: tuning.SyncNone})
	rtest.OK(tb, err)
	tb.Cleanup(func() { store.Close() })
	locks, err := locking.OpenDir(filepath.Join(tb.TempDir(), "locks"), fsys.Keep)
	rtest.OK(tb, err)
	return &benchStore{store: store, locks: locks, n: n}
}

// benchOpts are the options of a benchmark run: no log, default tuning with
// the given cache capacity.
func benchOpts(cacheCapacity int) *Options {
	o := &Options{Log: zap.NewNop(), StoreName: "bench", Tuning: tuning.Defaults()}
	o.Tuning.CacheCapacity = cacheCapacity
	return o
}

// mark runs phase 1 once; every chunk is referenced, so every one is touched
// (or found in the cache).
func (bs *benchStore) mark(tb testing.TB, opts *Options) {
	var st Status
	if _, err := mark(context.Background(), bs.store, bs.locks, opts, opts.Log, &st, new(untouchedSet), nil, new(Tracker), markResume{}); err != nil {
		tb.Fatal(err)
	}
	if st.MissingChunks != 0 || st.IndexFileCount != benchIndexes {
		tb.Fatalf("mark: %d missing chunks, %d index files", st.MissingChunks, st.IndexFileCount)
	}
}

// sweep runs phase 2 once with a cutoff that keeps every chunk, so the store
// stays the same from run to run: every chunk is listed and stat'ed.
func (bs *benchStore) sweep(tb testing.TB, opts *Options) {
	st := Status{MinAtime: 0, OldestWriter: time.Now().Unix()}
	s := newSweeper(bs.store, opts, opts.Log, &st, new(untouchedSet))
	if opts.Tuning.BrakePercent > 0 {
		b, err := s.brake(context.Background(), opts, 0)
		if err != nil {
			tb.Fatal(err)
		}
		s.pre = b
	}
	if err := s.sweep(context.Background(), opts, 0, &st); err != nil {
		tb.Fatal(err)
	}
	if got := st.DiskChunks + st.PendingChunks; got != int64(bs.n) || st.RemovedChunks != 0 {
		tb.Fatalf("sweep: %d chunks kept, %d removed, want %d kept", got, st.RemovedChunks, bs.n)
	}
}

// BenchmarkMark runs phase 1 over 20,000 chunks referenced by 20 fixed
// indexes, with the digest cache off (every reference is a utimensat) and at
// its default capacity (a fresh cache per run, as in a real run).
//
// go test -run '^$' -bench 'Mark$' -benchmem -count 5 -cpu 2 ./gc
func BenchmarkMark(b *testing.B) {
	bs := newBenchStore(b, 20000)
	for _, bc := range []struct {
		name  string
		cache int
	}{{"nocache", 0}, {"cache", tuning.Defaults().CacheCapacity}} {
		b.Run(bc.name, func(b *testing.B) {
			opts := benchOpts(bc.cache)
			b.ReportAllocs()
			for b.Loop() {
				bs.mark(b, opts)
			}
			b.ReportMetric(float64(bs.n*b.N)/b.Elapsed().Seconds(), "chunks/s")
		})
	}
}

// BenchmarkSweep runs phase 2 over a full store of 20,000 chunks, all kept:
// 65,536 prefix dirs opened and listed, every chunk stat'ed.
//
// go test -run '^$' -bench 'Sweep$' -benchmem -count 5 -cpu 2 ./gc
//
// brake=off is the sweep alone; brake=on (the default) lets the
// mass-deletion brake scan its sample first, which the sweep then does not
// list again: the difference is the brake's cost.
func BenchmarkSweep(b *testing.B) {
	bs := newBenchStore(b, 20000)
	for _, brake := range []int{0, 50} {
		name := "brake=off"
		if brake > 0 {
			name = "brake=on"
		}
		b.Run(name, func(b *testing.B) {
			opts := benchOpts(0)
			opts.Tuning.BrakePercent = brake
			b.ReportAllocs()
			for b.Loop() {
				bs.sweep(b, opts)
			}
			b.ReportMetric(float64(bs.n*b.N)/b.Elapsed().Seconds(), "chunks/s")
		})
	}
}

// BenchmarkSweepRemove is phase 2 of a store of 20,000 kept chunks and
// 5,000 garbage chunks (recreated, aged, outside the timer before every
// run), with and without the deletion journal, and with the quarantine
// (a rename into .chunkgc/quarantine instead of an unlink): the
// differences are the journal's and the quarantine's cost per run
// (README, "Deletion journal", "Quarantine").
//
// go test -run '^$' -bench 'SweepRemove' -benchmem -count 5 ./gc
func BenchmarkSweepRemove(b *testing.B) {
	const garbage = 5000
	bs := newBenchStore(b, 20000)
	base := bs.store.Base()
	old := []unix.Timespec{unix.NsecToTimespec(time.Now().Add(-72 * time.Hour).UnixNano()), {Nsec: unix.UTIME_OMIT}}
	plant := func(b *testing.B) {
		for i := range garbage {
			d := blob.Digest(sha256.Sum256(fmt.Appendf(nil, "garbage %d", i)))
			p := filepath.Join(base, ".chunks", d.String()[:4], d.String())
			rtest.OK(b, os.WriteFile(p, []byte("garbage blob"), 0o644))
			rtest.OK(b, unix.UtimesNano(p, old))
		}
	}
	run := 0 // run ids unique across sub-benchmarks and counts
	for _, v := range []struct {
		name       string
		keep       int
		quarantine bool
	}{{"journal=off", 0, false}, {"journal=on", 1000, false}, {"journal=on,quarantine=on", 1000, true}} {
		b.Run(v.name, func(b *testing.B) {
			opts := benchOpts(0)
			for b.Loop() {
				b.StopTimer()
				plant(b)
				run++
				b.StartTimer()
				st := Status{MinAtime: time.Now().Add(-time.Hour).Unix(), OldestWriter: time.Now().Unix()}
				s := newSweeper(bs.store, opts, opts.Log, &st, new(untouchedSet))
				id := fmt.Sprintf("20260101T000000Z-%d%03d", os.Getpid(), run)
				if v.keep > 0 {
					s.jr = &runJournal{store: bs.store, owner: fsys.Keep, log: opts.Log, keep: v.keep, dirfd: -1,
						hdr: journal.Header{RunID: id, StartTime: time.Now().Unix()}}
				}
				if v.quarantine {
					s.q = &quarantine{store: bs.store, owner: fsys.Keep, runID: id, fd: -1}
				}
				err := s.sweep(context.Background(), opts, 0, &st)
				s.q.close()
				s.jr.close(&st, err)
				rtest.OK(b, err)
				if st.RemovedChunks != garbage {
					b.Fatalf("removed %d, want %d", st.RemovedChunks, garbage)
				}
			}
		})
	}
}
