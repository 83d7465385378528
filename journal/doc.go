// Package journal writes and reads the per-run deletion journal: one compact
// file per GC run that took anything out of the store, holding, for every
// chunk removed or quarantined, its digest, size and atime, so that
// "chunkgc journal" can answer "did GC remove this chunk, when, and why (its
// atime against the run's min_atime)".
//
// # Vocabulary
//
// A journal is the file <RunID>.journal in the journal directory. Its
// [Header] describes the run, its [Record]s the chunks, and its [Trailer]
// closes it: a journal with a trailer is complete, one without (the run was
// killed, or [Writer.Abort]ed) is incomplete and holds a readable prefix of
// what the run removed. A frame is the unit the [Writer] appends with one
// write(2); the reader keeps every intact frame and stops at the first torn
// or corrupt one, the tail.
//
// # File format (version 1)
//
// All integers are little-endian.
//
//	file    = magic header-frame { records-frame } [ trailer-frame ]
//	magic   = "chunkgc-journal 1\n"             18 bytes; the digit is the version
//	frame   = kind[1] zero[3] plen[4] rlen[4] crc[4] payload[plen]
//	  kind    'H' header, 'R' records, 'T' trailer
//	  zero    0, 0, 0 (reserved)
//	  plen    payload length in bytes
//	  rlen    length of the payload once decoded: for 'R' the decompressed
//	          length, a non-zero multiple of 56, at most 1 MiB; for 'H' and
//	          'T' equal to plen, at most 64 KiB
//	  crc     CRC-32C (Castagnoli) of kind..rlen (the first 12 bytes of the
//	          frame) followed by the payload
//	'H'     payload: the Header as a JSON object (run_id, store, host,
//	        start_time, min_atime, cutoff_ns); always the first frame
//	'R'     payload: one independent zstd frame (RFC 8878) holding rlen/56
//	        records of 56 bytes each:
//	          digest[32] size u64 atime i64 (unix ns) flags u8 zero[7]
//	'T'     payload: the Trailer as a JSON object (records, bytes,
//	        end_time, err); the last frame of a complete journal
//
// A reader ignores unknown JSON fields and the zero padding of a record, and
// passes unknown flag bits through, so that a later writer can add to them
// within version 1.
//
// # Reading a damaged journal
//
// The magic and the header frame must be intact: otherwise reading fails
// with an error matching [ErrBadHeader] that names the path. After it,
// reading stops at the first frame that is cut short, fails its CRC, has an
// unknown kind or bad lengths, or does not decompress to rlen bytes; the
// records of the frames before it are the journal's, and the reason is the
// Tail ([FormatError] matching [ErrCorrupt]). Nothing after the trailer is
// expected; bytes there are reported as a Tail of a complete journal.
//
// # Crash behaviour, honestly
//
// The Writer buffers records and writes a frame, with a single write(2),
// when 1170 records (65520 bytes raw) are buffered, when 1 s has passed
// since the oldest buffered record was added (a timer, so this holds even
// when no further Add comes), and at Close and Abort. A SIGKILL therefore
// loses at most the records added in the last ~1 s (plus the time a write in
// progress takes) and leaves whole frames plus at most one torn frame. The
// bound is for a process crash: the file is fsynced only by [Writer.Close]
// and [Writer.Abort], so a power loss may lose every frame written since
// Create, and the reader then sees a shorter, still readable, prefix (or no
// file, or an empty one, which is a bad header).
//
// # Safety
//
// GC runs as root in a directory the store's owner (an unprivileged user who
// may be hostile) can write. [Create] and [Prune] work only through a
// directory fd GC opened, with *at calls through the fsys seam, never
// follow a symlink (O_NOFOLLOW, and O_EXCL for the new file), and touch only
// regular files. [ReadFile], [List] and [Find], the read side of the CLI,
// work the same way: relative to a directory fd the caller opened (the CLI
// opens it from the store's base fd, no component followed), each journal
// opened with [nofollow.OpenFile] (O_NOFOLLOW, O_NONBLOCK, a regular file
// or an error matching [ErrNotRegular]), and they bound every length they
// read, so a planted symlink, FIFO or file cannot make them leave the
// directory, block, or allocate without limit.
package journal
