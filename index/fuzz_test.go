package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"chunkgc/blob"
)

// The seed corpora are in testdata/fuzz/FuzzOpen and testdata/fuzz/FuzzReader:
// the golden indexes and one file per corruption of TestCorrupt. Run with
//
//	go test -run '^$' -fuzz FuzzReader -fuzztime 1m -fuzzminimizetime 2s ./index
//
// (-fuzzminimizetime: the inputs are over 4 KiB, and minimizing one with the
// default 60 s stalls the exec counter for a minute.)

// FuzzOpen writes the input to a .fidx or .didx file and opens and reads it.
func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, dynamic bool) {
		name := "f.fidx"
		if dynamic {
			name = "f.didx"
		}
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Open(path)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open of a readable regular file: want nil or ErrCorrupt, got %v", err)
			}
			return
		}
		defer r.Close()
		checkFuzzReader(t, r, data)
	})
}

// FuzzReader checks NewReader with the true size, and that lying sizes give
// ErrCorrupt rather than a panic.
func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		r, err := NewReader(bytes.NewReader(data), int64(len(data)), name)
		if err == nil {
			checkFuzzReader(t, r, data)
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("NewReader: want nil or ErrCorrupt, got %v", err)
		}
		for _, size := range []int64{int64(len(data)) / 2, int64(len(data)) + 40, int64(len(data)) + 32*1000} {
			r, err := NewReader(bytes.NewReader(data), size, name)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("NewReader with size %d of %d: want nil or ErrCorrupt, got %v", size, len(data), err)
				}
				continue
			}
			if err := r.Each(func(*blob.Digest) error { return nil }); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Each with size %d of %d: want nil or ErrCorrupt, got %v", size, len(data), err)
			}
		}
	})
}

// checkFuzzReader checks a Reader over data that NewReader or Open accepted:
// its length matches the file, Each fails only with ErrCorrupt, and an index
// that Each accepts re-encodes to the same bytes (reserved bytes aside).
func checkFuzzReader(t *testing.T, r *Reader, data []byte) {
	t.Helper()
	h := r.Header()
	if want := HeaderSize + r.Len()*h.Kind.entrySize(); want != len(data) {
		t.Fatalf("Len %d of %s index implies %d bytes, file has %d", r.Len(), h.Kind, want, len(data))
	}
	var ds []blob.Digest
	var ends []uint64
	n := 0
	err := r.Each(func(d *blob.Digest) error {
		if h.Kind == Dynamic {
			ends = append(ends, binary.LittleEndian.Uint64(data[HeaderSize+n*dynamicEntrySize:]))
		}
		ds = append(ds, *d)
		n++
		return nil
	})
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Each: want nil or ErrCorrupt, got %v", err)
		}
		return
	}
	if n != r.Len() {
		t.Fatalf("Each called fn %d times, Len is %d", n, r.Len())
	}
	m := &memFile{}
	if h.Kind == Fixed {
		w := NewFixedWriter(m, h.Size, h.ChunkSize, h.UUID, h.CTime)
		for _, d := range ds {
			if err := w.Add(d); err != nil {
				t.Fatalf("re-encode: %v", err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	} else {
		if len(ends) > 0 && ends[len(ends)-1] != r.DataBytes() {
			t.Fatalf("DataBytes %d, last end %d", r.DataBytes(), ends[len(ends)-1])
		}
		w := NewDynamicWriter(m, h.UUID, h.CTime)
		for i, d := range ds {
			if err := w.Add(ends[i], d); err != nil {
				t.Fatalf("re-encode: %v", err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	}
	used := 64
	if h.Kind == Fixed {
		used = 80
	}
	if !bytes.Equal(m.b[:used], data[:used]) || !bytes.Equal(m.b[HeaderSize:], data[HeaderSize:]) {
		t.Fatalf("re-encoded index differs from the input")
	}
}
