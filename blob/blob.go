package blob

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"runtime"
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Kind is the kind of a blob, named by its magic. The zero Kind names no
// kind; it is what [FormatError.Kind] holds when the magic is unknown.
type Kind uint8

// The four blob kinds of PBS.
const (
	Uncompressed Kind = iota + 1
	Compressed
	Encrypted
	EncryptedCompressed
)

// The magic numbers that start a blob of each kind. They are variables only
// because Go has no array constants: do not modify them. The package itself
// compares against private constants.
var (
	MagicUncompressed        = [8]byte{66, 171, 56, 7, 190, 131, 112, 161}
	MagicCompressed          = [8]byte{49, 185, 88, 66, 111, 182, 163, 127}
	MagicEncrypted           = [8]byte{123, 103, 133, 190, 34, 45, 76, 240}
	MagicEncryptedCompressed = [8]byte{230, 89, 27, 191, 11, 191, 216, 11}
)

// The magics as little-endian integers, for a switch that no caller can
// change by writing to the exported arrays.
const (
	magicUncompressed        uint64 = 0xa17083be0738ab42
	magicCompressed          uint64 = 0x7fa3b66f4258b931
	magicEncrypted           uint64 = 0xf04c2d22be85677b
	magicEncryptedCompressed uint64 = 0x0bd8bf0bbf1b59e6
)

const (
	// HeaderSize is the length of the header every blob starts with:
	// magic[8] || crc32[4].
	HeaderSize = 12

	// MaxSize is the largest plain data a blob may hold, 16 MiB. It also
	// bounds the payload after the header (after iv and tag for encrypted
	// blobs) and the output of decompression.
	MaxSize = 16 << 20

	// cryptHeaderSize is the iv[16] || tag[16] that encrypted blobs carry
	// between the header and the ciphertext.
	cryptHeaderSize = 32
)

