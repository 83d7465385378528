// Package index reads and writes PBS chunk index files: the fixed index
// (*.fidx, a disk image cut into equal chunks) and the dynamic index (*.didx,
// a file archive cut into variable chunks). An index lists, in order, the
// digests of the chunks under .chunks/ that make up one archive; GC marks
// exactly these chunks.
//
// The format is Proxmox Backup Server's (pbs-datastore fixed_index.rs and
// dynamic_index.rs), so indexes written here are read by PBS and vice versa.
// All integers are little-endian. Both kinds start with a header of
// [HeaderSize] (4096) bytes, one page, followed by the body.
//
// # Fixed index
//
// A *.fidx file is
//
//	offset  size  field
//	     0     8  magic       47 127 65 237 145 253 15 205
//	     8    16  uuid        random, written once per index
//	    24     8  ctime       i64, creation time in Unix seconds
//	    32    32  index_csum  SHA-256(digest1 || digest2 || …)
//	    64     8  size        u64, bytes of the image
//	    72     8  chunk_size  u64, bytes per chunk (the last one may be short)
//	    80  4016  reserved    zero when written, ignored when read
//	  4096  32·n  digests     n = ceil(size / chunk_size) chunk digests
//
// Its "data bytes" (index-data-bytes in .gc-status) is size.
//
// # Dynamic index
//
// A *.didx file is
//
//	offset  size  field
//	     0     8  magic       28 145 78 165 25 186 179 205
//	     8    16  uuid
//	    24     8  ctime       i64, Unix seconds
//	    32    32  index_csum  SHA-256(end1 || digest1 || end2 || digest2 || …)
//	    64  4032  reserved    zero when written, ignored when read
//	  4096  40·n  entries     end u64 || digest[32]
//
// end is the cumulative end offset of the chunk in the archive, so entry i
// covers bytes [end(i-1), end(i)) with end(-1) = 0, and the ends never
// decrease. The checksum covers each end as its 8 little-endian bytes.
// Its data bytes is the last end, or 0 for an empty index.
//
// # Validation
//
// [Open] and [NewReader] read the header and check, without reading the
// body:
//   - the file holds at least 8 bytes and they are one of the two magics;
//     when the name ends in .fidx or .didx the magic must be that kind's;
//   - the file holds the whole 4096-byte header;
//   - the body is a whole number of entries (32 or 40 bytes);
//   - fixed: chunk_size is not 0, and the body holds exactly
//     ceil(size/chunk_size) digests.
//
// [Reader.Each] streams the body in 64 KiB batches and checks, as it goes,
// that dynamic ends never decrease, that the file is still as long as it was
// at open, and at the end that the body's SHA-256 equals index_csum. Each
// calls its callback for the entries it has read before it can know the
// checksum: a caller that must not act on a corrupt index buffers, while GC,
// whose action (touching a chunk) is harmless, acts at once and stops on the
// error.
//
// Every violation is a [*CorruptError], which names the file, the reason and
// the byte offset, and matches [ErrCorrupt] with errors.Is. The reserved
// bytes are not checked, as PBS does not check them.
//
// # Writing
//
// [FixedWriter] and [DynamicWriter] stream entries to an io.WriterAt in
// batches and write the header, with the checksum, on Close; they refuse
// a fixed index whose digest count does not match its size and a dynamic
// index whose ends decrease, so they never write what the readers reject.
// [WriteFixedFile] and [WriteDynamicFile] write a whole index atomically
// (temporary file, fsync, rename, fsync of the directory).
package index
