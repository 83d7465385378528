// Package blob encodes and decodes PBS data blobs: the files that hold
// chunks (.chunks/XXXX/<digest>) and the small *.blob files of a snapshot.
//
// # Format
//
// A blob is magic[8] || crc32[4] || payload. The magic names one of four
// kinds: uncompressed, zstd-compressed, encrypted, encrypted+compressed.
// crc32 is CRC-32/IEEE of every byte after the 12-byte header, little-endian.
// Encrypted blobs carry iv[16] || tag[16] before the ciphertext; chunkgc never
// decrypts them, it only checks their header and CRC.
//
// # Digest
//
// A chunk's [Digest] is SHA-256 of its plain data. [Sum] computes it with
// sha256-simd.
package blob
