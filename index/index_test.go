package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
)

var (
	testUUID  = [16]byte{0x5c, 0x2b, 0x8f, 0x1e, 0x90, 0x4d, 0x4a, 0x6b, 0x9e, 0x27, 0x31, 0xc0, 0x7d, 0x11, 0xa8, 0x03}
	testCTime = int64(1743778969) // 2025-04-04T15:02:49Z
)

// TestKindOf: KindOf tells an index file by its suffix (0 and false for
// any other name).
func TestKindOf(t *testing.T) {
	tests := []struct {
		give string
		want Kind
	}{
		{"drive-scsi0.img.fidx", Fixed},
		{"/a/b/root.pxar.didx", Dynamic},
		{"index.json.blob", 0},
		{"x.fidx.tmp_123", 0},
		{"fidx", 0},
		{"", 0},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, gotOK := KindOf(tt.give)
			rtest.Equal(t, "kind", tt.want, got)
			rtest.Equal(t, "ok", tt.want != 0, gotOK)
		})
	}
}

// TestKindNames: each Kind's String and Suffix, and those of values that
// name no kind.
func TestKindNames(t *testing.T) {
	for k, want := range map[Kind][2]string{
		Fixed: {"fixed", ".fidx"}, Dynamic: {"dynamic", ".didx"}, 0: {"Kind(0)", ""}, 3: {"Kind(3)", ""}, 7: {"Kind(7)", ""},
	} {
		rtest.Equal(t, fmt.Sprintf("Kind(%d).String()", k), want[0], k.String())
		rtest.Equal(t, fmt.Sprintf("Kind(%d).Suffix()", k), want[1], k.Suffix())
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		kind      Kind
		n         int
		size      uint64 // fixed
		chunkSize uint64 // fixed
	}{
		{name: "fixed empty", kind: Fixed, n: 0, size: 0, chunkSize: 4 << 20},
		{name: "fixed one full chunk", kind: Fixed, n: 1, size: 4 << 20, chunkSize: 4 << 20},
		{name: "fixed one short chunk", kind: Fixed, n: 1, size: 100, chunkSize: 4 << 20},
		{name: "fixed many, short tail", kind: Fixed, n: 1000, size: 1000*4096 - 17, chunkSize: 4096},
		{name: "fixed several batches", kind: Fixed, n: 5000, size: 5000 * 512, chunkSize: 512},
		{name: "fixed exactly one batch", kind: Fixed, n: batchBytes / 32, size: batchBytes / 32, chunkSize: 1},
		{name: "dynamic empty", kind: Dynamic, n: 0},
		{name: "dynamic one", kind: Dynamic, n: 1},
		{name: "dynamic many", kind: Dynamic, n: 1000},
		{name: "dynamic several batches", kind: Dynamic, n: 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := testDigests(tt.n, 1)
			ends := testEnds(tt.n)
			path := filepath.Join(t.TempDir(), "archive"+tt.kind.Suffix())
			var want []byte
			mem := &memFile{}
			if tt.kind == Fixed {
				rtest.OK(t, WriteFixedFile(path, tt.size, tt.chunkSize, ds))
				want = refFixed(testUUID, testCTime, tt.size, tt.chunkSize, ds)
				w := NewFixedWriter(mem, tt.size, tt.chunkSize, testUUID, testCTime)
				for _, d := range ds {
					rtest.OK(t, w.Add(d))
				}
				rtest.OK(t, w.Close())
			} else {
				rtest.OK(t, WriteDynamicFile(path, ends, ds))
				want = refDynamic(testUUID, testCTime, ends, ds)
				w := NewDynamicWriter(mem, testUUID, testCTime)
				for i, d := range ds {
					rtest.OK(t, w.Add(ends[i], d))
				}
				rtest.OK(t, w.Close())
			}
			if !bytes.Equal(want, mem.b) {
				t.Errorf("writer output (%d bytes) differs from the reference encoding (%d bytes) at byte %d",
					len(mem.b), len(want), firstDiff(want, mem.b))
			}

			fi, err := os.Stat(path)
			rtest.OK(t, err)
			rtest.Equal(t, "file mode", fs.FileMode(0o644), fi.Mode())
			rtest.Equal(t, "file size", int64(len(want)), fi.Size())
			entries, err := os.ReadDir(filepath.Dir(path))
			rtest.OK(t, err)
			rtest.Equal(t, "files in dir (no temporary left)", 1, len(entries))

			r, err := Open(path)
			rtest.OK(t, err)
			defer func() { rtest.OK(t, r.Close()) }()
			h := r.Header()
			rtest.Equal(t, "kind", tt.kind, h.Kind)
			rtest.Equal(t, "Len", tt.n, r.Len())
			if h.CTime == 0 || h.UUID == ([16]byte{}) {
				t.Errorf("WriteFile left ctime %d or uuid %x unset", h.CTime, h.UUID)
			}
			if tt.kind == Fixed {
				rtest.Equal(t, "size", tt.size, h.Size)
				rtest.Equal(t, "chunk size", tt.chunkSize, h.ChunkSize)
				rtest.Equal(t, "DataBytes", tt.size, r.DataBytes())
			} else {
				wantBytes := uint64(0)
				if tt.n > 0 {
					wantBytes = ends[tt.n-1]
				}
				rtest.Equal(t, "DataBytes", wantBytes, r.DataBytes())
				rtest.Equal(t, "size (dynamic)", uint64(0), h.Size)
			}
			rtest.Equal(t, "csum", [32]byte(want[32:64]), h.Csum)
			got, err := collect(r)
			rtest.OK(t, err)
			if !slices.Equal(ds, got) {
				t.Errorf("Each returned %d digests, want %d (or different ones)", len(got), len(ds))
			}
			// Each can run again.
			got, err = collect(r)
			rtest.OK(t, err)
			rtest.Equal(t, "digests on second Each", len(ds), len(got))

			// The reader also accepts the reference encoding through NewReader.
			r2, err := NewReader(bytes.NewReader(want), int64(len(want)), "mem"+tt.kind.Suffix())
			rtest.OK(t, err)
			rtest.Equal(t, "NewReader header", Header{Kind: tt.kind, UUID: testUUID, CTime: testCTime,
				Csum: [32]byte(want[32:64]), Size: h.Size, ChunkSize: h.ChunkSize}, r2.Header())
			got, err = collect(r2)
			rtest.OK(t, err)
			if !slices.Equal(ds, got) {
				t.Errorf("NewReader: Each returned %d digests, want %d (or different ones)", len(got), len(ds))
			}
			rtest.OK(t, r2.Close())
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// Reserved header bytes are ignored on read, as PBS ignores them.
func TestReservedBytesIgnored(t *testing.T) {
	ds := testDigests(3, 2)
	b := refFixed(testUUID, testCTime, 3*4096, 4096, ds)
	for i := 80; i < HeaderSize; i++ {
		b[i] = 0xff
	}
	r, err := Open(writeTemp(t, "x.fidx", b))
	rtest.OK(t, err)
	defer r.Close()
	got, err := collect(r)
	rtest.OK(t, err)
	rtest.Equal(t, "digests", 3, len(got))
}

// setU64 returns b with a little-endian u64 stored at off.
func setU64(b []byte, off int, v uint64) []byte {
	binary.LittleEndian.PutUint64(b[off:], v)
	return b
}

func flip(b []byte, off int) []byte {
	b[off] ^= 0x40
	return b
}

func TestCorrupt(t *testing.T) {
	fixed := func() []byte { return refFixed(testUUID, testCTime, 3*4096-5, 4096, testDigests(3, 3)) }
	dyn := func() []byte { return refDynamic(testUUID, testCTime, testEnds(3), testDigests(3, 4)) }
	bigDyn := func() []byte { return refDynamic(testUUID, testCTime, testEnds(3000), testDigests(3000, 5)) }
	tests := []struct {
		name       string
		give       []byte
		file       string // file name; x.fidx when empty
		wantAtEach bool   // Open succeeds, Each fails
		wantReason string
		wantOffset int64
	}{
		{name: "empty file", give: nil, wantReason: "short header: file has 0 bytes", wantOffset: 0},
		{name: "seven bytes", give: fixed()[:7], wantReason: "short header: file has 7 bytes", wantOffset: 7},
		{name: "truncated header", give: fixed()[:100], wantReason: "short header: file has 100 bytes", wantOffset: 100},
		{name: "header one byte short", give: fixed()[:HeaderSize-1], wantReason: "short header", wantOffset: HeaderSize - 1},
		{name: "truncated dynamic header", give: dyn()[:2000], file: "x.didx", wantReason: "short header", wantOffset: 2000},
		{name: "wrong magic", give: flip(fixed(), 3), wantReason: "bad magic 2f 7f 41 ad"},
		{name: "blob magic", give: append([]byte{66, 171, 56, 7, 190, 131, 112, 161}, make([]byte, 5000)...), wantReason: "bad magic"},
		{name: "zeros", give: make([]byte, HeaderSize+64), wantReason: "bad magic"},
		{name: "dynamic magic in fidx", give: dyn(), file: "x.fidx", wantReason: "dynamic index magic in a .fidx file"},
		{name: "fixed magic in didx", give: fixed(), file: "x.didx", wantReason: "fixed index magic in a .didx file"},
		{name: "ragged fixed body", give: fixed()[:HeaderSize+3*32-1], wantReason: "body of 95 bytes is not a whole number of 32-byte entries", wantOffset: HeaderSize + 95},
		{name: "fixed body plus a byte", give: append(fixed(), 0), wantReason: "not a whole number", wantOffset: HeaderSize + 97},
		{name: "ragged dynamic body", give: append(dyn(), make([]byte, 39)...), file: "x.didx", wantReason: "body of 159 bytes is not a whole number of 40-byte entries", wantOffset: HeaderSize + 159},
		{name: "fixed digest missing", give: fixed()[:HeaderSize+2*32], wantReason: "body holds 2 digests, but size 12283 and chunk size 4096 need 3", wantOffset: HeaderSize},
		{name: "fixed digest extra", give: append(fixed(), make([]byte, 32)...), wantReason: "body holds 4 digests", wantOffset: HeaderSize},
		{name: "fixed size too large", give: setU64(fixed(), 64, 3*4096+1), wantReason: "need 4", wantOffset: HeaderSize},
		{name: "fixed huge size", give: setU64(setU64(fixed(), 64, 1<<64-1), 72, 1), wantReason: "need 18446744073709551615", wantOffset: HeaderSize},
		{name: "fixed size 0 with a digest", give: setU64(fixed()[:HeaderSize+32], 64, 0), wantReason: "body holds 1 digests, but size 0", wantOffset: HeaderSize},
		{name: "fixed chunk size 0", give: setU64(fixed(), 72, 0), wantReason: "chunk size is 0", wantOffset: 72},
		{name: "fixed digest flipped", give: flip(fixed(), HeaderSize+40), wantAtEach: true, wantReason: "checksum mismatch", wantOffset: 32},
		{name: "fixed csum flipped", give: flip(fixed(), 50), wantAtEach: true, wantReason: "checksum mismatch", wantOffset: 32},
		{name: "fixed csum zero", give: append(append(fixed()[:32], make([]byte, 32)...), fixed()[64:]...), wantAtEach: true, wantReason: "header says 0000", wantOffset: 32},
		{name: "dynamic digest flipped", give: flip(dyn(), HeaderSize+40+20), file: "x.didx", wantAtEach: true, wantReason: "checksum mismatch", wantOffset: 32},
		{name: "dynamic end changed", give: flip(dyn(), HeaderSize+80), file: "x.didx", wantAtEach: true, wantReason: "checksum mismatch", wantOffset: 32},
		{name: "empty dynamic with csum", give: flip(refDynamic(testUUID, testCTime, nil, nil), 40), file: "x.didx", wantAtEach: true, wantReason: "checksum mismatch", wantOffset: 32},
		{
			name:       "dynamic ends decrease",
			give:       refDynamic(testUUID, testCTime, []uint64{100, 200, 150}, testDigests(3, 6)),
			file:       "x.didx",
			wantAtEach: true, wantReason: "end offset 150 of entry 2 is below the previous end offset 200", wantOffset: HeaderSize + 80,
		},
		{
			name: "dynamic ends decrease across batches",
			give: func() []byte {
				n := batchBytes / 40 // first entry of the second batch
				return setU64(bigDyn(), HeaderSize+40*n, 5)
			}(),
			file:       "x.didx",
			wantAtEach: true, wantReason: fmt.Sprintf("end offset 5 of entry %d", batchBytes/40), wantOffset: HeaderSize + 40*(batchBytes/40),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.file
			if name == "" {
				name = "x.fidx"
			}
			path := writeTemp(t, name, tt.give)
			r, err := Open(path)
			if tt.wantAtEach {
				rtest.OK(t, err)
				defer r.Close()
				_, err = collect(r)
			} else if err == nil {
				r.Close()
				t.Fatalf("Open accepted a corrupt index")
			}
			checkCorrupt(t, err, path, tt.wantReason, tt.wantOffset)

			// NewReader judges the same bytes the same way.
			r, err = NewReader(bytes.NewReader(tt.give), int64(len(tt.give)), name)
			if tt.wantAtEach {
				rtest.OK(t, err)
				_, err = collect(r)
			} else if err == nil {
				t.Fatalf("NewReader accepted a corrupt index")
			}
			checkCorrupt(t, err, name, tt.wantReason, tt.wantOffset)
		})
	}
}

func checkCorrupt(t *testing.T, err error, path, reason string, offset int64) {
	t.Helper()
	ce := rtest.ErrorAs[*CorruptError](t, err, ErrCorrupt)
	rtest.Equal(t, "CorruptError.Path", path, ce.Path)
	rtest.Equal(t, "CorruptError.Offset", offset, ce.Offset)
	if !strings.Contains(ce.Reason, reason) {
		t.Errorf("reason %q does not contain %q", ce.Reason, reason)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, ce.Reason) {
		t.Errorf("message %q does not name path %s and reason", msg, path)
	}
}

func TestOpenNotRegular(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x.fidx")
	rtest.OK(t, os.Mkdir(dir, 0o755))
	_, err := Open(dir)
	checkCorrupt(t, err, dir, "not a regular file", 0)

	fifo := filepath.Join(t.TempDir(), "y.didx")
	rtest.OK(t, syscall.Mkfifo(fifo, 0o644))
	_, err = Open(fifo) // must not block
	checkCorrupt(t, err, fifo, "not a regular file", 0)
}

func TestOpenNotExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone.fidx")
	_, err := Open(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a missing file: want fs.ErrNotExist, got %v", err)
	}
	if errors.Is(err, ErrCorrupt) {
		t.Errorf("a missing file is not corrupt: %v", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
}

// A file that shrinks between Open and Each is corrupt, not silently short.
func TestShrunkAfterOpen(t *testing.T) {
	for _, kind := range []Kind{Fixed, Dynamic} {
		t.Run(kind.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x"+kind.Suffix())
			ds := testDigests(5000, 7)
			if kind == Fixed {
				rtest.OK(t, WriteFixedFile(path, 5000*4096, 4096, ds))
			} else {
				rtest.OK(t, WriteDynamicFile(path, testEnds(5000), ds))
			}
			r, err := Open(path)
			rtest.OK(t, err)
			defer r.Close()
			size := int64(HeaderSize + 4000*kind.entrySize() + 3)
			rtest.OK(t, os.Truncate(path, size))
			n := 0
			err = r.Each(func(*blob.Digest) error { n++; return nil })
			checkCorrupt(t, err, path, "shorter than", size)
			if n == 0 || n > 4000 {
				t.Errorf("Each called fn %d times before the short read, want 1..4000", n)
			}
		})
	}
}

// errReaderAt fails every read after the first n bytes with EIO.
type errReaderAt struct {
	b []byte
	n int64
}

func (e errReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > e.n {
		return 0, &fs.PathError{Op: "read", Path: "mem", Err: syscall.EIO}
	}
	return copy(p, e.b[off:]), nil
}

func TestReadErrorIsNotCorrupt(t *testing.T) {
	b := refFixed(testUUID, testCTime, 10*4096, 4096, testDigests(10, 8))
	_, err := NewReader(errReaderAt{b: b, n: 100}, int64(len(b)), "x.fidx")
	if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrCorrupt) {
		t.Errorf("header read error: want EIO and not ErrCorrupt, got %v", err)
	}
	r, err := NewReader(errReaderAt{b: b, n: HeaderSize}, int64(len(b)), "x.fidx")
	rtest.OK(t, err)
	err = r.Each(func(*blob.Digest) error { return nil })
	if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "x.fidx") {
		t.Errorf("body read error: want EIO naming x.fidx and not ErrCorrupt, got %v", err)
	}
	d := refDynamic(testUUID, testCTime, testEnds(4), testDigests(4, 8))
	_, err = NewReader(errReaderAt{b: d, n: HeaderSize}, int64(len(d)), "x.didx")
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("last entry read error: want EIO, got %v", err)
	}
}

