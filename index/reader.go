package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	sha256 "github.com/minio/sha256-simd"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
)

// batchBytes is the size of the buffer Each and the writers move the body
// through, rounded down to a whole number of entries.
const batchBytes = 64 << 10

// Reader reads one index file. Its header was validated when it was opened;
// [Reader.Each] streams and checks the body. Each may be called more than
// once, also from several goroutines at a time, but not concurrently with
// Close.
type Reader struct {
	r         io.ReaderAt
	closer    io.Closer // the file Open opened; nil for NewReader
	name      string
	size      int64
	hdr       Header
	n         int
	dataBytes uint64
	closed    bool
}

// Open opens the index file at path and validates its header and size (see
// the package doc, Validation). A malformed file gives a [*CorruptError]; an
// error from opening the file wraps the *fs.PathError, so a file that does
// not exist matches fs.ErrNotExist. A non-regular file (a directory or a
// FIFO named *.fidx) is corrupt. The caller must Close the Reader.
//
// Open follows symlinks in path; code that must not (GC in a tree a less
// privileged user owns) opens the file itself without following any and
// hands it to [OpenFile].
func Open(path string) (*Reader, error) {
	// O_NONBLOCK: opening a FIFO someone named *.fidx must not hang GC; it
	// has no effect on regular files.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	return OpenFile(f)
}

// OpenFile validates the index open as f, as [Open] does for a path, and
// takes ownership of f: the Reader's Close closes it, and OpenFile closes it
// itself when it fails. f must be open for reading; f.Name() names the file
// in errors. A file that fstat does not report as regular (a FIFO, socket,
// device or directory) is a [*CorruptError], checked before anything is
// read, so that f should have been opened with O_NONBLOCK.
func OpenFile(f *os.File) (*Reader, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open index: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, &CorruptError{Path: f.Name(), Reason: fmt.Sprintf("not a regular file (mode %v)", fi.Mode())}
	}
	r, err := NewReader(f, fi.Size(), f.Name())
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = f
	return r, nil
}

// NewReader validates the index of the given size readable from r, as Open
// does for a file; name is used in errors and, when it ends in .fidx or
// .didx, must match the magic. Close does not close r.
func NewReader(r io.ReaderAt, size int64, name string) (*Reader, error) {
	if size < 0 {
		return nil, &CorruptError{Path: name, Reason: fmt.Sprintf("negative size %d", size)}
	}
	var hb [HeaderSize]byte
	head := hb[:min(size, HeaderSize)]
	if err := readFullAt(r, head, 0, name, size); err != nil {
		return nil, err
	}
	if len(head) < magicSize {
		return nil, &CorruptError{Path: name, Offset: size,
			Reason: fmt.Sprintf("short header: file has %d bytes, want %d", size, HeaderSize)}
	}
	var kind Kind
	switch [magicSize]byte(head[:magicSize]) {
	case fixedMagic:
		kind = Fixed
	case dynamicMagic:
		kind = Dynamic
	default:
		return nil, &CorruptError{Path: name, Offset: 0,
			Reason: fmt.Sprintf("bad magic % x, not a fixed or dynamic index", head[:magicSize])}
	}
	if want, ok := KindOf(name); ok && want != kind {
		return nil, &CorruptError{Path: name, Offset: 0,
			Reason: fmt.Sprintf("%s index magic in a %s file", kind, want.Suffix())}
	}
	if size < HeaderSize {
		return nil, &CorruptError{Path: name, Offset: size,
			Reason: fmt.Sprintf("short header: file has %d bytes, want %d", size, HeaderSize)}
	}
	rd := &Reader{r: r, name: name, size: size}
	rd.hdr = Header{Kind: kind, CTime: int64(binary.LittleEndian.Uint64(hb[offCTime:]))}
	copy(rd.hdr.UUID[:], hb[offUUID:])
	copy(rd.hdr.Csum[:], hb[offCsum:])

	body, es := size-HeaderSize, int64(kind.entrySize())
	if body%es != 0 {
		return nil, &CorruptError{Path: name, Offset: size,
			Reason: fmt.Sprintf("body of %d bytes is not a whole number of %d-byte entries", body, es)}
	}
	count := body / es
	if int64(int(count)) != count {
		return nil, &CorruptError{Path: name, Offset: size, Reason: fmt.Sprintf("%d entries do not fit in an int", count)}
	}
	rd.n = int(count)

	switch kind {
	case Fixed:
		rd.hdr.Size = binary.LittleEndian.Uint64(hb[offSize:])
		rd.hdr.ChunkSize = binary.LittleEndian.Uint64(hb[offChunkSize:])
		if rd.hdr.ChunkSize == 0 {
			return nil, &CorruptError{Path: name, Offset: offChunkSize, Reason: "chunk size is 0"}
		}
		if want := fixedCount(rd.hdr.Size, rd.hdr.ChunkSize); uint64(count) != want {
			return nil, &CorruptError{Path: name, Offset: HeaderSize,
				Reason: fmt.Sprintf("body holds %d digests, but size %d and chunk size %d need %d",
					count, rd.hdr.Size, rd.hdr.ChunkSize, want)}
		}
		rd.dataBytes = rd.hdr.Size
	case Dynamic:
		if count > 0 {
			var end [8]byte
			if err := readFullAt(r, end[:], size-es, name, size); err != nil {
				return nil, err
			}
			rd.dataBytes = binary.LittleEndian.Uint64(end[:])
		}
	}
	return rd, nil
}

