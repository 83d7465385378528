package index

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	sha256 "github.com/minio/sha256-simd"

	"chunkgc/blob"
	"chunkgc/internal/atomicfile"
	"chunkgc/internal/fsys"
)

// errWriterClosed is returned by Add after Close.
var errWriterClosed = errors.New("index writer is closed")

// writer is the part FixedWriter and DynamicWriter share: it buffers body
// entries, writes them in batches after the header, hashes them, and writes
// the header last.
type writer struct {
	w      io.WriterAt
	hdr    Header
	h      hash.Hash
	buf    []byte
	off    int64 // file offset of buf[0]
	n      uint64
	err    error // sticky: the first error, returned by every later call
	closed bool
}

func newWriter(w io.WriterAt, hdr Header) writer {
	return writer{w: w, hdr: hdr, h: sha256.New(), off: HeaderSize}
}

// add appends one encoded entry.
func (w *writer) add(entry []byte) {
	if w.buf == nil {
		w.buf = make([]byte, 0, batchBytes/len(entry)*len(entry))
	}
	w.buf = append(w.buf, entry...)
	w.n++
	if len(w.buf) == cap(w.buf) {
		w.flush()
	}
}

func (w *writer) flush() {
	if w.err != nil || len(w.buf) == 0 {
		return
	}
	w.h.Write(w.buf)
	if _, err := w.w.WriteAt(w.buf, w.off); err != nil {
		w.err = fmt.Errorf("write %s index body: %w", w.hdr.Kind, err)
		return
	}
	w.off += int64(len(w.buf))
	w.buf = w.buf[:0]
}

// check returns the error that stops an Add: a previous error or Close.
func (w *writer) check() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errWriterClosed
	}
	return nil
}

// close flushes, writes the header with the checksum and makes every later
// call fail.
func (w *writer) close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	w.flush()
	if w.err != nil {
		return w.err
	}
	w.h.Sum(w.hdr.Csum[:0])
	if _, err := w.w.WriteAt(encodeHeader(&w.hdr), 0); err != nil {
		w.err = fmt.Errorf("write %s index header: %w", w.hdr.Kind, err)
	}
	return w.err
}

// FixedWriter streams a fixed index to an io.WriterAt, which should be empty
// (an existing longer file is not truncated). Close writes the header.
type FixedWriter struct {
	wr   writer
	want uint64 // ceil(size/chunkSize)
}

// NewFixedWriter returns a writer of a fixed index for an image of size
// bytes cut into chunks of chunkSize bytes: it takes exactly
// ceil(size/chunkSize) digests.
func NewFixedWriter(w io.WriterAt, size, chunkSize uint64, uuid [16]byte, ctime int64) *FixedWriter {
	fw := &FixedWriter{wr: newWriter(w, Header{Kind: Fixed, UUID: uuid, CTime: ctime, Size: size, ChunkSize: chunkSize})}
	if chunkSize == 0 {
		fw.wr.err = errors.New("fixed index: chunk size is 0")
	} else {
		fw.want = fixedCount(size, chunkSize)
	}
	return fw
}

// Add appends the digest of the next chunk. It fails once more digests were
// added than size and chunk size allow, or after an earlier error or Close.
func (w *FixedWriter) Add(d blob.Digest) error {
	if err := w.wr.check(); err != nil {
		return err
	}
	if w.wr.n == w.want {
		w.wr.err = fmt.Errorf("fixed index: more than %d digests for size %d and chunk size %d",
			w.want, w.wr.hdr.Size, w.wr.hdr.ChunkSize)
		return w.wr.err
	}
	w.wr.add(d[:])
	return w.wr.err
}

// Close writes the remaining digests and the header with the checksum. It
// fails when fewer than ceil(size/chunkSize) digests were added, in which
// case the header is not written. It does not close the io.WriterAt; a
// second Close returns the first one's result.
func (w *FixedWriter) Close() error {
	if w.wr.err == nil && !w.wr.closed && w.wr.n != w.want {
		w.wr.err = fmt.Errorf("fixed index: %d digests for size %d and chunk size %d, want %d",
			w.wr.n, w.wr.hdr.Size, w.wr.hdr.ChunkSize, w.want)
	}
	return w.wr.close()
}

// DynamicWriter streams a dynamic index to an io.WriterAt, which should be
// empty. Close writes the header.
type DynamicWriter struct {
	wr   writer
	last uint64
}