func TestEachStopsOnFnError(t *testing.T) {
	ds := testDigests(100, 9)
	path := filepath.Join(t.TempDir(), "x.fidx")
	rtest.OK(t, WriteFixedFile(path, 100, 1, ds))
	r, err := Open(path)
	rtest.OK(t, err)
	defer r.Close()
	stop := errors.New("stop")
	var seen []blob.Digest
	err = r.Each(func(d *blob.Digest) error {
		seen = append(seen, *d)
		if len(seen) == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || err.Error() != stop.Error() {
		t.Errorf("Each: want fn's error as is, got %v", err)
	}
	if !slices.Equal(ds[:3], seen) {
		t.Errorf("Each called fn for %d digests before stopping, want the first 3", len(seen))
	}
}

func TestClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.didx")
	rtest.OK(t, WriteDynamicFile(path, []uint64{1}, testDigests(1, 10)))
	r, err := Open(path)
	rtest.OK(t, err)
	rtest.OK(t, r.Close())
	if err := r.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: want os.ErrClosed, got %v", err)
	}
	if err := r.Each(func(*blob.Digest) error { return nil }); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Each after Close: want os.ErrClosed, got %v", err)
	}
}

// failWriterAt fails every write.
type failWriterAt struct{}

func (failWriterAt) WriteAt([]byte, int64) (int, error) {
	return 0, &fs.PathError{Op: "write", Path: "mem", Err: syscall.ENOSPC}
}

