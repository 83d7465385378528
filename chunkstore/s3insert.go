package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/locking"
)

// S3Putter is what an S3 insert asks of the bucket; *objstore.Client is one.
type S3Putter interface {
	// PutIfAbsent uploads data as key unless an object of that key exists
	// (PUT with If-None-Match: *; a 412 answer is a duplicate, no error).
	PutIfAbsent(ctx context.Context, key string, data []byte) (created bool, err error)
}

// UsingSuffix ends the name of an S3 datastore cache's <hex>.using marker
// (0 bytes): GC's phase 1 found the chunk referenced and not cached, so
// its object is expected; PBS accepts exactly this suffix.
const UsingSuffix = ".using"

// S3ChunkLockTimeout bounds an insert's wait for a chunk lock (GC holds
// one until the DeleteObjects of its batch is answered; PBS writers wait
// up to 3 h).
const S3ChunkLockTimeout = 10 * time.Minute

// InsertS3 stores chunk d (blob b) in an S3 datastore whose local cache is
// s and whose objects are <store>/.chunks/<p>/<hex> in bucket by PBS's insert
// protocol, made safe against GC (SPEC §12): under the chunk's lock, a
// chunk with a local file (cached or an empty marker) is touched — the
// local file is what GC's sweep decides by, so "duplicate" is never
// answered without a fresh atime (PBS's cache hit skips the touch); a
// chunk without one is uploaded with If-None-Match (a 412 is a duplicate)
// and only then gets its local file, the cached blob or with noCache an
// empty marker, freshly written: a local file must never claim an object
// that does not exist. Its .using marker, if any, goes. After an upload
// error nothing local is written: the outcome is unknown, and a stray
// object is removed by a later GC once it is old.
func (s *Store) InsertS3(ctx context.Context, lk *locking.Dir, bucket S3Putter, store string, noCache bool, b []byte, d blob.Digest) (pre bool, size int64, err error) {
	hex := d.String()
	if _, err := blob.Verify(b); err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	lock, err := lk.LockChunk(ctx, hex, S3ChunkLockTimeout)
	if err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	defer lock.Unlock()
	dir, err := s.OpenPrefix(d.Prefix())
	if err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	defer dir.Close()
	var stx unix.Statx_t
	switch err := dir.StatFresh(hex, &stx); {
	case err == nil:
		if stx.Mode&unix.S_IFMT != unix.S_IFREG {
			return false, 0, fmt.Errorf("insert chunk %s: %s/%s is not a regular file", hex, dir.Name(), hex)
		}
		if err := dir.Touch(hex); err != nil {
			return true, 0, fmt.Errorf("insert chunk %s: touch: %w", hex, err)
		}
		return true, int64(stx.Size), nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	key := store + "/.chunks/" + hex[:4] + "/" + hex
	created, err := bucket.PutIfAbsent(ctx, key, b)
	if err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	if noCache {
		err = dir.WriteMarker(hex)
	} else {
		err = dir.WriteCached(hex, b)
	}
	if err != nil {
		return !created, 0, fmt.Errorf("insert chunk %s: local file after the upload: %w", hex, err)
	}
	if err := dir.Unlink(hex + UsingSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return !created, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	return !created, int64(len(b)), nil
}

// InsertZeroChunkS3 stores the atime probe's chunk, the 4 MiB zero chunk,
// in an S3 datastore by [Store.InsertS3] (uploaded, then cached), before
// [Store.ProbeAtime] inserts it locally: the probe's plain insert would
// leave a cache file claiming an object that does not exist, and an
// uploader would then skip the zero chunk's upload — of every image with a
// 4 MiB run of zeros. PBS's atime check uploads it the same way.
func (s *Store) InsertZeroChunkS3(ctx context.Context, lk *locking.Dir, bucket S3Putter, store string) error {
	b, d, err := blob.ZeroChunk(blob.ZeroChunkSize)
	if err != nil {
		return fmt.Errorf("atime probe chunk: %w", err)
	}
	if _, _, err := s.InsertS3(ctx, lk, bucket, store, false, b, d); err != nil {
		return fmt.Errorf("atime probe chunk: %w", err)
	}
	return nil
}
