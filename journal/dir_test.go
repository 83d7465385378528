package journal

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
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

	dirfd := rtest.DirFD(t, dir)
	infos, err := List(fsys.Real{}, dirfd, dir)
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

	hits, err := Find(nil, dirfd, dir, rec(9).Digest)
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
	hits, _ = Find(nil, dirfd, dir, rec(1999).Digest)
	if len(hits) != 1 || hits[0].Info.Name != "run-d.journal" || hits[0].Info.Complete() {
		t.Errorf("rec(1999): hits %+v", hits)
	}
	hits, _ = Find(nil, dirfd, dir, rec(5000).Digest)
	rtest.Equal(t, "hits of a digest no run removed", 0, len(hits))

	// A directory removed while open lists as ENOENT, naming it.
	gone := filepath.Join(dir, "missing")
	rtest.OK(t, os.Mkdir(gone, 0o750))
	gonefd := rtest.DirFD(t, gone)
	rtest.OK(t, os.Remove(gone))
	_, err = List(nil, gonefd, gone)
	rtest.ErrorAt(t, "List of a removed directory", err, gone, os.ErrNotExist)
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
	rtest.Equal(t, "left keeping 3", journals("r1", "r3", "r4", "r5"), rtest.DirNames(t, dir))

	rtest.OK(t, os.WriteFile(filepath.Join(dir, "bad.journal"), []byte("torn"), 0o640))
	n, err = Prune(fsys.Real{}, dirfd, dir, 3, "")
	rtest.OK(t, err)
	rtest.Equal(t, "removed with a bad one", 2, n)
	rtest.Equal(t, "left with a bad one", journals("r3", "r4", "r5"), rtest.DirNames(t, dir))

	for _, keep := range []int{0, -1} {
		n, err = Prune(fsys.Real{}, dirfd, dir, keep, "")
		rtest.OK(t, err)
		rtest.Equal(t, "left keeping <1", journals("r5"), rtest.DirNames(t, dir))
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
	rtest.Equal(t, "left", []string{"r1.journal", "r3.journal"}, rtest.DirNames(t, dir))
}

// TestReadAtDirFD: ReadFile, List and Find resolve names from the
// directory fd, not from its path: once the directory is renamed (and a
// different one, holding another journal, put at the old path) they still
// read the journals of the fd, and their errors name the path they were
// given.
func TestReadAtDirFD(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "journal")
	rtest.OK(t, os.Mkdir(dir, 0o750))
	writeJournal(t, dir, "mine", 100, recs(0, 3), true)
	dirfd := rtest.DirFD(t, dir)
	rtest.OK(t, os.Rename(dir, filepath.Join(root, "moved")))
	rtest.OK(t, os.Mkdir(dir, 0o750))
	writeJournal(t, dir, "other", 200, recs(3, 9), true)

	j, err := ReadFile(dirfd, dir, FileName("mine"))
	rtest.OK(t, err)
	rtest.Equal(t, "path", filepath.Join(dir, "mine.journal"), j.Path)
	rtest.Equal(t, "records", recs(0, 3), j.Records)
	infos, err := List(nil, dirfd, dir)
	rtest.OK(t, err)
	rtest.Equal(t, "listed", []string{"mine.journal"}, names(infos))
	hits, err := Find(fsys.Real{}, dirfd, dir, rec(4).Digest)
	rtest.OK(t, err)
	rtest.Equal(t, "hits of a record of the other directory", 0, len(hits))

	_, err = ReadFile(dirfd, dir, FileName("other"))
	rtest.ErrorAt(t, "ReadFile of a journal only the path has", err, filepath.Join(dir, "other.journal"), fs.ErrNotExist)
}

// TestReadRefusesNonRegular: a symlink in a journal's place (to a valid
// journal elsewhere) is not followed, and a FIFO (no writer ever opens it)
// is not blocked on: ReadFile fails matching ErrNotRegular (and, for the
// symlink, nofollow.ErrSymlink), List lists the entry unreadable, Find
// finds nothing in it but the hit in the real journal beside it, and Prune
// leaves it, and the link's target, alone. A hang here is the failure.
func TestReadRefusesNonRegular(t *testing.T) {
	tests := []struct {
		name  string
		plant func(t *testing.T, path, elsewhere string)
		want  []error
	}{
		{"symlink", func(t *testing.T, path, elsewhere string) {
			rtest.OK(t, os.Symlink(writeJournal(t, elsewhere, "victim", 50, recs(0, 5), true), path))
		}, []error{ErrNotRegular, nofollow.ErrSymlink}},
		{"FIFO", func(t *testing.T, path, _ string) {
			rtest.OK(t, unix.Mkfifo(path, 0o640))
		}, []error{ErrNotRegular}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, elsewhere := t.TempDir(), t.TempDir()
			writeJournal(t, dir, "real", 100, recs(0, 2), true)
			bad := filepath.Join(dir, "bad.journal")
			tt.plant(t, bad, elsewhere)
			outside := rtest.DirNames(t, elsewhere)
			dirfd := rtest.DirFD(t, dir)

			j, err := ReadFile(dirfd, dir, "bad.journal")
			rtest.ErrorAt(t, "ReadFile", err, bad, tt.want...)
			if j != nil {
				t.Fatalf("ReadFile returned %+v", j)
			}
			infos, err := List(nil, dirfd, dir)
			rtest.OK(t, err)
			rtest.Equal(t, "listed", []string{"bad.journal", "real.journal"}, names(infos))
			if in := infos[0]; !errors.Is(in.Err, ErrNotRegular) || in.Records != 0 || in.Header.RunID != "" {
				t.Fatalf("List: %+v", in)
			}
			rtest.Equal(t, "records of the real one", int64(2), infos[1].Records)
			hits, err := Find(nil, dirfd, dir, rec(1).Digest)
			rtest.ErrorIs(t, err, ErrNotRegular)
			if len(hits) != 1 || hits[0].Info.Name != "real.journal" {
				t.Fatalf("Find: %+v", hits)
			}
			n, err := Prune(nil, dirfd, dir, 1, "")
			rtest.OK(t, err)
			rtest.Equal(t, "pruned", 0, n)
			rtest.Equal(t, "left", []string{"bad.journal", "real.journal"}, rtest.DirNames(t, dir))
			rtest.Equal(t, "left elsewhere", outside, rtest.DirNames(t, elsewhere))
		})
	}
}
