package gc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/datastore"
	"chunkgc/index"
	"chunkgc/internal/testkit/atimefuse"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/locking"
)

// chunkCase is one chunk of the accounting table: its age, whether an index
// references it, whether it is a bad copy, and where PBS's accounting puts it.
type chunkCase struct {
	name       string
	age        time.Duration
	referenced bool
	bad        bool // a <digest>.0.bad copy (of a chunk that is itself missing unless goodToo)
	goodToo    bool // for bad: the good chunk exists (and is referenced)
	want       string
}

const (
	wantDisk       = "disk"        // kept, disk-chunks + disk-bytes
	wantDiskBytes  = "disk-bytes"  // kept bad chunk: disk-bytes only
	wantPending    = "pending"     // kept, pending-chunks + pending-bytes
	wantStillBad   = "still-bad"   // kept bad, still-bad + pending-bytes
	wantRemoved    = "removed"     // unlinked, removed-chunks + removed-bytes
	wantRemovedBad = "removed-bad" // unlinked bad, removed-bad + removed-bytes
)

var accountingTable = []chunkCase{
	{name: "referenced young", age: time.Hour, referenced: true, want: wantDisk},
	{name: "referenced 23h", age: 23 * time.Hour, referenced: true, want: wantDisk},
	{name: "referenced 25h", age: 25 * time.Hour, referenced: true, want: wantDisk},
	{name: "referenced old", age: 30 * 24 * time.Hour, referenced: true, want: wantDisk},
	{name: "unreferenced young", age: time.Hour, want: wantPending},
	{name: "unreferenced 23h", age: 23 * time.Hour, want: wantPending},
	{name: "unreferenced 25h", age: 25 * time.Hour, want: wantRemoved},
	{name: "unreferenced old", age: 30 * 24 * time.Hour, want: wantRemoved},
	{name: "bad unreferenced young", age: time.Hour, bad: true, want: wantStillBad},
	{name: "bad unreferenced old", age: 48 * time.Hour, bad: true, want: wantRemovedBad},
	{name: "bad of a missing referenced chunk", age: 48 * time.Hour, bad: true, referenced: true, want: wantDiskBytes},
	{name: "bad beside its good referenced chunk", age: 48 * time.Hour, bad: true, referenced: true, goodToo: true, want: wantRemovedBad},
}

// placed is a table entry on disk.
type placed struct {
	chunkCase
	path string
	size uint64
}

