package gc

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/journal"
)

// TestJournalRecordsRemovals: on real ext4 a run that removes chunks writes
// one complete journal holding exactly the removed chunks, each with its
// size on disk, an atime before the run's min_atime and the bad flag for a
// bad copy; the file is 0640 in .chunkgc/journal.
func TestJournalRecordsRemovals(t *testing.T) {
	f := newFixture(t)
	used, _ := f.chunk(1000, 72*time.Hour)
	f.snapshot("vm/100/2025-01-01T00:00:00Z", used)
	want := map[blob.Digest]int64{}
	for range 5 {
		d, size := f.chunk(2000, 72*time.Hour)
		want[d] = size
	}
	bad := f.badCopy(used, 0, 500, 72*time.Hour)
	var badSize int64
	if fi, err := os.Stat(bad); err == nil {
		badSize = fi.Size()
	}

	st, err := f.run()
	rtest.OK(t, err)
	rtest.Equal(t, "removed", int64(5), st.RemovedChunks)
	rtest.Equal(t, "removed bad", int64(1), st.RemovedBad)
	if st.JournalRun == "" {
		t.Fatal("a run that removed chunks names no journal")
	}
	dir := JournalPath(f.base)
	path := filepath.Join(dir, journal.FileName(st.JournalRun))
	dirfd := rtest.DirFD(t, dir)
	j, err := journal.ReadFile(dirfd, dir, journal.FileName(st.JournalRun))
	rtest.OK(t, err)
	rtest.Equal(t, "complete", true, j.Complete())
	rtest.Equal(t, "header min-atime", st.MinAtime, j.Header.MinAtime)
	rtest.Equal(t, "trailer records", int64(6), j.Trailer.Records)
	rtest.Equal(t, "trailer bytes", st.RemovedBytes, j.Trailer.Bytes)
	rtest.Equal(t, "records", 6, len(j.Records))
	for _, r := range j.Records {
		if r.Atime/1e9 >= st.MinAtime {
			t.Errorf("%s: atime %d not before min-atime %d", r.Digest, r.Atime/1e9, st.MinAtime)
		}
		if r.Flags&journal.Bad != 0 {
			rtest.Equal(t, "bad copy's digest", used, r.Digest)
			rtest.Equal(t, "bad copy's size", uint64(badSize), r.Size)
			continue
		}
		size, ok := want[r.Digest]
		if !ok {
			t.Errorf("journal lists %s, which was not garbage", r.Digest)
		}
		rtest.Equal(t, "size of "+r.Digest.String(), uint64(size), r.Size)
		delete(want, r.Digest)
	}
	rtest.Equal(t, "garbage the journal misses", 0, len(want))
	var stx unix.Stat_t
	rtest.OK(t, unix.Lstat(path, &stx))
	rtest.Equal(t, "journal mode", uint32(0o640), stx.Mode&0o7777)

	// A run that removes nothing, and a dry run, write none.
	again, err := f.run()
	rtest.OK(t, err)
	rtest.Equal(t, "journal of a run that removed nothing", "", again.JournalRun)
	f.chunk(100, 72*time.Hour)
	dry, err := f.run(func(o *Options) { o.DryRun = true })
	rtest.OK(t, err)
	rtest.Equal(t, "journal of a dry run", "", dry.JournalRun)
	infos, err := journal.List(nil, dirfd, dir)
	rtest.OK(t, err)
	rtest.Equal(t, "journals", 1, len(infos))
}

// TestJournalKeep: gc-journal-keep bounds the journals; 0 writes none.
func TestJournalKeep(t *testing.T) {
	f := newFixture(t)
	var runs []string
	for i := range 4 {
		f.chunk(100+i, 72*time.Hour)
		st, err := f.run(func(o *Options) { o.Tuning.JournalKeep = 2 })
		rtest.OK(t, err)
		runs = append(runs, st.JournalRun)
		time.Sleep(time.Second) // run ids are per second and pid
	}
	infos, err := journal.List(nil, rtest.DirFD(t, JournalPath(f.base)), JournalPath(f.base))
	rtest.OK(t, err)
	rtest.Equal(t, "journals kept", 2, len(infos))
	rtest.Equal(t, "oldest kept", runs[2], infos[0].Header.RunID)
	rtest.Equal(t, "newest kept", runs[3], infos[1].Header.RunID)

	f.chunk(200, 72*time.Hour)
	st, err := f.run(func(o *Options) { o.Tuning.JournalKeep = 0 })
	rtest.OK(t, err)
	rtest.Equal(t, "removed without a journal", int64(1), st.RemovedChunks)
	rtest.Equal(t, "journal with gc-journal-keep=0", "", st.JournalRun)
}

// TestJournalSymlinkNotFollowed: a .chunkgc planted as a symlink (the
// backup user owns the base) is not followed: nothing is written where it
// points, the run warns and removes its garbage all the same.
func TestJournalSymlinkNotFollowed(t *testing.T) {
	f := newFixture(t)
	elsewhere := t.TempDir()
	rtest.OK(t, os.Symlink(elsewhere, filepath.Join(f.base, StateDir)))
	g, _ := f.chunk(100, 72*time.Hour)
	st, err := f.run()
	rtest.OK(t, err)
	rtest.Equal(t, "removed", int64(1), st.RemovedChunks)
	rtest.Equal(t, "garbage gone", false, f.exists(f.store.ChunkPath(g)))
	rtest.Equal(t, "journal run", "", st.JournalRun)
	ents, err := os.ReadDir(elsewhere)
	rtest.OK(t, err)
	rtest.Equal(t, "entries written through the symlink", 0, len(ents))
}
