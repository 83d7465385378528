package gc

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/journal"
)

// quarantined returns the path a chunk file (name, e.g. a digest or
// <digest>.0.bad) has in run's quarantine dir.
func (f *fixture) quarantined(run, name string) string {
	return filepath.Join(QuarantinePath(f.base), run, name[:4], name)
}

// fileSum hashes the file at path, reading it with O_NOATIME: a read
// under relatime moves an atime older than a day, which would make
// garbage look used.
func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOATIME, 0)
	rtest.OK(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	rtest.OK(t, err)
	return [32]byte(h.Sum(nil))
}

// withQuarantine sets gc-quarantine-hours, and turns the atime probe off:
// these tests are about where garbage goes (TestSelfHeal keeps it on).
// readJournal reads run's deletion journal.
func (f *fixture) readJournal(run string) (*journal.Journal, error) {
	dir := JournalPath(f.base)
	return journal.ReadFile(rtest.DirFD(f.t, dir), dir, journal.FileName(run))
}

func withQuarantine(hours int) func(*Options) {
	return func(o *Options) { o.Tuning.QuarantineHours, o.Tuning.AtimeSafetyCheck = hours, false }
}

// TestQuarantineTable: on real ext4, with gc-quarantine-hours set the sweep
// moves every garbage chunk and bad copy into .chunkgc/quarantine/<run>/
// <xxxx>/ (byte-identical, same inode) instead of unlinking it, counts it
// as removed and quarantined, and journals it as quarantined; with 0 it
// unlinks as PBS does and makes no quarantine dir; a dry run moves nothing.
func TestQuarantineTable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		hours  int
		dryRun bool
	}{
		{name: "off", hours: 0},
		{name: "on", hours: 24},
		{name: "on dry run", hours: 24, dryRun: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			used, _ := f.chunk(1000, 72*time.Hour)
			f.snapshot("vm/100/2025-01-01T00:00:00Z", used)
			garbage := map[blob.Digest][32]byte{}
			inodes := map[blob.Digest]uint64{}
			for range 4 {
				d, _ := f.chunk(3000, 72*time.Hour)
				path := f.store.ChunkPath(d)
				garbage[d] = fileSum(t, path)
				var st unix.Stat_t
				rtest.OK(t, unix.Lstat(path, &st))
				inodes[d] = st.Ino
			}
			bad := f.badCopy(used, 0, 500, 72*time.Hour)

			st, err := f.run(withQuarantine(tc.hours), func(o *Options) { o.DryRun = tc.dryRun })
			rtest.OK(t, err)
			rtest.Equal(t, "removed", int64(4), st.RemovedChunks)
			rtest.Equal(t, "removed bad", int64(1), st.RemovedBad)
			rtest.Equal(t, "used chunk", true, f.exists(f.store.ChunkPath(used)))
			_, qerr := os.Lstat(QuarantinePath(f.base))
			switch {
			case tc.hours == 0:
				rtest.Equal(t, "quarantined", int64(0), st.QuarantinedChunks)
				rtest.Equal(t, "quarantine dir", true, errors.Is(qerr, os.ErrNotExist))
				for d := range garbage {
					rtest.Equal(t, "garbage "+d.String(), false, f.exists(f.store.ChunkPath(d)))
				}
				return
			case tc.dryRun:
				rtest.Equal(t, "quarantine run of a dry run", "", st.QuarantineRun)
				rtest.Equal(t, "quarantine dir after a dry run", true, errors.Is(qerr, os.ErrNotExist))
				for d := range garbage {
					rtest.Equal(t, "garbage "+d.String()+" after a dry run", true, f.exists(f.store.ChunkPath(d)))
				}
				return
			}
			rtest.Equal(t, "quarantined", int64(5), st.QuarantinedChunks)
			rtest.Equal(t, "quarantined bytes", st.RemovedBytes, st.QuarantinedBytes)
			rtest.Equal(t, "quarantine run", st.JournalRun, st.QuarantineRun)
			for d, sum := range garbage {
				rtest.Equal(t, "garbage "+d.String()+" in .chunks", false, f.exists(f.store.ChunkPath(d)))
				q := f.quarantined(st.QuarantineRun, d.String())
				rtest.Equal(t, "content of "+q, sum, fileSum(t, q))
				var qs unix.Stat_t
				rtest.OK(t, unix.Lstat(q, &qs))
				rtest.Equal(t, "inode of "+q, inodes[d], qs.Ino)
			}
			rtest.Equal(t, "bad copy in .chunks", false, f.exists(bad))
			rtest.Equal(t, "bad copy quarantined", true, f.exists(f.quarantined(st.QuarantineRun, filepath.Base(bad))))
			var fi unix.Stat_t
			rtest.OK(t, unix.Lstat(filepath.Join(QuarantinePath(f.base), st.QuarantineRun), &fi))
			rtest.Equal(t, "run dir mode", uint32(0o750), fi.Mode&0o7777)

			j, err := f.readJournal(st.JournalRun)
			rtest.OK(t, err)
			rtest.Equal(t, "journal records", 5, len(j.Records))
			for _, r := range j.Records {
				rtest.Equal(t, "quarantined flag of "+r.Digest.String(), true, r.Flags&journal.Quarantined != 0)
			}
		})
	}
}

