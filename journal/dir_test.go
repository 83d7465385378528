package journal

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
)

// names returns the Names of infos.
func names(infos []Info) []string {
	var ns []string
	for _, i := range infos {
		ns = append(ns, i.Name)
	}
	return ns
}

// listDir returns the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	rtest.OK(t, err)
	var ns []string
	for _, e := range ents {
		ns = append(ns, e.Name())
	}
	return ns
}

// TestListAndFind: List orders journals by start time then run ID, the
// unreadable first, reports incomplete and corrupt ones; Find finds a
// digest in the runs that removed it.
func TestListAndFind(t *testing.T) {
	dir := t.TempDir()
	writeJournal(t, dir, "run-b", 200, recs(0, 10), true)
	writeJournal(t, dir, "run-a", 200, recs(5, 8), true) // same start: by run ID
	writeJournal(t, dir, "run-c", 100, recs(9, 12), false)
	torn := writeJournal(t, dir, "run-d", 300, recs(0, 2000), true)
	data, err := os.ReadFile(torn)
	rtest.OK(t, err)
	rtest.OK(t, os.WriteFile(torn, data[:len(data)-30], 0o640)) // into the trailer
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "garbage.journal"), []byte("no"), 0o640))
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o640))
	rtest.OK(t, os.WriteFile(filepath.Join(dir, ".hidden.journal"), []byte("x"), 0o640))
	rtest.OK(t, os.Symlink("run-a.journal", filepath.Join(dir, "link.journal")))

	infos, err := List(dir)
	rtest.OK(t, err)
	rtest.Equal(t, "order", []string{"garbage.journal", "link.journal", "run-c.journal", "run-a.journal", "run-b.journal", "run-d.journal"}, names(infos))
	rtest.ErrorIs(t, infos[0].Err, ErrBadHeader)
	rtest.ErrorIs(t, infos[1].Err, ErrNotRegular)
	type state struct {
		complete bool
		records  int64
		torn     bool
	}
	var got []state
	for _, i := range infos[2:] {
		if i.Err != nil {
			t.Fatalf("%s: %v", i.Name, i.Err)
		}
		got = append(got, state{i.Complete(), i.Records, errors.Is(i.Tail, ErrCorrupt)})
	}
	rtest.Equal(t, "states", []state{{false, 3, false}, {true, 3, false}, {true, 10, false}, {false, 2000, true}}, got)

	hits, err := Find(dir, rec(9).Digest)
	rtest.ErrorIs(t, err, ErrBadHeader) // garbage.journal is reported
	rtest.ErrorIs(t, err, ErrNotRegular)
	var runs []string
	for _, h := range hits {
		if h.Record != rec(9) {
			t.Errorf("hit in %s: %+v", h.Info.Name, h.Record)
		}
		runs = append(runs, h.Info.Header.RunID)
	}
	rtest.Equal(t, "runs that removed rec(9)", []string{"run-c", "run-b", "run-d"}, runs)
	hits, _ = Find(dir, rec(1999).Digest)
	if len(hits) != 1 || hits[0].Info.Name != "run-d.journal" || hits[0].Info.Complete() {
		t.Errorf("rec(1999): hits %+v", hits)
	}
	hits, _ = Find(dir, rec(5000).Digest)
	rtest.Equal(t, "hits of a digest no run removed", 0, len(hits))

	_, err = List(filepath.Join(dir, "missing"))
	rtest.ErrorIs(t, err, os.ErrNotExist)
}

// TestPrune: Prune keeps the newest N, never the current run's, removes
// unreadable journals first, leaves other entries alone and removes nothing
// when there are no more than N.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	dirfd := rtest.DirFD(t, dir)
	for i, id := range []string{"r1", "r2", "r3", "r4", "r5"} {
		writeJournal(t, dir, id, int64(1000+i), recs(i, i+1), i%2 == 0)
	}
	others := []string{".hidden.journal", "dir.journal", "link.journal", "notes.txt"}
	rtest.OK(t, os.WriteFile(filepath.Join(dir, ".hidden.journal"), nil, 0o640))
	rtest.OK(t, os.Mkdir(filepath.Join(dir, "dir.journal"), 0o750))
	rtest.OK(t, os.Symlink("r1.journal", filepath.Join(dir, "link.journal")))
	rtest.OK(t, os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o640))
	journals := func(ids ...string) []string {
		ns := slices.Clone(others)
		for _, id := range ids {
			ns = append(ns, FileName(id))
		}
		slices.Sort(ns)
		return ns
	}

	n, err := Prune(fsys.Real{}, dirfd, dir, 5, "")
	rtest.OK(t, err)
	rtest.Equal(t, "removed of 5 keeping 5", 0, n)
	n, err = Prune(fsys.Real{}, dirfd, dir, 10, "r5")
	rtest.OK(t, err)
	rtest.Equal(t, "removed of 5 keeping 10", 0, n)

	// r1, the oldest, is the run being written: it stays.
	n, err = Prune(fsys.Real{}, dirfd, dir, 3, "r1")
	rtest.OK(t, err)
	rtest.Equal(t, "removed keeping 3", 1, n)
	rtest.Equal(t, "left keeping 3", journals("r1", "r3", "r4", "r5"), listDir(t, dir))

	rtest.OK(t, os.WriteFile(filepath.Join(dir, "bad.journal"), []byte("torn"), 0o640))
	n, err = Prune(fsys.Real{}, dirfd, dir, 3, "")
	rtest.OK(t, err)
	rtest.Equal(t, "removed with a bad one", 2, n)
	rtest.Equal(t, "left with a bad one", journals("r3", "r4", "r5"), listDir(t, dir))

	for _, keep := range []int{0, -1} {
		n, err = Prune(fsys.Real{}, dirfd, dir, keep, "")
		rtest.OK(t, err)
		rtest.Equal(t, "left keeping <1", journals("r5"), listDir(t, dir))
		_ = n
	}
}

// TestPruneFault: a journal that cannot be removed is reported, naming
// it, and the others are removed all the same.
func TestPruneFault(t *testing.T) {
	dir := t.TempDir()
	for i, id := range []string{"r1", "r2", "r3"} {
		writeJournal(t, dir, id, int64(i), nil, true)
	}
	set := faultfs.New(t, nil)
	set.Add(faultfs.Fault{Op: faultfs.Unlinkat, Name: "r1.journal", Err: os.ErrPermission})
	n, err := Prune(set, rtest.DirFD(t, dir), dir, 1, "")
	rtest.ErrorAt(t, "Prune", err, filepath.Join(dir, "r1.journal"), os.ErrPermission)
	rtest.Equal(t, "removed", 1, n)
	rtest.Equal(t, "left", []string{"r1.journal", "r3.journal"}, listDir(t, dir))
}