// buildAccountingStore places the table into f (each entry a chunk, or a
// bad copy of a chunk that is stored or missing, named by the entry) with one
// index referencing the referenced entries, and returns the placed files and
// how many referenced chunks are missing.
func buildAccountingStore(f *fixture) ([]placed, int) {
	var opts []storetest.Option
	var refs []string
	missing := 0
	for i, c := range accountingTable {
		size, age := storetest.Size(1000+100*i), storetest.Age(c.age)
		switch {
		case !c.bad || c.goodToo:
			opts = append(opts, storetest.Chunk(c.name, size, age))
		default:
			opts = append(opts, storetest.Missing(c.name, size))
			if c.referenced {
				missing++
			}
		}
		if c.bad {
			opts = append(opts, storetest.BadCopy(c.name, 0, size, age))
		}
		if c.referenced {
			refs = append(refs, c.name)
		}
	}
	f.st.Add(append(opts, storetest.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", refs...))...)

	var out []placed
	for i, c := range accountingTable {
		path := f.store.ChunkPath(f.st.Digest(c.name))
		switch {
		case !c.bad:
			out = append(out, placed{chunkCase: c, path: path, size: uint64(f.st.Size(c.name))})
			continue
		case c.goodToo:
			out = append(out, placed{chunkCase: chunkCase{name: c.name + " (good)", referenced: true, want: wantDisk},
				path: path, size: uint64(f.st.Size(c.name))})
		}
		out = append(out, placed{chunkCase: c, path: path + ".0.bad", size: uint64(1000 + 100*i)})
	}
	return out, missing
}

// expected computes the status counters the table promises.
func expected(ps []placed, zeroSize uint64) Status {
	var w Status
	w.DiskChunks, w.DiskBytes = 1, zeroSize // the probe's zero chunk
	// The counters each want adds a chunk to: its count (nil: none) and
	// its bytes.
	counters := map[string]struct {
		n     *int64
		bytes *uint64
	}{
		wantDisk:       {&w.DiskChunks, &w.DiskBytes},
		wantDiskBytes:  {nil, &w.DiskBytes},
		wantPending:    {&w.PendingChunks, &w.PendingBytes},
		wantStillBad:   {&w.StillBad, &w.PendingBytes},
		wantRemoved:    {&w.RemovedChunks, &w.RemovedBytes},
		wantRemovedBad: {&w.RemovedBad, &w.RemovedBytes},
	}
	for _, p := range ps {
		c, ok := counters[p.want]
		if !ok {
			panic("accountingTable: unknown want " + p.want)
		}
		if c.n != nil {
			*c.n++
		}
		*c.bytes += p.size
	}
	return w
}

func zeroChunkSize(t *testing.T, f *fixture) uint64 {
	_, d, err := blob.ZeroChunk(blob.ZeroChunkSize)
	rtest.OK(t, err)
	fi, err := os.Stat(f.store.ChunkPath(d))
	rtest.OK(t, err)
	return uint64(fi.Size())
}

func checkCounters(t *testing.T, want, got Status) {
	t.Helper()
	rtest.Equal(t, "disk-chunks", want.DiskChunks, got.DiskChunks)
	rtest.Equal(t, "disk-bytes", want.DiskBytes, got.DiskBytes)
	rtest.Equal(t, "pending-chunks", want.PendingChunks, got.PendingChunks)
	rtest.Equal(t, "pending-bytes", want.PendingBytes, got.PendingBytes)
	rtest.Equal(t, "removed-chunks", want.RemovedChunks, got.RemovedChunks)
	rtest.Equal(t, "removed-bytes", want.RemovedBytes, got.RemovedBytes)
	rtest.Equal(t, "removed-bad", want.RemovedBad, got.RemovedBad)
	rtest.Equal(t, "still-bad", want.StillBad, got.StillBad)
}

func TestAccountingTable(t *testing.T) {
	f := newFixture(t)
	ps, missing := buildAccountingStore(f)
	stray := filepath.Join(f.base, ".chunks", "0000", "notes.txt")
	rtest.OK(t, os.WriteFile(stray, []byte("x"), 0o644))
	f.age(stray, 100*24*time.Hour)

	st, err := f.run()
	rtest.OK(t, err)
	for _, p := range ps {
		gone := !f.exists(p.path)
		wantGone := p.want == wantRemoved || p.want == wantRemovedBad
		if gone != wantGone {
			t.Errorf("%s: removed=%v, want removed=%v", p.name, gone, wantGone)
		}
	}
	checkCounters(t, expected(ps, zeroChunkSize(t, f)), *st)
	rtest.Equal(t, "missing-chunks", int64(missing), st.MissingChunks)
	rtest.Equal(t, "index-file-count", int64(1), st.IndexFileCount)
	rtest.Equal(t, "not-chunk-files", int64(1), st.NotChunks)
	if !f.exists(stray) {
		t.Error("a file that is not a chunk was removed")
	}

	// .gc-status holds the same counters, PBS's names on disk.
	onDisk, err := ReadStatus(f.base)
	rtest.OK(t, err)
	checkCounters(t, *st, *onDisk)
	raw, err := os.ReadFile(filepath.Join(f.base, StatusFile))
	rtest.OK(t, err)
	rtest.Contains(t, ".gc-status", string(raw), `"upid"`, `"index-file-count"`, `"index-data-bytes"`, `"disk-bytes"`, `"disk-chunks"`,
		`"removed-bytes"`, `"removed-chunks"`, `"pending-bytes"`, `"pending-chunks"`, `"removed-bad"`, `"still-bad"`)
	if strings.Count(string(raw), "\n") != 1 {
		t.Errorf(".gc-status is not one line of JSON: %q", raw)
	}
}

// TestDryRunMatchesRealRun checks that --dry-run removes nothing, leaves
// .gc-status alone, and predicts exactly what the real run then does.
func TestDryRunMatchesRealRun(t *testing.T) {
	f := newFixture(t)
	ps, _ := buildAccountingStore(f)
	dry, err := f.run(func(o *Options) { o.DryRun = true })
	rtest.OK(t, err)
	for _, p := range ps {
		if !f.exists(p.path) {
			t.Errorf("dry run removed %s", p.name)
		}
	}
	if _, err := ReadStatus(f.base); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run wrote .gc-status (err %v)", err)
	}
	real, err := f.run()
	rtest.OK(t, err)
	checkCounters(t, *dry, *real)
	if real.RemovedChunks == 0 || real.RemovedBad == 0 {
		t.Fatalf("fixture removes nothing: %+v", real)
	}
}

// TestCutoffOverride: a shorter cutoff removes younger garbage, a longer one
// keeps older garbage; referenced chunks stay either way.
func TestCutoffOverride(t *testing.T) {
	f := newFixture(t)
	young, _ := f.chunk(1000, 2*time.Hour)
	mid, _ := f.chunk(1100, 30*time.Hour)
	old, _ := f.chunk(1200, 72*time.Hour)
	ref, _ := f.chunk(1300, 72*time.Hour)
	f.snapshot("ct/200/2025-01-01T00:00:00Z", ref)

	st, err := f.run(func(o *Options) { o.Tuning.AtimeCutoff = 48 * time.Hour })
	rtest.OK(t, err)
	rtest.Equal(t, "removed with 48 h cutoff", int64(1), st.RemovedChunks)
	rtest.Equal(t, "old removed", false, f.exists(f.store.ChunkPath(old)))
	rtest.Equal(t, "mid kept", true, f.exists(f.store.ChunkPath(mid)))

	st, err = f.run(func(o *Options) { o.Tuning.AtimeCutoff = 60 * time.Minute })
	rtest.OK(t, err)
	rtest.Equal(t, "removed with 60 min cutoff", int64(2), st.RemovedChunks)
	rtest.Equal(t, "young removed", false, f.exists(f.store.ChunkPath(young)))
	rtest.Equal(t, "referenced kept", true, f.exists(f.store.ChunkPath(ref)))
}

// TestCorruptIndexStopsBeforeSweep: each kind of corrupt index stops the run
// with an error naming the file, and not one chunk is removed.
func TestCorruptIndexStopsBeforeSweep(t *testing.T) {
	corruptions := []struct {
		name   string
		mangle func(t *testing.T, path string)
	}{
		{"truncated header", func(t *testing.T, p string) { rtest.OK(t, os.Truncate(p, 100)) }},
		{"wrong magic", func(t *testing.T, p string) { writeAt(t, p, 0, []byte("NOTMAGIC")) }},
		{"ragged body", func(t *testing.T, p string) { appendBytes(t, p, []byte{1, 2, 3}) }},
		{"count does not match size", func(t *testing.T, p string) { writeAt(t, p, 64, []byte{0xff, 0xff, 0, 0, 0, 0, 0, 0}) }},
		{"empty file", func(t *testing.T, p string) { rtest.OK(t, os.Truncate(p, 0)) }},
	}
	for _, tt := range corruptions {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			garbage, _ := f.chunk(1000, 72*time.Hour)
			ref, _ := f.chunk(1100, 72*time.Hour)
			f.snapshot("vm/100/2025-01-01T00:00:00Z", ref)
			bad := f.snapshot("vm/101/2025-01-01T00:00:00Z", ref)
			tt.mangle(t, bad)

			_, err := f.run()
			if err == nil {
				t.Fatal("GC succeeded on a corrupt index")
			}
			if !errors.Is(err, index.ErrCorrupt) {
				t.Errorf("error does not wrap index.ErrCorrupt: %v", err)
			}
			if !strings.Contains(err.Error(), bad) {
				t.Errorf("error does not name %s: %v", bad, err)
			}
			if !f.exists(f.store.ChunkPath(garbage)) {
				t.Error("garbage was removed although the run stopped in phase 1")
			}
			if _, err := ReadStatus(f.base); err == nil {
				t.Error(".gc-status written by a failed run")
			}
		})
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	rtest.OK(t, err)
	defer fh.Close()
	_, err = fh.WriteAt(b, off)
	rtest.OK(t, err)
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	rtest.OK(t, err)
	defer fh.Close()
	_, err = fh.Write(b)
	rtest.OK(t, err)
}