// TestQuarantineRestore: quarantine, then restore, brings every chunk and
// bad copy back byte-identical with a fresh atime (a run right after
// removes nothing), and removes the emptied run dir. Selecting by digest
// restores only those; an unknown digest is reported, an unknown run is
// an error.
func TestQuarantineRestore(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	used, _ := f.chunk(1000, 72*time.Hour)
	f.snapshot("vm/100/2025-01-01T00:00:00Z", used)
	sums := map[string][32]byte{}
	var garbage []blob.Digest
	for range 6 {
		d, _ := f.chunk(2000, 72*time.Hour)
		garbage = append(garbage, d)
		sums[f.store.ChunkPath(d)] = fileSum(t, f.store.ChunkPath(d))
	}
	bad := f.badCopy(used, 1, 700, 72*time.Hour)
	sums[bad] = fileSum(t, bad)

	st, err := f.run(withQuarantine(24))
	rtest.OK(t, err)
	rtest.Equal(t, "quarantined", int64(7), st.QuarantinedChunks)
	run := st.QuarantineRun

	ctx := context.Background()
	_, err = Restore(ctx, f.store, RestoreOptions{Run: "20200101T000000Z-1"})
	rtest.Equal(t, "unknown run", true, errors.Is(err, ErrNoSuchRun))
	_, err = Restore(ctx, f.store, RestoreOptions{Run: "../x"})
	rtest.Equal(t, "bad run id refused", true, err != nil)

	unknown := blob.Digest{0xab, 0xcd}
	before := time.Now().Add(-time.Second)
	rep, err := Restore(ctx, f.store, RestoreOptions{Run: run, Digests: []blob.Digest{garbage[0], garbage[1], unknown}})
	rtest.OK(t, err)
	rtest.Equal(t, "restored by digest", int64(2), rep.Restored)
	rtest.Equal(t, "not found", []string{unknown.String()}, rep.NotFound)
	rtest.Equal(t, "runs", []string{run}, rep.Runs)
	rtest.Equal(t, "not asked for stays quarantined", true, f.exists(f.quarantined(run, garbage[2].String())))

	rep, err = Restore(ctx, f.store, RestoreOptions{})
	rtest.OK(t, err)
	rtest.Equal(t, "restored the rest", int64(5), rep.Restored)
	for path, sum := range sums {
		rtest.Equal(t, "content of "+path, sum, fileSum(t, path))
		var stx unix.Stat_t
		rtest.OK(t, unix.Lstat(path, &stx))
		if time.Unix(stx.Atim.Unix()).Before(before) {
			t.Errorf("%s: atime %v not refreshed by restore", path, time.Unix(stx.Atim.Unix()))
		}
	}
	_, err = os.Lstat(filepath.Join(QuarantinePath(f.base), run))
	rtest.Equal(t, "emptied run dir removed", true, errors.Is(err, os.ErrNotExist))

	again, err := f.run(withQuarantine(24))
	rtest.OK(t, err)
	rtest.Equal(t, "removed after restore", int64(0), again.RemovedChunks+again.RemovedBad)
}