func TestWriterErrors(t *testing.T) {
	d := testDigests(1, 11)[0]

	w := NewFixedWriter(&memFile{}, 2*4096, 4096, testUUID, testCTime)
	rtest.OK(t, w.Add(d))
	rtest.OK(t, w.Add(d))
	if err := w.Add(d); err == nil || !strings.Contains(err.Error(), "more than 2 digests") {
		t.Errorf("third digest for two chunks: got %v", err)
	}
	if err := w.Close(); err == nil {
		t.Errorf("Close after an Add error succeeded")
	}

	mem := &memFile{}
	w = NewFixedWriter(mem, 2*4096+1, 4096, testUUID, testCTime)
	rtest.OK(t, w.Add(d))
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "1 digests for size 8193 and chunk size 4096, want 3") {
		t.Errorf("Close with too few digests: got %v", err)
	}
	if len(mem.b) >= magicSize && bytes.Equal(mem.b[:magicSize], fixedMagic[:]) {
		t.Errorf("a failed Close wrote the header")
	}
	if err := w.Add(d); err == nil {
		t.Errorf("Add after Close succeeded")
	}

	w = NewFixedWriter(&memFile{}, 10, 0, testUUID, testCTime)
	if err := w.Add(d); err == nil || !strings.Contains(err.Error(), "chunk size is 0") {
		t.Errorf("chunk size 0: got %v", err)
	}

	w = NewFixedWriter(&memFile{}, 0, 4096, testUUID, testCTime)
	rtest.OK(t, w.Close())
	rtest.OK(t, w.Close())
	if err := w.Add(d); !errors.Is(err, errWriterClosed) {
		t.Errorf("Add after Close: want errWriterClosed, got %v", err)
	}

	dw := NewDynamicWriter(&memFile{}, testUUID, testCTime)
	rtest.OK(t, dw.Add(10, d))
	rtest.OK(t, dw.Add(10, d))
	if err := dw.Add(9, d); err == nil || !strings.Contains(err.Error(), "end offset 9 of entry 2 is below the previous end offset 10") {
		t.Errorf("decreasing end: got %v", err)
	}
	if err := dw.Close(); err == nil {
		t.Errorf("Close after a failed Add succeeded")
	}

	w = NewFixedWriter(failWriterAt{}, 1, 1, testUUID, testCTime)
	rtest.OK(t, w.Add(d)) // buffered
	if err := w.Close(); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Close on a failing WriterAt: want ENOSPC, got %v", err)
	}
	dw = NewDynamicWriter(failWriterAt{}, testUUID, testCTime)
	for i := range batchBytes/40 - 1 {
		rtest.OK(t, dw.Add(uint64(i), d))
	}
	if err := dw.Add(1<<20, d); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Add that fills a batch on a failing WriterAt: want ENOSPC, got %v", err)
	}
	if err := dw.Add(1<<21, d); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Add after a failed batch write: want ENOSPC, got %v", err)
	}
}