// TestPruneBackupRace reproduces the race SPEC §6.3 describes: after GC
// listed group vm/100 (one snapshot, S1), a backup finishes S2 reusing S1's
// chunks without touching them, and a prune removes S1. GC must re-list the
// group and mark S2; every chunk stays.
func TestPruneBackupRace(t *testing.T) {
	f := newFixture(t)
	var shared []blob.Digest
	for i := range 20 {
		d, _ := f.chunk(2000+i, 72*time.Hour)
		shared = append(shared, d)
	}
	garbage, _ := f.chunk(999, 72*time.Hour)
	s1 := "vm/100/2025-01-01T00:00:00Z"
	f.snapshot(s1, shared...)

	core, logs := observer.New(zapcore.InfoLevel)
	fired := 0
	st, err := f.run(func(o *Options) {
		o.Log = zap.New(core)
		o.hooks.afterGroupList = func(g datastore.Group, attempt int) {
			if g.RelPath() != "vm/100" || attempt != 0 {
				return
			}
			fired++
			// The backup: S2 references S1's chunks; it does not touch them.
			f.snapshot("vm/100/2025-01-02T00:00:00Z", shared...)
			// The prune: S1 goes.
			rtest.OK(t, os.RemoveAll(filepath.Join(f.base, s1)))
		}
	})
	rtest.OK(t, err)
	rtest.Equal(t, "hook fired", 1, fired)
	for _, d := range shared {
		if !f.exists(f.store.ChunkPath(d)) {
			t.Fatalf("chunk %s of the new snapshot was removed", d)
		}
	}
	rtest.Equal(t, "garbage removed", false, f.exists(f.store.ChunkPath(garbage)))
	rtest.Equal(t, "new index files", int64(1), st.NewIndexFiles)
	rtest.Equal(t, "index files", int64(1), st.IndexFileCount)
	if logs.FilterMessageSnippet("listing group again").Len() != 1 {
		t.Errorf("no re-list logged: %v", logs.All())
	}
}