// TestQuarantinePurge: a run purges the quarantine's runs older than
// gc-quarantine-hours (from their start), journals each file as purged and
// counts it; younger runs, and every run with quarantine off, stay.
func TestQuarantinePurge(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	used, _ := f.chunk(1000, 72*time.Hour)
	f.snapshot("vm/100/2025-01-01T00:00:00Z", used)
	for range 3 {
		f.chunk(1500, 72*time.Hour)
	}
	first, err := f.run(withQuarantine(24))
	rtest.OK(t, err)
	rtest.Equal(t, "quarantined", int64(3), first.QuarantinedChunks)
	// Age the run by its name, the purge's clock (faking the GC's clock
	// instead would make the fixture's chunks look old too).
	age := func(from string, d time.Duration) string {
		to := time.Now().Add(-d).UTC().Format(runIDLayout) + "-1"
		rtest.OK(t, os.Rename(filepath.Join(QuarantinePath(f.base), from), filepath.Join(QuarantinePath(f.base), to)))
		return to
	}
	run := age(first.QuarantineRun, 2*time.Hour)
	rundir := filepath.Join(QuarantinePath(f.base), run)
	for _, hours := range []int{24, 0} {
		st, err := f.run(withQuarantine(hours))
		rtest.OK(t, err)
		rtest.Equal(t, "purged within the period or with quarantine off", int64(0), st.PurgedChunks)
		rtest.Equal(t, "run dir", true, f.exists(rundir))
	}
	run = age(run, 25*time.Hour)
	rundir = filepath.Join(QuarantinePath(f.base), run)
	dry, err := f.run(withQuarantine(24), func(o *Options) { o.DryRun = true })
	rtest.OK(t, err)
	rtest.Equal(t, "dry run: would purge", int64(3), dry.PurgedChunks)
	rtest.Equal(t, "dry run: run dir", true, f.exists(rundir))

	st, err := f.run(withQuarantine(24))
	rtest.OK(t, err)
	rtest.Equal(t, "purged", int64(3), st.PurgedChunks)
	rtest.Equal(t, "purged bytes", first.QuarantinedBytes, st.PurgedBytes)
	rtest.Equal(t, "purged run dir", false, f.exists(rundir))
	j, err := f.readJournal(st.JournalRun)
	rtest.OK(t, err)
	rtest.Equal(t, "purge records", 3, len(j.Records))
	for _, r := range j.Records {
		rtest.Equal(t, "purged flag", true, r.Flags&journal.Purged != 0)
	}
	rtest.Equal(t, "used chunk", true, f.exists(f.store.ChunkPath(used)))
}

// TestSelfHeal: a referenced chunk moved into the quarantine by hand (as a
// GC bug, a skewed clock or a lying filesystem would) is moved back by
// phase 1 before it is touched, counted in healed-chunks, and is in .chunks
// afterwards, byte-identical — with quarantine on or off. The store
// invariant (checked at the end) holds.
func TestSelfHeal(t *testing.T) {
	t.Parallel()
	for _, hours := range []int{0, 24} {
		f := newFixture(t)
		used, _ := f.chunk(1000, 72*time.Hour)
		other, _ := f.chunk(1200, 72*time.Hour)
		f.snapshot("vm/100/2025-01-01T00:00:00Z", used, other)
		path := f.store.ChunkPath(used)
		sum := fileSum(t, path)
		q := f.quarantined("20250101T000000Z-7", used.String())
		rtest.OK(t, os.MkdirAll(filepath.Dir(q), 0o750))
		rtest.OK(t, os.Rename(path, q))

		st, err := f.run(withQuarantine(hours), func(o *Options) { o.Tuning.AtimeSafetyCheck = true })
		rtest.OK(t, err)
		rtest.Equal(t, "healed", int64(1), st.HealedChunks)
		rtest.Equal(t, "missing", int64(0), st.MissingChunks)
		rtest.Equal(t, "content", sum, fileSum(t, path))
		rtest.Equal(t, "left in quarantine", false, f.exists(q))
		rtest.Equal(t, "removed", int64(0), st.RemovedChunks)
	}
}

// TestQuarantineSymlinkNotFollowed: a .chunkgc/quarantine planted as a
// symlink (the backup user owns the base) is never followed: a run with
// quarantine on stops before its first removal (the garbage stays, nothing
// is written where the link points), heal does not take a chunk from
// there, and restore refuses it.
func TestQuarantineSymlinkNotFollowed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	used, _ := f.chunk(1000, 72*time.Hour)
	f.snapshot("vm/100/2025-01-01T00:00:00Z", used)
	g, _ := f.chunk(1000, 72*time.Hour)
	elsewhere := t.TempDir()
	rtest.OK(t, os.MkdirAll(filepath.Join(f.base, StateDir), 0o750))
	rtest.OK(t, os.Symlink(elsewhere, QuarantinePath(f.base)))
	// A chunk file where the link points, for restore and heal to refuse.
	planted := filepath.Join(elsewhere, "20250101T000000Z-7", g.String()[:4], g.String())
	rtest.OK(t, os.MkdirAll(filepath.Dir(planted), 0o750))
	rtest.OK(t, os.WriteFile(planted, []byte("not a chunk"), 0o640))

	_, err := f.run(withQuarantine(24))
	if err == nil {
		t.Fatal("a run with a symlinked quarantine dir succeeded")
	}
	rtest.Equal(t, "garbage kept", true, f.exists(f.store.ChunkPath(g)))
	_, err = Restore(context.Background(), f.store, RestoreOptions{})
	if err == nil {
		t.Fatal("restore from a symlinked quarantine dir succeeded")
	}
	rtest.Equal(t, "planted file stays", true, f.exists(planted))
	ents, err := os.ReadDir(elsewhere)
	rtest.OK(t, err)
	rtest.Equal(t, "entries where the link points", 1, len(ents))
}
