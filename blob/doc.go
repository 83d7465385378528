// Package blob encodes and decodes PBS data blobs: the files that hold
// chunks (.chunks/XXXX/<digest>) and the small *.blob files of a snapshot.
//
// # Format
//
// A blob is magic[8] || crc32[4] || payload. The magic names one of four
// kinds ([Kind]): uncompressed, zstd-compressed, encrypted,
// encrypted+compressed. crc32 is CRC-32/IEEE of every byte after the 12-byte
// header ([HeaderSize]), little-endian. Encrypted blobs carry
// iv[16] || tag[16] before the ciphertext; chunkgc never decrypts them, it
// only checks their header and CRC ([Verify]).
//
// # Sizes
//
// A blob holds at most [MaxSize] (16 MiB) of plain data. [Verify] rejects a
// payload (the ciphertext, for encrypted blobs) longer than that, [Decode]
// stops decompressing past it, and [Encode] refuses longer data.
//
// # Compression
//
// [Encode] compresses with zstd at its fastest level (PBS uses zstd level 1)
// and keeps the result only when it is shorter than the plain data; otherwise
// it writes an uncompressed blob. Any valid zstd frame decodes, so blobs
// written by PBS's libzstd and by chunkgc's encoder read alike, although the
// bytes differ. One encoder and one decoder are shared by the package and
// made on first use; Encode and Decode are safe for concurrent use.
//
// # Errors
//
// A malformed blob gives a [*FormatError] whose [Reason] says what is wrong;
// it matches [ErrTruncated], [ErrBadMagic], [ErrBadCRC], [ErrTooLarge] or
// [ErrCorrupt] with errors.Is. Decoding a well-formed encrypted blob gives
// [ErrEncrypted]. Errors do not name files: callers wrap them with the path.
//
// # Digest
//
// A chunk's [Digest] is SHA-256 of its plain data. [Sum] computes it with
// sha256-simd. [ZeroChunk] builds the 4 MiB all-zero chunk that the atime
// probe inserts, and its digest bb9f8df6…3af8.
package blob