// String returns "uncompressed", "compressed", "encrypted" or
// "encrypted+compressed", or "Kind(N)" for a value that names no kind.
func (k Kind) String() string {
	switch k {
	case Uncompressed:
		return "uncompressed"
	case Compressed:
		return "compressed"
	case Encrypted:
		return "encrypted"
	case EncryptedCompressed:
		return "encrypted+compressed"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// IsEncrypted reports whether k is [Encrypted] or [EncryptedCompressed].
func (k Kind) IsEncrypted() bool { return k == Encrypted || k == EncryptedCompressed }

// IsCompressed reports whether k is [Compressed] or [EncryptedCompressed].
func (k Kind) IsCompressed() bool { return k == Compressed || k == EncryptedCompressed }

// Magic returns the magic number of k, or zeros for a value that names no
// kind.
func (k Kind) Magic() [8]byte {
	var m [8]byte
	switch k {
	case Uncompressed:
		binary.LittleEndian.PutUint64(m[:], magicUncompressed)
	case Compressed:
		binary.LittleEndian.PutUint64(m[:], magicCompressed)
	case Encrypted:
		binary.LittleEndian.PutUint64(m[:], magicEncrypted)
	case EncryptedCompressed:
		binary.LittleEndian.PutUint64(m[:], magicEncryptedCompressed)
	}
	return m
}

// minSize is the shortest blob of kind k: the header, plus iv and tag for
// encrypted kinds.
func (k Kind) minSize() int {
	if k.IsEncrypted() {
		return HeaderSize + cryptHeaderSize
	}
	return HeaderSize
}

// KindOf returns the kind named by the magic at the start of b. It looks at
// the first 8 bytes only: it checks neither the length nor the CRC (see
// [Verify]). The error is a [*FormatError] matching [ErrTruncated] when b is
// shorter than 8 bytes, or [ErrBadMagic].
func KindOf(b []byte) (Kind, error) {
	if len(b) < len(MagicUncompressed) {
		return 0, &FormatError{Reason: ReasonTruncated, Size: len(b)}
	}
	switch binary.LittleEndian.Uint64(b) {
	case magicUncompressed:
		return Uncompressed, nil
	case magicCompressed:
		return Compressed, nil
	case magicEncrypted:
		return Encrypted, nil
	case magicEncryptedCompressed:
		return EncryptedCompressed, nil
	}
	e := &FormatError{Reason: ReasonBadMagic, Size: len(b)}
	copy(e.Magic[:], b)
	return 0, e
}

// Verify checks the header of blob b and the CRC of its payload without
// decompressing it; it works for encrypted blobs too. The error is a
// [*FormatError] matching [ErrTruncated], [ErrBadMagic], [ErrTooLarge] or
// [ErrBadCRC]. On error the Kind returned is the one the magic names, or 0
// when the magic is unknown.
func Verify(b []byte) (Kind, error) {
	k, err := KindOf(b)
	if err != nil {
		return 0, err
	}
	if len(b) < k.minSize() {
		return k, &FormatError{Reason: ReasonTruncated, Kind: k, Size: len(b)}
	}
	if len(b)-k.minSize() > MaxSize {
		return k, &FormatError{Reason: ReasonTooLarge, Kind: k, Size: len(b)}
	}
	want := binary.LittleEndian.Uint32(b[8:HeaderSize])
	if got := crc32.ChecksumIEEE(b[HeaderSize:]); got != want {
		return k, &FormatError{Reason: ReasonBadCRC, Kind: k, Size: len(b), WantCRC: want, GotCRC: got}
	}
	return k, nil
}

// Encode returns a blob holding data. With compress, the payload is data
// compressed with zstd at the fastest level (PBS uses level 1), but only when
// that is smaller than data; otherwise, and without compress, the blob is
// [Uncompressed]. Data longer than [MaxSize] gives an error matching
// [ErrTooLarge]. Encode is safe for concurrent use.
func Encode(data []byte, compress bool) ([]byte, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("encode blob of %d bytes (max %d): %w", len(data), MaxSize, ErrTooLarge)
	}
	// One allocation: a compressed payload is kept only when it is shorter
	// than data, so data fits in the same buffer; the slack lets zstd write
	// an incompressible frame (raw blocks, 3 bytes each per 128 KiB, plus
	// frame header and checksum) before Encode falls back to it.
	out := make([]byte, HeaderSize, HeaderSize+len(data)+len(data)>>10+64)
	kind := Uncompressed
	if compress && len(data) > 0 {
		enc, err := sharedEncoder()
		if err != nil {
			return nil, fmt.Errorf("encode blob: zstd encoder: %w", err)
		}
		out = enc.EncodeAll(data, out)
		if len(out)-HeaderSize < len(data) {
			kind = Compressed
		} else {
			out = out[:HeaderSize]
		}
	}
	if kind == Uncompressed {
		out = append(out, data...)
	}
	m := kind.Magic()
	copy(out, m[:])
	binary.LittleEndian.PutUint32(out[8:HeaderSize], crc32.ChecksumIEEE(out[HeaderSize:]))
	return out, nil
}

// Decode verifies blob b like [Verify] and returns its plain data, in new
// memory that does not alias b. Decompressed output is bounded by [MaxSize].
// Besides the errors of Verify, a compressed payload that decompresses to
// more than MaxSize gives a [*FormatError] matching [ErrTooLarge], and one
// that is not valid zstd matches [ErrCorrupt]. Encrypted blobs whose header
// and CRC are valid give an error matching [ErrEncrypted]. Decode is safe for
// concurrent use.
func Decode(b []byte) ([]byte, error) {
	k, err := Verify(b)
	if err != nil {
		return nil, err
	}
	payload := b[HeaderSize:]
	switch k {
	case Uncompressed:
		return bytes.Clone(payload), nil
	case Compressed:
		if len(payload) == 0 {
			return nil, &FormatError{Reason: ReasonCorrupt, Kind: k, Size: len(b), Err: errEmptyFrame}
		}
		dec, err := sharedDecoder()
		if err != nil {
			return nil, fmt.Errorf("decode blob: zstd decoder: %w", err)
		}
		out, err := dec.DecodeAll(payload, nil)
		if err != nil {
			r := ReasonCorrupt
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
				r = ReasonTooLarge
			}
			return nil, &FormatError{Reason: r, Kind: k, Size: len(b), Err: err}
		}
		if out == nil {
			out = []byte{}
		}
		return out, nil
	}
	return nil, fmt.Errorf("decode %s blob: %w", k, ErrEncrypted)
}

var errEmptyFrame = errors.New("no zstd frame")

// sharedEncoder and sharedDecoder are the package's zstd codecs, made on
// first use. EncodeAll and DecodeAll are safe for concurrent use; each runs
// up to GOMAXPROCS calls at once and queues the rest. Neither starts
// goroutines: they are only used for whole buffers, never as streams.
var (
	sharedEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	})
	sharedDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
		return zstd.NewReader(nil,
			zstd.WithDecoderMaxMemory(MaxSize),
			zstd.WithDecoderConcurrency(0))
	})
)
