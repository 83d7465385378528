package blob

import "fmt"

// ZeroChunkSize is the size of the all-zero chunk the atime probe inserts,
// 4 MiB: PBS's default fixed chunk size.
const ZeroChunkSize = 4 << 20

// ZeroChunk returns the compressed blob of size zero bytes and the digest of
// that plain data. ZeroChunk(ZeroChunkSize) has digest
// bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8; its blob
// is a few hundred bytes. A size above [MaxSize] gives an error matching
// [ErrTooLarge].
func ZeroChunk(size int) (blobBytes []byte, d Digest, err error) {
	if size < 0 {
		return nil, d, fmt.Errorf("zero chunk of %d bytes: negative size", size)
	}
	if size > MaxSize {
		return nil, d, fmt.Errorf("zero chunk of %d bytes (max %d): %w", size, MaxSize, ErrTooLarge)
	}
	zeros := make([]byte, size)
	blobBytes, err = Encode(zeros, true)
	if err != nil {
		return nil, d, fmt.Errorf("zero chunk of %d bytes: %w", size, err)
	}
	return blobBytes, Sum(zeros), nil
}