func TestWriteFileErrors(t *testing.T) {
	dir := t.TempDir()
	ds := testDigests(2, 12)
	tests := []struct {
		name  string
		write func(path string) error
		want  string
	}{
		{name: "fixed count", write: func(p string) error { return WriteFixedFile(p, 3*4096, 4096, ds) }, want: "2 digests for size 12288 and chunk size 4096, want 3"},
		{name: "dynamic lengths", write: func(p string) error { return WriteDynamicFile(p, []uint64{1}, ds) }, want: "1 end offsets for 2 digests"},
		{name: "dynamic order", write: func(p string) error { return WriteDynamicFile(p, []uint64{2, 1}, ds) }, want: "below the previous"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "x.idx")
			err := tt.write(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("want an error naming %s and containing %q, got %v", path, tt.want, err)
			}
			entries, err := os.ReadDir(dir)
			rtest.OK(t, err)
			if len(entries) != 0 {
				t.Errorf("a failed write left %v", entries)
			}
		})
	}
	err := WriteFixedFile(filepath.Join(dir, "missing", "x.fidx"), 0, 1, nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("write into a missing dir: want fs.ErrNotExist, got %v", err)
	}
}

// Each allocates a constant: its buffer and hash state, not per entry.
func TestEachAllocs(t *testing.T) {
	for _, kind := range []Kind{Fixed, Dynamic} {
		t.Run(kind.String(), func(t *testing.T) {
			allocs := map[int]float64{}
			for _, n := range []int{10, 10_000} {
				path := filepath.Join(t.TempDir(), "x"+kind.Suffix())
				ds := testDigests(n, 13)
				if kind == Fixed {
					rtest.OK(t, WriteFixedFile(path, uint64(n)*4096, 4096, ds))
				} else {
					rtest.OK(t, WriteDynamicFile(path, testEnds(n), ds))
				}
				r, err := Open(path)
				rtest.OK(t, err)
				var sum byte
				fn := func(d *blob.Digest) error { sum ^= d[31]; return nil }
				allocs[n] = testing.AllocsPerRun(20, func() {
					if err := r.Each(fn); err != nil {
						t.Fatal(err)
					}
				})
				rtest.OK(t, r.Close())
				t.Logf("%d entries: %.0f allocs per Each", n, allocs[n])
			}
			if allocs[10_000] != allocs[10] || allocs[10_000] > 4 {
				t.Errorf("Each allocates %.0f times for 10 entries and %.0f for 10000; want the same small constant (<= 4)",
					allocs[10], allocs[10_000])
			}
		})
	}
}

// go test -run '^$' -bench Each -count 10 -cpu 2 ./index
func BenchmarkEach(b *testing.B) {
	const n = 1 << 20
	path := filepath.Join(b.TempDir(), "big.fidx")
	if err := WriteFixedFile(path, n*4<<20, 4<<20, testDigests(n, 14)); err != nil {
		b.Fatal(err)
	}
	r, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var sum byte
	fn := func(d *blob.Digest) error { sum ^= d[0]; return nil }
	b.SetBytes(n * 32)
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Each(fn); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "digests/s")
}

// io.ReaderAt and io.WriterAt implementations used above satisfy the
// interfaces.
var (
	_ io.ReaderAt = errReaderAt{}
	_ io.WriterAt = failWriterAt{}
	_ io.WriterAt = (*memFile)(nil)
)
