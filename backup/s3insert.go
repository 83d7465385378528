package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/locking"
)

// S3Putter is what an S3 insert asks of the bucket; *objstore.Client is one.
type S3Putter interface {
	// PutIfAbsent uploads data as key unless an object of that key exists
	// (PUT with If-None-Match: *; a 412 answer is a duplicate, no error).
	PutIfAbsent(ctx context.Context, key string, data []byte) (created bool, err error)
}

// S3Target makes [Ingest] write an S3 datastore of PBS 4.2: the store is
// its local cache, the chunks go to Bucket as <Store>/.chunks/<p>/<hex>.
// NoCache leaves an empty marker instead of the cached chunk, as PBS's
// no-cache uploads do not (they leave nothing, which is what lets PBS's GC
// delete them).
type S3Target struct {
	Bucket  S3Putter
	Store   string
	NoCache bool
}

// s3ChunkLockTimeout bounds an insert's wait for a chunk lock (GC holds
// one until the DeleteObjects of its batch is answered; PBS writers wait
// up to 3 h).
const s3ChunkLockTimeout = 10 * time.Minute

// s3Insert stores chunk d (blob b) in an S3 datastore by PBS's insert
// protocol, made safe against GC (SPEC §12): under the chunk's lock, a
// chunk with a local file (cached or an empty marker) is touched — the
// local file is what GC's sweep decides by, so "duplicate" is never
// answered without a fresh atime (PBS's cache hit skips the touch); a
// chunk without one is uploaded with If-None-Match (a 412 is a duplicate)
// and only then gets its local file, the cached blob or with NoCache an
// empty marker, freshly written: a local file must never claim an object
// that does not exist. Its .using marker, if any, goes. After an upload
// error nothing local is written: the outcome is unknown, and a stray
// object is removed by a later GC once it is old.
func s3Insert(ctx context.Context, t *S3Target, store *chunkstore.Store, lk *locking.Dir, b []byte, d blob.Digest) (pre bool, size int64, err error) {
	hex := d.String()
	lock, err := lk.LockChunk(ctx, hex, s3ChunkLockTimeout)
	if err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	defer lock.Unlock()
	dir, err := store.OpenPrefix(d.Prefix())
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
	key := t.Store + "/.chunks/" + hex[:4] + "/" + hex
	created, err := t.Bucket.PutIfAbsent(ctx, key, b)
	if err != nil {
		return false, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	if t.NoCache {
		err = dir.WriteMarker(hex)
	} else {
		err = dir.WriteCached(hex, b)
	}
	if err != nil {
		return !created, 0, fmt.Errorf("insert chunk %s: local file after the upload: %w", hex, err)
	}
	if err := dir.Unlink(hex + ".using"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return !created, 0, fmt.Errorf("insert chunk %s: %w", hex, err)
	}
	return !created, int64(len(b)), nil
}
