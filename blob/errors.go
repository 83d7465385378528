package blob

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinels that a [*FormatError] matches with errors.Is, one per [Reason].
var (
	// ErrTruncated is matched when a blob is shorter than its header (plus
	// iv and tag for encrypted kinds).
	ErrTruncated = errors.New("blob truncated")
	// ErrBadMagic is matched when a blob starts with none of the four
	// magics.
	ErrBadMagic = errors.New("blob magic unknown")
	// ErrBadCRC is matched when the CRC in a blob's header does not match
	// its payload.
	ErrBadCRC = errors.New("blob crc32 mismatch")
	// ErrTooLarge is matched when a blob's payload exceeds [MaxSize], when
	// it decompresses to more than MaxSize, and when [Encode] or
	// [ZeroChunk] is asked for more than MaxSize bytes.
	ErrTooLarge = errors.New("blob too large")
	// ErrCorrupt is matched when a compressed blob has a valid CRC but its
	// payload is not a valid zstd frame.
	ErrCorrupt = errors.New("blob payload corrupt")
)

// ErrEncrypted is returned (wrapped) by [Decode] for an encrypted blob whose
// header and CRC are valid: chunkgc has no keys and never decrypts.
var ErrEncrypted = errors.New("blob is encrypted")

// Reason says what is wrong with a blob.
type Reason uint8

// The reasons of a [FormatError]; each has a sentinel of the same name with
// an Err prefix.
const (
	ReasonTruncated Reason = iota + 1
	ReasonBadMagic
	ReasonBadCRC
	ReasonTooLarge
	ReasonCorrupt
)

// reasons holds each [Reason]'s description and sentinel.
var reasons = [...]struct {
	name     string
	sentinel error
}{
	ReasonTruncated: {"truncated", ErrTruncated},
	ReasonBadMagic:  {"bad magic", ErrBadMagic},
	ReasonBadCRC:    {"bad crc", ErrBadCRC},
	ReasonTooLarge:  {"too large", ErrTooLarge},
	ReasonCorrupt:   {"corrupt", ErrCorrupt},
}

// known reports whether r is one of the reasons.
func (r Reason) known() bool { return r != 0 && int(r) < len(reasons) }

// String returns a short description such as "truncated".
func (r Reason) String() string {
	if !r.known() {
		return "Reason(" + strconv.Itoa(int(r)) + ")"
	}
	return reasons[r].name
}

func (r Reason) sentinel() error {
	if !r.known() {
		return nil
	}
	return reasons[r].sentinel
}

// FormatError describes a blob that is not well formed. It matches the
// sentinel of its Reason with errors.Is, and Err when that is set. It does not
// name a file: callers wrap it with the path.
type FormatError struct {
	Reason Reason
	// Kind is the kind the magic names, 0 when the magic is unknown or the
	// blob is too short to hold one.
	Kind Kind
	// Size is the length of the blob in bytes.
	Size int
	// Magic holds the first 8 bytes of the blob when Reason is
	// ReasonBadMagic.
	Magic [8]byte
	// WantCRC is the CRC in the header and GotCRC the CRC of the payload,
	// when Reason is ReasonBadCRC.
	WantCRC, GotCRC uint32
	// Err is the decompressor's error, for ReasonCorrupt and for
	// ReasonTooLarge found while decompressing; nil otherwise.
	Err error
}

func (e *FormatError) Error() string {
	switch e.Reason {
	case ReasonTruncated:
		if e.Kind == 0 {
			return fmt.Sprintf("blob truncated: %d bytes, the header needs %d", e.Size, HeaderSize)
		}
		return fmt.Sprintf("%s blob truncated: %d bytes, need at least %d", e.Kind, e.Size, e.Kind.minSize())
	case ReasonBadMagic:
		return fmt.Sprintf("blob of %d bytes has unknown magic %x", e.Size, e.Magic)
	case ReasonBadCRC:
		return fmt.Sprintf("%s blob of %d bytes: crc32 mismatch: header has %08x, payload has %08x",
			e.Kind, e.Size, e.WantCRC, e.GotCRC)
	case ReasonTooLarge:
		if e.Err != nil {
			return fmt.Sprintf("%s blob of %d bytes: decompresses to more than %d bytes: %v", e.Kind, e.Size, MaxSize, e.Err)
		}
		return fmt.Sprintf("%s blob too large: %d bytes, payload exceeds %d", e.Kind, e.Size, MaxSize)
	case ReasonCorrupt:
		return fmt.Sprintf("%s blob of %d bytes: corrupt payload: %v", e.Kind, e.Size, e.Err)
	}
	return fmt.Sprintf("%s blob of %d bytes: %s", e.Kind, e.Size, e.Reason)
}

// Unwrap returns the sentinel of e.Reason and e.Err, when set.
func (e *FormatError) Unwrap() []error {
	var errs []error
	if s := e.Reason.sentinel(); s != nil {
		errs = append(errs, s)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}
