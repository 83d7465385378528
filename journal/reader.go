package journal

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"chunkgc/internal/nofollow"
)

// ErrNotRegular is matched by the error of reading a journal name that is
// not a regular file (a symlink, a FIFO, a directory). It is
// [nofollow.ErrNotRegular]; the error for a symlink matches
// [nofollow.ErrSymlink] too.
var ErrNotRegular = nofollow.ErrNotRegular

// Journal is one journal file as [ReadFile] read it.
type Journal struct {
	Path    string
	Header  Header
	Records []Record // the records of every intact frame, in file order
	Trailer *Trailer // nil when the journal is incomplete
	// Tail says why reading stopped before the end of the file: a
	// *FormatError matching ErrCorrupt for a torn or corrupt frame (the
	// trace of a crash), nil when the file ends after an intact frame.
	Tail error
}

// Complete reports whether the journal has its trailer: its run ended
// and closed it.
func (j *Journal) Complete() bool { return j.Trailer != nil }

// ReadFile reads the journal name (a file name, such as [FileName] of a
// run) in the directory open as dirfd, whose path dir names it in Path and
// in errors: its header, the records of every intact frame and the trailer
// if the file is complete. The file is opened relative to dirfd, never
// following a symlink. A torn or corrupt tail is not an error (see
// [Journal.Tail]); a missing or bad magic or header is a *FormatError
// matching [ErrBadHeader], a name that is not a regular file (a symlink or
// a FIFO in its place) matches [ErrNotRegular], and I/O errors are
// *fs.PathError. Every error names the journal's path.
func ReadFile(dirfd int, dir, name string) (*Journal, error) {
	j := &Journal{Path: filepath.Join(dir, name)}
	s, err := scanAt(dirfd, dir, name, func(r *Record) error {
		j.Records = append(j.Records, *r)
		return nil
	}, false)
	if err != nil {
		return nil, err
	}
	j.Header, j.Trailer, j.Tail = s.header, s.trailer, s.tail
	return j, nil
}

// scanAt opens the journal name of dirfd (dir is its path) with
// [nofollow.OpenFile], a regular file, and scans it as scan does.
func scanAt(dirfd int, dir, name string, fn func(*Record) error, headerOnly bool) (scanned, error) {
	f, err := nofollow.OpenFile(dirfd, dir, name)
	if err != nil {
		if pe, ok := errors.AsType[*fs.PathError](err); ok && errors.Is(err, nofollow.ErrSymlink) {
			// A symlink is not a regular file either: callers that
			// skip what is not a journal match ErrNotRegular alone.
			err = &fs.PathError{Op: pe.Op, Path: pe.Path, Err: fmt.Errorf("%w: %w", ErrNotRegular, pe.Err)}
		}
		return scanned{}, err
	}
	defer f.Close()
	return scan(f, f.Name(), fn, headerOnly)
}

// scanned is what scan found.
type scanned struct {
	header  Header
	trailer *Trailer
	records int64 // in intact frames
	tail    error
}

// scanner reads frames from a journal.
type scanner struct {
	r       *bufio.Reader
	path    string
	off     int64 // of the next frame
	payload []byte
	raw     []byte
	dec     *zstd.Decoder
}

// frame is one frame's header.
type frame struct {
	kind       byte
	plen, rlen int
	crc        uint32
	head       [frameHeaderSize]byte
	off        int64
}

func (s *scanner) corrupt(off int64, format string, args ...any) error {
	return &FormatError{Path: s.path, Offset: off, Err: ErrCorrupt, Detail: fmt.Sprintf(format, args...)}
}

// errIO marks an error of the reader itself (not of the format).
type errIO struct{ err error }

func (e errIO) Error() string { return e.err.Error() }

// next reads the next frame and its payload into s.payload, checking its
// lengths (against the limits of its kind) and its CRC. It returns io.EOF
// at a clean end of the file, an errIO for a read error, and a
// *FormatError matching ErrCorrupt for a bad frame.
func (s *scanner) next() (frame, error) {
	f := frame{off: s.off}
	n, err := io.ReadFull(s.r, f.head[:])
	switch {
	case err == io.EOF:
		return f, io.EOF
	case err == io.ErrUnexpectedEOF:
		return f, s.corrupt(f.off, "truncated frame header (%d of %d bytes)", n, frameHeaderSize)
	case err != nil:
		return f, errIO{err}
	}
	h := f.head[:]
	f.kind = h[0]
	f.plen = int(binary.LittleEndian.Uint32(h[4:]))
	f.rlen = int(binary.LittleEndian.Uint32(h[8:]))
	f.crc = binary.LittleEndian.Uint32(h[12:])
	if h[1]|h[2]|h[3] != 0 {
		return f, s.corrupt(f.off, "reserved frame header bytes are not zero")
	}
	switch f.kind {
	case kindHeader, kindTrailer:
		if f.plen != f.rlen || f.plen > maxJSON {
			return f, s.corrupt(f.off, "%c frame of %d/%d bytes", f.kind, f.plen, f.rlen)
		}
	case kindRecords:
		if f.plen == 0 || f.plen > maxRecordsPayload || f.rlen == 0 || f.rlen > maxRecordsRaw || f.rlen%recordSize != 0 {
			return f, s.corrupt(f.off, "records frame of %d bytes holding %d", f.plen, f.rlen)
		}
	default:
		return f, s.corrupt(f.off, "unknown frame kind %#x", f.kind)
	}
	if cap(s.payload) < f.plen {
		s.payload = make([]byte, f.plen)
	}
	s.payload = s.payload[:f.plen]
	n, err = io.ReadFull(s.r, s.payload)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return f, s.corrupt(f.off, "truncated frame (%d of %d payload bytes)", n, f.plen)
	}
	if err != nil {
		return f, errIO{err}
	}
	if crc := crc32.Update(crc32.Checksum(h[:12], castagnoli), castagnoli, s.payload); crc != f.crc {
		return f, s.corrupt(f.off, "frame checksum %08x, want %08x", crc, f.crc)
	}
	s.off += int64(frameHeaderSize + f.plen)
	return f, nil
}

