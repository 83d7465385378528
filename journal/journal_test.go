package journal

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
)

// newWriter creates the journal of run id in dir with options o.
func newWriter(t *testing.T, dir, id string, start int64, o options) *Writer {
	t.Helper()
	w, err := create(fsys.Real{}, rtest.DirFD(t, dir), dir, testHeader(id, start), fsys.Keep, o)
	rtest.OK(t, err)
	return w
}

// readPath is [ReadFile] of the journal at path, its directory opened for
// the call.
func readPath(path string) (*Journal, error) {
	dir := filepath.Dir(path)
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(dirfd)
	return ReadFile(dirfd, dir, filepath.Base(path))
}

// writeJournal writes a journal of run id with records n and closes it with
// a trailer when complete is set, aborts it otherwise.
func writeJournal(t *testing.T, dir, id string, start int64, recs []Record, complete bool) string {
	t.Helper()
	w := newWriter(t, dir, id, start, defaultOptions)
	for _, r := range recs {
		rtest.OK(t, w.Add(r))
	}
	if complete {
		rtest.OK(t, w.Close(Trailer{Records: int64(len(recs)), EndTime: start + 60}))
	} else {
		rtest.OK(t, w.Abort())
	}
	return w.Path()
}

func recs(from, to int) []Record {
	var rs []Record
	for i := from; i < to; i++ {
		rs = append(rs, rec(i))
	}
	return rs
}

func sortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int { return bytes.Compare(a.Digest[:], b.Digest[:]) })
}

