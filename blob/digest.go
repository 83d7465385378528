package blob

import (
	"encoding/hex"
	"fmt"

	sha256 "github.com/minio/sha256-simd"
)

// DigestSize is the length of a chunk digest in bytes.
const DigestSize = 32

// Digest is the SHA-256 of a chunk's plain data; it names the chunk file.
type Digest [DigestSize]byte

// String returns the 64 lowercase hex digits that name the chunk file.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Prefix returns the chunk's prefix directory number: its first two bytes,
// which are the first four hex digits of its name.
func (d Digest) Prefix() uint16 { return uint16(d[0])<<8 | uint16(d[1]) }

// AppendHex appends the 64 hex digits of d to dst without allocating when dst
// has room.
func (d Digest) AppendHex(dst []byte) []byte { return hex.AppendEncode(dst, d[:]) }

// ParseDigest parses 64 lowercase hex digits.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*DigestSize {
		return d, fmt.Errorf("parse digest %q: want %d hex digits, have %d", s, 2*DigestSize, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return d, fmt.Errorf("parse digest %q: byte %d is not a lowercase hex digit", s, i)
		}
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("parse digest %q: %w", s, err)
	}
	return d, nil
}

// Sum returns the SHA-256 digest of p.
func Sum(p []byte) Digest { return Digest(sha256.Sum256(p)) }
