package journal

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

// FuzzRead checks that no file makes the reader panic or allocate without
// bound, that it fails only for a bad header, and that it counts the
// records it reports.
//
// go test -run '^$' -fuzz FuzzRead -fuzztime 60s ./journal
func FuzzRead(f *testing.F) {
	dir := f.TempDir()
	w, err := create(nil, rtest.DirFD(f, dir), dir, testHeader("fuzz", 1), fsys.Keep, options{flushRecords: 3, flushInterval: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range recs(0, 7) {
		if err := w.Add(r); err != nil {
			f.Fatal(err)
		}
	}
	if err := w.Close(Trailer{Records: 7, Err: "x"}); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(w.Path())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-5])
	f.Add(good[:len(magic)+frameHeaderSize+10])
	f.Add([]byte(magic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var n int64
		res, err := scan(bytes.NewReader(b), "fuzz", func(*Record) error { n++; return nil }, false)
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v is not ErrBadHeader", err)
			}
			return
		}
		if n != res.records {
			t.Fatalf("%d records seen, %d counted", n, res.records)
		}
		if res.tail != nil && !errors.Is(res.tail, ErrCorrupt) {
			t.Fatalf("tail %v is not ErrCorrupt", res.tail)
		}
		if !ValidRunID(res.header.RunID) {
			t.Fatalf("accepted run ID %q", res.header.RunID)
		}
	})
}