// TestStrangeIndexFiles: index files outside the namespace/group/snapshot
// scheme are marked and counted; hidden dirs are not descended into.
func TestStrangeIndexFiles(t *testing.T) {
	f := newFixture(t)
	a, _ := f.chunk(1000, 72*time.Hour)
	b, _ := f.chunk(1100, 72*time.Hour)
	c, _ := f.chunk(1200, 72*time.Hour)
	f.snapshot("stray/dir", a)              // outside the scheme
	f.snapshot("vm/100/not-a-timestamp", b) // a group with a non-snapshot dir
	f.snapshot("ns/x/ns/y/host/h1/2025-01-01T00:00:00Z", c)
	st, err := f.run()
	rtest.OK(t, err)
	rtest.Equal(t, "strange index files", int64(2), st.StrangeIndexFiles)
	rtest.Equal(t, "index files", int64(3), st.IndexFileCount)
	rtest.Equal(t, "removed", int64(0), st.RemovedChunks)
}

// TestMissingChunkWarned: a referenced chunk that is missing is warned about
// with digest and index, counted, and its bad copies are kept.
func TestMissingChunkWarned(t *testing.T) {
	f := newFixture(t)
	d := f.neverStored(100)
	bad1 := f.badCopy(d, 1, 500, 72*time.Hour)
	bad7 := f.badCopy(d, 7, 600, 72*time.Hour)
	idx := f.snapshot("vm/100/2025-01-01T00:00:00Z", d)
	core, logs := observer.New(zapcore.InfoLevel)
	st, err := f.run(func(o *Options) { o.Log = zap.New(core) })
	rtest.OK(t, err)
	rtest.Equal(t, "missing", int64(1), st.MissingChunks)
	rtest.Equal(t, "bad copy 1 kept", true, f.exists(bad1))
	rtest.Equal(t, "bad copy 7 kept", true, f.exists(bad7))
	warned := false
	for _, e := range logs.FilterMessageSnippet("missing").All() {
		m := e.ContextMap()
		if m["digest"] == d.String() && strings.HasSuffix(filepath.Join(f.base, m["index"].(string)), idx) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("missing chunk not warned with digest and index: %v", logs.All())
	}
}

// TestBusy: a second GC while one holds the GC lock touches nothing and
// reports locking.ErrLocked (exit 75 in the CLI).
func TestBusy(t *testing.T) {
	f := newFixture(t)
	garbage, _ := f.chunk(1000, 72*time.Hour)
	held, err := f.locks.GCLock()
	rtest.OK(t, err)
	_, err = f.run()
	if !errors.Is(err, locking.ErrLocked) {
		t.Fatalf("want ErrLocked, got %v", err)
	}
	rtest.OK(t, held.Unlock())
	rtest.Equal(t, "garbage untouched", true, f.exists(f.store.ChunkPath(garbage)))
}

