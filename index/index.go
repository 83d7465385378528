package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"chunkgc/blob"
)

// HeaderSize is the size of the header of both index kinds: one page.
const HeaderSize = 4096

// Kind is the kind of an index file.
type Kind uint8

const (
	// Fixed is a fixed index (*.fidx): equal-sized chunks of a disk image.
	Fixed Kind = iota + 1
	// Dynamic is a dynamic index (*.didx): variable chunks of a file archive.
	Dynamic
)

// kinds holds each [Kind]'s name and file name suffix.
var kinds = [...]struct{ name, suffix string }{
	Fixed:   {"fixed", ".fidx"},
	Dynamic: {"dynamic", ".didx"},
}

// known reports whether k is one of the kinds.
func (k Kind) known() bool { return k != 0 && int(k) < len(kinds) }

// String returns "fixed" or "dynamic".
func (k Kind) String() string {
	if !k.known() {
		return "Kind(" + strconv.Itoa(int(k)) + ")"
	}
	return kinds[k].name
}

// Suffix returns the file name suffix of the kind: ".fidx" or ".didx".
func (k Kind) Suffix() string {
	if !k.known() {
		return ""
	}
	return kinds[k].suffix
}

// entrySize is the size of one body entry.
func (k Kind) entrySize() int {
	if k == Dynamic {
		return dynamicEntrySize
	}
	return blob.DigestSize
}

// KindOf returns the kind of an index file by its name's suffix, .fidx or
// .didx, and false for any other name.
func KindOf(name string) (Kind, bool) {
	for k := Fixed; k.known(); k++ {
		if strings.HasSuffix(name, k.Suffix()) {
			return k, true
		}
	}
	return 0, false
}

// Header is the decoded header of an index file.
type Header struct {
	Kind  Kind
	UUID  [16]byte
	CTime int64 // creation time, Unix seconds
	// Csum is the SHA-256 of the body as the header states it; Reader.Each
	// checks it.
	Csum [32]byte
	// Size is the image size in bytes; fixed indexes only.
	Size uint64
	// ChunkSize is the size of each chunk but possibly the last; fixed
	// indexes only.
	ChunkSize uint64
}

// Header field offsets and sizes.
const (
	magicSize        = 8
	offUUID          = 8
	offCTime         = 24
	offCsum          = 32
	offSize          = 64
	offChunkSize     = 72
	dynamicEntrySize = 8 + blob.DigestSize
)

var (
	fixedMagic   = [magicSize]byte{47, 127, 65, 237, 145, 253, 15, 205}
	dynamicMagic = [magicSize]byte{28, 145, 78, 165, 25, 186, 179, 205}
)

// ErrCorrupt matches (with errors.Is) every error that says an index file is
// malformed: a [*CorruptError] from [Open], [NewReader] or [Reader.Each].
var ErrCorrupt = errors.New("corrupt index file")

// CorruptError is returned when an index file is malformed: bad magic, short
// header, ragged body, digest count not matching size/chunk_size, checksum
// mismatch, decreasing dynamic end offsets, or a file that shrank while it
// was read. It matches [ErrCorrupt].
type CorruptError struct {
	Path   string // the file, or the name given to NewReader
	Reason string
	Offset int64 // byte offset in the file where the problem was found
}

// Error names the file, the reason and the offset.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt index file %s: %s (at byte %d)", e.Path, e.Reason, e.Offset)
}

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// fixedCount returns ceil(size/chunkSize); chunkSize must not be 0.
func fixedCount(size, chunkSize uint64) uint64 {
	n := size / chunkSize
	if size%chunkSize != 0 {
		n++
	}
	return n
}

// encodeHeader returns the on-disk header for h.
func encodeHeader(h *Header) []byte {
	b := make([]byte, HeaderSize)
	if h.Kind == Dynamic {
		copy(b, dynamicMagic[:])
	} else {
		copy(b, fixedMagic[:])
	}
	copy(b[offUUID:], h.UUID[:])
	binary.LittleEndian.PutUint64(b[offCTime:], uint64(h.CTime))
	copy(b[offCsum:], h.Csum[:])
	if h.Kind == Fixed {
		binary.LittleEndian.PutUint64(b[offSize:], h.Size)
		binary.LittleEndian.PutUint64(b[offChunkSize:], h.ChunkSize)
	}
	return b
}
