package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"time"

	"chunkgc/blob"
)

// Record is one chunk a run took out of the store.
type Record struct {
	Digest blob.Digest
	Size   uint64 // file size in bytes
	Atime  int64  // the chunk file's atime when it was removed, unix nanoseconds
	Flags  Flags
}

// Flags say how a chunk left the store. A record without flags is a chunk
// file that was unlinked.
type Flags uint8

// The flags of a [Record].
const (
	// Bad marks a <hex>.<n>.bad file rather than a chunk.
	Bad Flags = 1 << iota
	// Quarantined marks a chunk moved to quarantine, not unlinked.
	Quarantined
	// Purged marks a chunk removed from quarantine.
	Purged
)

// String returns the set flags joined by "|" ("bad|quarantined"), "-" for
// none, and unknown bits as a hex number.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	var parts []string
	for _, n := range []struct {
		f    Flags
		name string
	}{{Bad, "bad"}, {Quarantined, "quarantined"}, {Purged, "purged"}} {
		if f&n.f != 0 {
			parts = append(parts, n.name)
			f &^= n.f
		}
	}
	if f != 0 {
		parts = append(parts, "0x"+strconv.FormatUint(uint64(f), 16))
	}
	return strings.Join(parts, "|")
}

// Header describes the run; it is written once, at the start of the file.
type Header struct {
	// RunID names the run and the file, <RunID>.journal: 1 to 64 bytes
	// of [A-Za-z0-9._-], not starting with '.', such as
	// "20261202T170102Z-12345".
	RunID     string        `json:"run_id"`
	Store     string        `json:"store"`
	Host      string        `json:"host"`
	StartTime int64         `json:"start_time"` // unix seconds
	MinAtime  int64         `json:"min_atime"`  // unix seconds: chunks with an atime before it were garbage
	Cutoff    time.Duration `json:"cutoff_ns"`
}

// Trailer closes a complete journal.
type Trailer struct {
	Records int64  `json:"records"`
	Bytes   uint64 `json:"bytes"`
	EndTime int64  `json:"end_time"`      // unix seconds
	Err     string `json:"err,omitempty"` // "" if the run succeeded; at most MaxErrLen bytes are kept
}

// Extension is the file name extension of a journal.
const Extension = ".journal"

// MaxErrLen bounds the Trailer's Err that [Writer.Close] writes; a longer
// one is cut (at a UTF-8 boundary) and ends in "…".
const MaxErrLen = 4096

// ErrBadRunID is returned by [Create] for a RunID that is not a safe file
// name token (see [Header]).
var ErrBadRunID = errors.New("invalid journal run ID")

// ErrBadHeader is matched by the error of reading a journal whose magic or
// header frame is missing, torn or corrupt, or of a version this package
// does not read.
var ErrBadHeader = errors.New("bad journal header")

// ErrCorrupt is matched by the Tail of a journal whose records stop at a
// torn or corrupt frame.
var ErrCorrupt = errors.New("corrupt journal frame")

// ErrClosed is returned by [Writer.Add] and [Writer.Close] once the Writer
// is closed or aborted.
var ErrClosed = errors.New("journal closed")

// FormatError says where and why reading a journal stopped. It matches
// [ErrBadHeader] or [ErrCorrupt] with errors.Is.
type FormatError struct {
	Path   string
	Offset int64  // of the frame (or magic) that is bad
	Err    error  // ErrBadHeader or ErrCorrupt
	Detail string // what is wrong, such as "truncated frame"
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("journal %s: offset %d: %v: %s", e.Path, e.Offset, e.Err, e.Detail)
}

func (e *FormatError) Unwrap() error { return e.Err }

// ValidRunID reports whether id is a safe RunID: 1 to 64 bytes of
// [A-Za-z0-9._-], not starting with '.'.
func ValidRunID(id string) bool {
	if len(id) == 0 || len(id) > 64 || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// FileName returns the file name of the journal of run id, <id>.journal.
func FileName(id string) string { return id + Extension }

// The layout; see doc.go.
const (
	magic           = "chunkgc-journal 1\n"
	magicPrefix     = "chunkgc-journal "
	frameHeaderSize = 16
	recordSize      = 56

	kindHeader  = 'H'
	kindRecords = 'R'
	kindTrailer = 'T'

	// maxRecordsRaw bounds rlen of a records frame the reader accepts
	// (the writer writes at most flushRecords*recordSize), and
	// maxRecordsPayload its plen (zstd's worst case for incompressible
	// input is a little over rlen).
	maxRecordsRaw     = 1 << 20
	maxRecordsPayload = maxRecordsRaw + maxRecordsRaw/64 + 1024
	// maxJSON bounds the header and the trailer.
	maxJSON = 64 << 10

	// flushRecords is how many buffered records make the Writer write a
	// frame: 65520 bytes raw.
	flushRecords = 65536 / recordSize
	// flushInterval is how long the oldest buffered record waits at most
	// before the Writer writes a frame.
	flushInterval = time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// putFrameHeader fills h (frameHeaderSize bytes) for a frame of kind whose
// payload follows it.
func putFrameHeader(h []byte, kind byte, payload []byte, rawLen int) {
	h[0], h[1], h[2], h[3] = kind, 0, 0, 0
	binary.LittleEndian.PutUint32(h[4:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[8:], uint32(rawLen))
	crc := crc32.Update(crc32.Checksum(h[:12], castagnoli), castagnoli, payload)
	binary.LittleEndian.PutUint32(h[12:], crc)
}

// putRecord encodes r into b (recordSize bytes), padding included.
func putRecord(b []byte, r *Record) {
	_ = b[recordSize-1]
	copy(b, r.Digest[:])
	binary.LittleEndian.PutUint64(b[32:], r.Size)
	binary.LittleEndian.PutUint64(b[40:], uint64(r.Atime))
	b[48] = byte(r.Flags)
	clear(b[49:recordSize])
}

// getRecord decodes the record in b (recordSize bytes).
func getRecord(b []byte) Record {
	_ = b[recordSize-1]
	var r Record
	copy(r.Digest[:], b)
	r.Size = binary.LittleEndian.Uint64(b[32:])
	r.Atime = int64(binary.LittleEndian.Uint64(b[40:]))
	r.Flags = Flags(b[48])
	return r
}