// TestAtimeDroppingFilesystem: on a FUSE filesystem that silently drops atime
// updates the probe fails, GC stops before phase 1, nothing is removed.
func TestAtimeDroppingFilesystem(t *testing.T) {
	rtest.RequireRoot(t)
	backing := t.TempDir()
	mnt := atimefuse.Mount(t, backing)
	f := newFixtureAt(t, filepath.Join(mnt, "store"))
	garbage, _ := f.chunk(1000, 72*time.Hour)
	core, logs := observer.New(zapcore.InfoLevel)
	_, err := f.run(func(o *Options) { o.Log = zap.New(core) })
	if !errors.Is(err, chunkstore.ErrAtimeNotHonoured) {
		t.Fatalf("want ErrAtimeNotHonoured, got %v", err)
	}
	rtest.Equal(t, "garbage kept", true, f.exists(f.store.ChunkPath(garbage)))
	if logs.FilterMessageSnippet("phase 1").Len() != 0 {
		t.Error("phase 1 started after a failed probe")
	}
}

// TestCacheDisabledSameResult: gc-cache-capacity=0 gives the same counters.
func TestCacheDisabledSameResult(t *testing.T) {
	f := newFixture(t)
	ps, _ := buildAccountingStore(f)
	f.snapshot("vm/100/2025-01-02T00:00:00Z", func() []blob.Digest {
		var ds []blob.Digest
		for _, p := range ps {
			if p.want == wantDisk && !p.bad {
				d, err := blob.ParseDigest(filepath.Base(p.path))
				rtest.OK(t, err)
				ds = append(ds, d)
			}
		}
		return ds
	}()...)
	st, err := f.run(func(o *Options) { o.Tuning.CacheCapacity = 0; o.DryRun = true })
	rtest.OK(t, err)
	rtest.Equal(t, "cache lookups with cache off", int64(0), st.CacheLookups)
	st2, err := f.run(func(o *Options) { o.Tuning.CacheCapacity = 1024 })
	rtest.OK(t, err)
	checkCounters(t, *st, *st2)
	if st2.CacheHits == 0 {
		t.Error("the cache found no duplicate in two snapshots sharing chunks")
	}
}

// TestConcurrencyDeterministic: the strictly sequential path (one worker),
// the adaptive pool and a wide fixed one produce the same status on the
// same store.
func TestConcurrencyDeterministic(t *testing.T) {
	f := newFixture(t)
	ps, _ := buildAccountingStore(f)
	// Spread chunks over many prefix dirs and 20 more indexes, each written
	// once: the even chunks referenced (one per index), the odd ones garbage.
	const extra = 40
	for i := range extra {
		d, _ := f.chunk(700+i, 72*time.Hour)
		if i%2 == 0 {
			f.snapshot(fmt.Sprintf("host/h%02d/2025-01-01T00:00:00Z", i/2), d)
		}
	}
	seq, err := f.run(func(o *Options) { o.Tuning.Concurrency = 1; o.DryRun = true })
	rtest.OK(t, err)
	adaptive, err := f.run(func(o *Options) { o.Tuning.Concurrency = 0; o.DryRun = true })
	rtest.OK(t, err)
	checkCounters(t, *seq, *adaptive)
	par, err := f.run(func(o *Options) { o.Tuning.Concurrency = 16 })
	rtest.OK(t, err)
	checkCounters(t, *seq, *par)
	rtest.Equal(t, "index files", seq.IndexFileCount, par.IndexFileCount)
	rtest.Equal(t, "index data bytes", seq.IndexDataBytes, par.IndexDataBytes)
	rtest.Equal(t, "missing", seq.MissingChunks, par.MissingChunks)
	want := expected(ps, zeroChunkSize(t, f))
	rtest.Equal(t, "index files", int64(1+extra/2), par.IndexFileCount)
	rtest.Equal(t, "removed (the table's and the odd extra chunks)", want.RemovedChunks+extra/2, par.RemovedChunks)
	rtest.Equal(t, "disk chunks (the table's and the even extra chunks)", want.DiskChunks+extra/2, par.DiskChunks)
}