// NewDynamicWriter returns a writer of a dynamic index.
func NewDynamicWriter(w io.WriterAt, uuid [16]byte, ctime int64) *DynamicWriter {
	return &DynamicWriter{wr: newWriter(w, Header{Kind: Dynamic, UUID: uuid, CTime: ctime})}
}

// Add appends a chunk that ends at archive offset end. It fails when end is
// below the previous end, or after an earlier error or Close.
func (w *DynamicWriter) Add(end uint64, d blob.Digest) error {
	if err := w.wr.check(); err != nil {
		return err
	}
	if end < w.last {
		w.wr.err = fmt.Errorf("dynamic index: end offset %d of entry %d is below the previous end offset %d", end, w.wr.n, w.last)
		return w.wr.err
	}
	w.last = end
	var e [dynamicEntrySize]byte
	binary.LittleEndian.PutUint64(e[:], end)
	copy(e[8:], d[:])
	w.wr.add(e[:])
	return w.wr.err
}

// Close writes the remaining entries and the header with the checksum. It
// does not close the io.WriterAt; a second Close returns the first one's
// result.
func (w *DynamicWriter) Close() error { return w.wr.close() }

// WriteFixedFile writes a fixed index of digests to path atomically: a
// temporary file in the same directory (whose name does not end in .fidx),
// fsync, rename, fsync of the directory. The file gets mode 0644, a random
// UUID and the current time as ctime.
func WriteFixedFile(path string, size, chunkSize uint64, digests []blob.Digest) error {
	return writeFile(path, fixedFill(size, chunkSize, digests))
}

// WriteFixedFileAt is WriteFixedFile for the file name in the directory open
// as dirfd (at dirPath, for errors), resolving nothing through a path or a
// symlink (see atomicfile.WriteAt); the file is chowned to owner before it
// is renamed into place unless owner.UID < 0.
func WriteFixedFileAt(dirfd int, dirPath, name string, owner fsys.Owner, size, chunkSize uint64, digests []blob.Digest) error {
	return writeFileAt(dirfd, dirPath, name, owner, fixedFill(size, chunkSize, digests))
}

func fixedFill(size, chunkSize uint64, digests []blob.Digest) fillFunc {
	return func(f *os.File, uuid [16]byte, ctime int64) error {
		w := NewFixedWriter(f, size, chunkSize, uuid, ctime)
		for _, d := range digests {
			if err := w.Add(d); err != nil {
				return err
			}
		}
		return w.Close()
	}
}

// WriteDynamicFile writes a dynamic index to path atomically, as
// WriteFixedFile does; entry i ends at ends[i] and has digest digests[i].
func WriteDynamicFile(path string, ends []uint64, digests []blob.Digest) error {
	if len(ends) != len(digests) {
		return fmt.Errorf("write index %s: %d end offsets for %d digests", path, len(ends), len(digests))
	}
	return writeFile(path, dynamicFill(ends, digests))
}

// WriteDynamicFileAt is WriteDynamicFile relative to a directory fd, as
// [WriteFixedFileAt] is WriteFixedFile.
func WriteDynamicFileAt(dirfd int, dirPath, name string, owner fsys.Owner, ends []uint64, digests []blob.Digest) error {
	if len(ends) != len(digests) {
		return fmt.Errorf("write index %s/%s: %d end offsets for %d digests", dirPath, name, len(ends), len(digests))
	}
	return writeFileAt(dirfd, dirPath, name, owner, dynamicFill(ends, digests))
}

func dynamicFill(ends []uint64, digests []blob.Digest) fillFunc {
	return func(f *os.File, uuid [16]byte, ctime int64) error {
		w := NewDynamicWriter(f, uuid, ctime)
		for i, d := range digests {
			if err := w.Add(ends[i], d); err != nil {
				return err
			}
		}
		return w.Close()
	}
}

// fillFunc writes a whole index to the empty file f.
type fillFunc func(f *os.File, uuid [16]byte, ctime int64) error

// newUUID returns a random (version 4) UUID, as PBS gives each index.
func newUUID() [16]byte {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func writeFile(path string, fill fillFunc) error {
	err := atomicfile.Write(path, 0o644, fsys.Keep, func(f *os.File) error {
		return fill(f, newUUID(), time.Now().Unix())
	})
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	return nil
}

func writeFileAt(dirfd int, dirPath, name string, owner fsys.Owner, fill fillFunc) error {
	err := atomicfile.WriteAt(dirfd, dirPath, name, 0o644, owner, func(f *os.File) error {
		return fill(f, newUUID(), time.Now().Unix())
	})
	if err != nil {
		return fmt.Errorf("index: %w", err)
	}
	return nil
}