// records decompresses the payload of records frame f into s.raw.
func (s *scanner) records(f frame) error {
	if s.dec == nil {
		dec, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(maxRecordsRaw))
		if err != nil {
			return errIO{err}
		}
		s.dec = dec
	}
	raw, err := s.dec.DecodeAll(s.payload, s.raw[:0])
	if raw != nil {
		s.raw = raw
	}
	if err != nil {
		return s.corrupt(f.off, "records frame: %v", err)
	}
	if len(raw) != f.rlen {
		return s.corrupt(f.off, "records frame decodes to %d bytes, want %d", len(raw), f.rlen)
	}
	return nil
}

// scan reads a journal from r (path names it in errors), calling fn (if
// not nil) for every record of every intact frame; an error from fn stops
// the scan and is returned. With headerOnly it stops after the header.
func scan(r io.Reader, path string, fn func(*Record) error, headerOnly bool) (res scanned, err error) {
	s := &scanner{r: bufio.NewReaderSize(r, 64<<10), path: path}
	defer func() {
		if s.dec != nil {
			s.dec.Close()
		}
		if e, ok := err.(errIO); ok {
			err = fmt.Errorf("read journal %s: %w", path, e.err)
		}
	}()
	badHeader := func(off int64, format string, args ...any) error {
		return &FormatError{Path: path, Offset: off, Err: ErrBadHeader, Detail: fmt.Sprintf(format, args...)}
	}

	var m [len(magic)]byte
	n, err := io.ReadFull(s.r, m[:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return res, errIO{err}
	}
	if string(m[:n]) != magic {
		if n == len(m) && string(m[:len(magicPrefix)]) == magicPrefix {
			return res, badHeader(0, "unsupported version %q", m[len(magicPrefix):len(m)-1])
		}
		if n < len(m) && string(m[:n]) == magic[:n] {
			return res, badHeader(0, "truncated magic (%d bytes)", n)
		}
		return res, badHeader(0, "not a journal")
	}
	s.off = int64(len(magic))
	f, err := s.next()
	if err != nil {
		if err == io.EOF {
			return res, badHeader(s.off, "no header frame")
		}
		if fe, ok := err.(*FormatError); ok {
			fe.Err = ErrBadHeader
		}
		return res, err
	}
	if f.kind != kindHeader {
		return res, badHeader(f.off, "first frame is of kind %#x, not a header", f.kind)
	}
	if err := json.Unmarshal(s.payload, &res.header); err != nil {
		return res, badHeader(f.off, "header: %v", err)
	}
	if !ValidRunID(res.header.RunID) {
		return res, badHeader(f.off, "header: invalid run ID %q", res.header.RunID)
	}
	if headerOnly {
		return res, nil
	}

	var rec Record // one for every call of fn: it escapes

	for {
		f, err := s.next()
		if err == io.EOF {
			return res, nil
		}
		if fe, ok := err.(*FormatError); ok {
			res.tail = fe
			return res, nil
		}
		if err != nil {
			return res, err
		}
		switch f.kind {
		case kindHeader:
			res.tail = s.corrupt(f.off, "a second header frame")
			return res, nil
		case kindTrailer:
			var t Trailer
			if err := json.Unmarshal(s.payload, &t); err != nil {
				res.tail = s.corrupt(f.off, "trailer: %v", err)
				return res, nil
			}
			res.trailer = &t
			if _, err := s.r.ReadByte(); err != io.EOF {
				if err != nil {
					return res, errIO{err}
				}
				res.tail = s.corrupt(s.off, "data after the trailer")
			}
			return res, nil
		}
		if err := s.records(f); err != nil {
			if fe, ok := err.(*FormatError); ok {
				res.tail = fe
				return res, nil
			}
			return res, err
		}
		for b := s.raw; len(b) >= recordSize; b = b[recordSize:] {
			if fn != nil {
				rec = getRecord(b)
				if err := fn(&rec); err != nil {
					return res, err
				}
			}
			res.records++
		}
	}
}