// TestRoundTrip: 8 goroutines add records of every flag combination into
// many frames; ReadFile returns exactly that multiset and the trailer.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, dir, "20261202T170102Z-12345", 1_790_000_000, defaultOptions)
	const workers, per = 8, 4000
	var want []Record
	var wg sync.WaitGroup
	for g := range workers {
		rs := recs(g*100_000, g*100_000+per)
		rs = append(rs, rs[0]) // a digest twice: a multiset, not a set
		want = append(want, rs...)
		wg.Go(func() {
			for _, r := range rs {
				if err := w.Add(r); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	rtest.Equal(t, "added", int64(len(want)), w.Added())
	tr := Trailer{Records: int64(len(want)), Bytes: 12345, EndTime: 1_790_000_100, Err: ""}
	rtest.OK(t, w.Close(tr))

	j, err := readPath(w.Path())
	rtest.OK(t, err)
	rtest.Equal(t, "header", testHeader("20261202T170102Z-12345", 1_790_000_000), j.Header)
	rtest.Equal(t, "trailer", &tr, j.Trailer)
	rtest.Equal(t, "tail", nil, j.Tail)
	if !j.Complete() {
		t.Fatal("a closed journal is not complete")
	}
	got := j.Records
	sortRecords(got)
	sortRecords(want)
	if !slices.Equal(want, got) {
		t.Fatalf("read %d records, want the %d written", len(got), len(want))
	}
	if frames := countFrames(t, w.Path()); frames < len(want)/flushRecords {
		t.Errorf("%d frames for %d records", frames, len(want))
	}
}

// frameEnds walks the frames of a journal (after the magic) and returns the
// offset after each and the records it holds.
func frameEnds(t *testing.T, data []byte) (ends []int, counts []int) {
	t.Helper()
	off := len(magic)
	for off+frameHeaderSize <= len(data) {
		plen := int(uint32(data[off+4]) | uint32(data[off+5])<<8 | uint32(data[off+6])<<16 | uint32(data[off+7])<<24)
		rlen := int(uint32(data[off+8]) | uint32(data[off+9])<<8 | uint32(data[off+10])<<16 | uint32(data[off+11])<<24)
		n := 0
		if data[off] == kindRecords {
			n = rlen / recordSize
		}
		off += frameHeaderSize + plen
		ends, counts = append(ends, off), append(counts, n)
	}
	if off != len(data) {
		t.Fatalf("frames end at %d, the file at %d", off, len(data))
	}
	return ends, counts
}

func countFrames(t *testing.T, path string) int {
	data, err := os.ReadFile(path)
	rtest.OK(t, err)
	ends, _ := frameEnds(t, data)
	return len(ends)
}

// smallJournal writes a complete journal of 23 records in frames of 5 (the
// last of 3) and returns its bytes.
func smallJournal(t *testing.T, dir string) []byte {
	t.Helper()
	w := newWriter(t, dir, "small", 100, options{flushRecords: 5, flushInterval: time.Hour})
	for _, r := range recs(0, 23) {
		rtest.OK(t, w.Add(r))
	}
	rtest.OK(t, w.Close(Trailer{Records: 23, Bytes: 99, EndTime: 200, Err: "interrupted"}))
	data, err := os.ReadFile(w.Path())
	rtest.OK(t, err)
	return data
}

// TestTruncatedAndFlipped: a journal cut at every byte offset, and one with
// any one byte flipped, reads as the records of its intact frames, never
// panics, and fails only when the header is hit.
func TestTruncatedAndFlipped(t *testing.T) {
	dir := t.TempDir()
	data := smallJournal(t, dir)
	ends, counts := frameEnds(t, data)
	headerEnd := ends[0]
	all := recs(0, 23)
	path := filepath.Join(dir, "cut.journal")

	// intact returns the records of the frames ending at or before off.
	intact := func(off int) []Record {
		n := 0
		for i, e := range ends {
			if e <= off {
				n += counts[i]
			}
		}
		return all[:n]
	}
	check := func(what string, b []byte, wantRecs []Record, complete bool) {
		t.Helper()
		rtest.OK(t, os.WriteFile(path, b, 0o600))
		j, err := readPath(path)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !slices.Equal(wantRecs, j.Records) && len(wantRecs)+len(j.Records) > 0 {
			t.Fatalf("%s: read %d records, want %d", what, len(j.Records), len(wantRecs))
		}
		if j.Complete() != complete {
			t.Fatalf("%s: complete %v, want %v", what, j.Complete(), complete)
		}
	}

	for cut := 0; cut <= len(data); cut++ {
		if cut < headerEnd {
			rtest.OK(t, os.WriteFile(path, data[:cut], 0o600))
			_, err := readPath(path)
			rtest.ErrorAt(t, "cut in the header", err, path, ErrBadHeader)
			continue
		}
		check("cut at "+strconv.Itoa(cut), data[:cut], intact(cut), cut == len(data))
		j, _ := readPath(path)
		if atEnd := slices.Contains(ends, cut); atEnd != (j.Tail == nil) {
			t.Fatalf("cut at %d: tail %v at a frame end %v", cut, j.Tail, atEnd)
		}
		if j.Tail != nil {
			rtest.ErrorIs(t, j.Tail, ErrCorrupt)
		}
	}

	for pos := range data {
		b := slices.Clone(data)
		b[pos] ^= 0x5a
		if pos < headerEnd {
			rtest.OK(t, os.WriteFile(path, b, 0o600))
			_, err := readPath(path)
			rtest.ErrorAt(t, "flip in the header", err, path, ErrBadHeader)
			continue
		}
		frameStart := headerEnd
		for _, e := range ends {
			if e > pos {
				break
			}
			frameStart = e
		}
		check("flip at "+strconv.Itoa(pos), b, intact(frameStart), false)
	}

	// Bytes after the trailer: complete, but with a tail.
	rtest.OK(t, os.WriteFile(path, append(slices.Clone(data), 0), 0o600))
	j, err := readPath(path)
	rtest.OK(t, err)
	if !j.Complete() || !errors.Is(j.Tail, ErrCorrupt) {
		t.Errorf("data after the trailer: complete %v, tail %v", j.Complete(), j.Tail)
	}
}

// TestBadHeader: files that are no journal, or of another version, fail
// with ErrBadHeader naming the path; a symlink fails with ErrNotRegular.
func TestBadHeader(t *testing.T) {
	dir := t.TempDir()
	good := smallJournal(t, dir)
	tests := []struct {
		name string
		give []byte
	}{
		{"empty", nil},
		{"garbage", []byte("hello, world\n")},
		{"version 2", append([]byte("chunkgc-journal 2\n"), good[len(magic):]...)},
		{"magic only", []byte(magic)},
		{"records first", append([]byte(magic), good[frameEndsAt(t, good, 0):]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "bad.journal")
			rtest.OK(t, os.WriteFile(path, tt.give, 0o600))
			_, err := readPath(path)
			fe := rtest.ErrorAs[*FormatError](t, err, ErrBadHeader)
			rtest.Equal(t, "path", path, fe.Path)
			rtest.ErrorAt(t, "ReadFile", err, path, ErrBadHeader)
		})
	}
	link := filepath.Join(dir, "link.journal")
	rtest.OK(t, os.Symlink(filepath.Join(dir, "small.journal"), link))
	_, err := readPath(link)
	rtest.ErrorIs(t, err, ErrNotRegular)
}

// frameEndsAt returns the end of frame i of a journal.
func frameEndsAt(t *testing.T, data []byte, i int) int {
	ends, _ := frameEnds(t, data)
	return ends[i]
}

// TestAbortAndClose: Abort leaves a readable incomplete journal and is
// idempotent; Close leaves a complete one; both end the Writer.
func TestAbortAndClose(t *testing.T) {
	dir := t.TempDir()
	w := newWriter(t, dir, "aborted", 10, defaultOptions)
	for _, r := range recs(0, 3000) {
		rtest.OK(t, w.Add(r))
	}
	rtest.OK(t, w.Abort())
	rtest.OK(t, w.Abort())
	rtest.ErrorIs(t, w.Add(rec(1)), ErrClosed)
	rtest.ErrorIs(t, w.Close(Trailer{}), ErrClosed)
	j, err := readPath(w.Path())
	rtest.OK(t, err)
	if j.Complete() || j.Tail != nil || !slices.Equal(recs(0, 3000), j.Records) {
		t.Fatalf("aborted journal: complete %v, tail %v, %d records", j.Complete(), j.Tail, len(j.Records))
	}

	w = newWriter(t, dir, "closed", 10, defaultOptions)
	rtest.OK(t, w.Add(rec(7)))
	long := strings.Repeat("é", MaxErrLen)
	rtest.OK(t, w.Close(Trailer{Records: 1, Err: long}))
	rtest.ErrorIs(t, w.Close(Trailer{}), ErrClosed)
	rtest.OK(t, w.Abort())
	rtest.ErrorIs(t, w.Add(rec(1)), ErrClosed)
	j, err = readPath(w.Path())
	rtest.OK(t, err)
	if !j.Complete() || !slices.Equal([]Record{rec(7)}, j.Records) {
		t.Fatalf("closed journal: complete %v, %d records", j.Complete(), len(j.Records))
	}
	if e := j.Trailer.Err; len(e) > MaxErrLen || !strings.HasPrefix(long, strings.TrimSuffix(e, "…")) {
		t.Errorf("trailer error of %d bytes not cut to %d", len(e), MaxErrLen)
	}

	// An empty run: a journal with no records at all.
	w = newWriter(t, dir, "empty", 10, defaultOptions)
	rtest.OK(t, w.Close(Trailer{}))
	j, err = readPath(w.Path())
	rtest.OK(t, err)
	if !j.Complete() || len(j.Records) != 0 {
		t.Fatalf("empty journal: complete %v, %d records", j.Complete(), len(j.Records))
	}
}

// TestFlushTimer: a record waits at most flushInterval in the buffer, even
// when no other Add comes (in-process timer, so synctest's clock).
func TestFlushTimer(t *testing.T) {
	dir := t.TempDir()
	dirfd := rtest.DirFD(t, dir)
	synctest.Test(t, func(t *testing.T) {
		w, err := Create(fsys.Real{}, dirfd, dir, testHeader("timer", 1), fsys.Keep)
		rtest.OK(t, err)
		read := func() int {
			j, err := readPath(w.Path())
			rtest.OK(t, err)
			return len(j.Records)
		}
		rtest.OK(t, w.Add(rec(0)))
		time.Sleep(flushInterval - time.Millisecond)
		synctest.Wait()
		rtest.Equal(t, "records before the interval", 0, read())
		rtest.OK(t, w.Add(rec(1)))
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		rtest.Equal(t, "records after the interval", 2, read())
		rtest.OK(t, w.Add(rec(2)))
		time.Sleep(flushInterval)
		synctest.Wait()
		rtest.Equal(t, "records after the next interval", 3, read())
		rtest.OK(t, w.Close(Trailer{Records: 3}))
	})
}

// TestCreateRefuses: an existing file, a symlink (dangling or not) in
// place of the journal and a bad RunID are refused, and nothing is
// written through the link.
func TestCreateRefuses(t *testing.T) {
	dir := t.TempDir()
	dirfd := rtest.DirFD(t, dir)
	w, err := Create(fsys.Real{}, dirfd, dir, testHeader("run1", 1), fsys.Keep)
	rtest.OK(t, err)
	rtest.OK(t, w.Abort())
	_, err = Create(fsys.Real{}, dirfd, dir, testHeader("run1", 2), fsys.Keep)
	rtest.ErrorAt(t, "Create over an existing journal", err, filepath.Join(dir, "run1.journal"), fs.ErrExist, unix.EEXIST)

	victim := filepath.Join(t.TempDir(), "victim")
	rtest.OK(t, os.WriteFile(victim, []byte("precious"), 0o600))
	rtest.OK(t, os.Symlink(victim, filepath.Join(dir, "link.journal")))
	_, err = Create(fsys.Real{}, dirfd, dir, testHeader("link", 1), fsys.Keep)
	rtest.ErrorIs(t, err, fs.ErrExist)
	got, err := os.ReadFile(victim)
	rtest.OK(t, err)
	rtest.Equal(t, "victim", "precious", string(got))

	dangling := filepath.Join(t.TempDir(), "nothing")
	rtest.OK(t, os.Symlink(dangling, filepath.Join(dir, "dangling.journal")))
	_, err = Create(fsys.Real{}, dirfd, dir, testHeader("dangling", 1), fsys.Keep)
	rtest.ErrorIs(t, err, fs.ErrExist)
	if _, err := os.Lstat(dangling); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Create made the symlink's target: %v", err)
	}

	for _, id := range []string{"", ".hidden", "a/b", "../x", "a b", "ü", strings.Repeat("x", 65), "run\x00"} {
		_, err := Create(fsys.Real{}, dirfd, dir, testHeader(id, 1), fsys.Keep)
		rtest.ErrorIs(t, err, ErrBadRunID)
	}
	for _, id := range []string{"a", "20261202T170102Z-12345", "x.y_z-1", strings.Repeat("x", 64)} {
		if !ValidRunID(id) {
			t.Errorf("ValidRunID(%q) = false", id)
		}
	}
}

// TestCreateModeAndOwner: the journal is 0640 whatever the umask, and owned
// by the store's owner (34:34, Debian's backup user, when run as root).
func TestCreateModeAndOwner(t *testing.T) {
	dir := t.TempDir()
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	owner := fsys.Keep
	if os.Geteuid() == 0 {
		owner = fsys.Owner{UID: 34, GID: 34}
	}
	w, err := Create(fsys.Real{}, rtest.DirFD(t, dir), dir, testHeader("owned", 1), owner)
	rtest.OK(t, err)
	rtest.OK(t, w.Close(Trailer{}))
	var st unix.Stat_t
	rtest.OK(t, unix.Lstat(w.Path(), &st))
	rtest.Equal(t, "mode", uint32(0o640), st.Mode&0o7777)
	if owner.UID >= 0 {
		rtest.Equal(t, "owner", "34:34", fsys.OwnerOf(&st).String())
	}
}

// TestWriteFault: a failed frame write stops the Writer: the Add that made
// the frame and every later call report it, nothing more is written, and
// the file stays a readable (empty) prefix.
func TestWriteFault(t *testing.T) {
	dir := t.TempDir()
	set := faultfs.New(t, nil)
	set.Add(faultfs.Fault{Op: faultfs.Write, Nth: 2, Err: unix.ENOSPC}) // 1 is the header
	w, err := create(set, rtest.DirFD(t, dir), dir, testHeader("full", 1), fsys.Keep, options{flushRecords: 4, flushInterval: time.Hour})
	rtest.OK(t, err)
	for _, r := range recs(0, 3) {
		rtest.OK(t, w.Add(r))
	}
	rtest.ErrorAt(t, "Add of the 4th record", w.Add(rec(3)), w.Path(), unix.ENOSPC)
	rtest.ErrorAt(t, "Add after the fault", w.Add(rec(4)), w.Path(), unix.ENOSPC)
	rtest.ErrorAt(t, "Close after the fault", w.Close(Trailer{}), w.Path(), unix.ENOSPC)
	rtest.Equal(t, "writes", int64(2), set.Calls(faultfs.Write))
	j, err := readPath(w.Path())
	rtest.OK(t, err)
	if j.Complete() || len(j.Records) != 0 {
		t.Fatalf("journal after the fault: complete %v, %d records", j.Complete(), len(j.Records))
	}
}