// readFullAt fills p from r at off. A short read is a *CorruptError (the file
// is shorter than the size it was opened with); any other error is wrapped.
func readFullAt(r io.ReaderAt, p []byte, off int64, name string, size int64) error {
	if len(p) == 0 {
		return nil
	}
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &CorruptError{Path: name, Offset: off + int64(n),
			Reason: fmt.Sprintf("file ends at byte %d, shorter than the %d bytes it had at open", off+int64(n), size)}
	}
	return fmt.Errorf("read index %s at byte %d: %w", name, off+int64(n), err)
}

// Header returns the validated header.
func (r *Reader) Header() Header { return r.hdr }

// Len returns the number of entries (digests) in the index.
func (r *Reader) Len() int { return r.n }

// DataBytes returns the bytes of data the index describes: Size for a fixed
// index, the last end offset for a dynamic one (0 when empty). It was read
// at open; Each checks it with the rest of the body.
func (r *Reader) DataBytes() uint64 { return r.dataBytes }

// Each calls fn with the digest of every entry, in order. It reads the body
// in 64 KiB batches through one buffer and allocates nothing per entry; d
// points into that buffer and is valid only during the call (copy *d to
// keep it).
//
// Each checks the body as it goes (see the package doc, Validation) and
// returns a [*CorruptError] when a dynamic end offset decreases, the file
// became shorter than at open, or, after the last entry, the body does not
// hash to the header's checksum: fn has by then been called for the entries
// before the problem. An error from fn stops Each and is returned as is.
func (r *Reader) Each(fn func(d *blob.Digest) error) error {
	if r.closed {
		return fmt.Errorf("read index %s: %w", r.name, os.ErrClosed)
	}
	es := r.hdr.Kind.entrySize()
	end := int64(HeaderSize) + int64(r.n)*int64(es)
	buf := make([]byte, min(int64(batchBytes/es*es), end-HeaderSize))
	h := sha256.New()
	var prev uint64
	for off := int64(HeaderSize); off < end; {
		p := buf[:min(int64(len(buf)), end-off)]
		if err := readFullAt(r.r, p, off, r.name, r.size); err != nil {
			return err
		}
		h.Write(p)
		for i := 0; i < len(p); i += es {
			e := p[i : i+es]
			if r.hdr.Kind == Dynamic {
				cur := binary.LittleEndian.Uint64(e)
				if cur < prev {
					return &CorruptError{Path: r.name, Offset: off + int64(i),
						Reason: fmt.Sprintf("end offset %d of entry %d is below the previous end offset %d",
							cur, (off+int64(i)-HeaderSize)/int64(es), prev)}
				}
				prev = cur
				e = e[8:]
			}
			if err := fn((*blob.Digest)(e)); err != nil {
				return err
			}
		}
		off += int64(len(p))
	}
	var sum [32]byte
	if got := h.Sum(sum[:0]); [32]byte(got) != r.hdr.Csum {
		return &CorruptError{Path: r.name, Offset: offCsum,
			Reason: fmt.Sprintf("checksum mismatch: body hashes to %x, header says %x", got, r.hdr.Csum)}
	}
	return nil
}

// Close closes the file Open opened; for a Reader from NewReader it only
// marks the Reader closed.
func (r *Reader) Close() error {
	if r.closed {
		return fmt.Errorf("close index %s: %w", r.name, os.ErrClosed)
	}
	r.closed = true
	if r.closer == nil {
		return nil
	}
	return r.closer.Close()
}
