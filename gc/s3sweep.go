package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/chunkstore"
	"chunkgc/locking"
	"chunkgc/objstore"
)

// s3Bucket is what the S3 sweep asks of a datastore's bucket;
// *objstore.Client is one.
type s3Bucket interface {
	List(ctx context.Context, prefix string, o objstore.ListOptions) iter.Seq2[objstore.Object, error]
	Delete(ctx context.Context, keys []string) error
}

// S3DeleteBatch is the most keys one DeleteObjects request of the sweep
// carries, PBS's batch: every key in a batch holds its chunk lock (one
// open fd) until the server has answered.
const S3DeleteBatch = objstore.MaxDeleteBatch

// s3DeleteDefer is how long the first key of a batch waits for the batch
// to fill before it is sent anyway: a writer of that chunk waits on its
// lock meanwhile. PBS waits 300 s; a writer should not.
const s3DeleteDefer = 30 * time.Second

// S3SweepCounts are the S3 sweep's figures. Objects and bytes are the
// listed ones (sizes from the listing).
type S3SweepCounts struct {
	Objects        int64 `json:"objects"`          // chunk and bad-chunk objects listed
	ObjectBytes    int64 `json:"object-bytes"`     // their listed sizes
	Removed        int64 `json:"removed"`          // deleted, confirmed by the server (dry run: would be)
	RemovedBytes   int64 `json:"removed-bytes"`    // their listed sizes
	RemovedBad     int64 `json:"removed-bad"`      // of Removed, bad-chunk objects
	Pending        int64 `json:"pending"`          // local atime between min_atime and the oldest writer
	PendingBytes   int64 `json:"pending-bytes"`    // their listed sizes
	KeptYoung      int64 `json:"kept-young"`       // unused by the local evidence, younger than the cutoff on the server
	KeptYoungBytes int64 `json:"kept-young-bytes"` // their listed sizes
	Busy           int64 `json:"busy"`             // chunk lock held by another process: skipped
	BusyBytes      int64 `json:"busy-bytes"`       // their listed sizes
	PendingBad     int64 `json:"pending-bad"`      // of Pending, bad-chunk objects
	KeptBad        int64 `json:"kept-bad"`         // bad-chunk objects kept in use (local atime after the oldest writer)
	Foreign        int64 `json:"foreign"`          // keys that name no chunk: never deleted
	UsingMarkers   int64 `json:"using-markers"`    // .using markers turned into empty markers
	LocalRemoved   int64 `json:"local-removed"`    // local files removed before their object
	CacheRemoved   int64 `json:"cache-removed"`    // phase 3: local files and .using markers removed
	// Requests are the HTTP requests the run sent, by method, retries
	// included.
	Requests S3Requests `json:"requests"`
}

// S3Requests counts HTTP requests by method.
type S3Requests struct {
	Get    int64 `json:"get"`
	Put    int64 `json:"put"`
	Post   int64 `json:"post"`
	Head   int64 `json:"head"`
	Delete int64 `json:"delete"`
	Other  int64 `json:"other"`
}

// s3Sweep is phase 2 of an S3 datastore: one pass over the listing of
// <store>/.chunks/, deciding each object under its chunk lock (decideS3)
// and deleting in batches. The local cache is the chunk store below the
// datastore's path; locks is the store's lock dir.
type s3Sweep struct {
	bucket s3Bucket
	cache  *chunkstore.Store
	locks  *locking.Dir
	prefix string // "<store>/.chunks/"
	cut    s3Cutoffs
	log    *zap.Logger
	now    func() time.Time
	dryRun bool             // decide and count, remove nothing
	before func(key string) // test hook: before each key is decided

	batch   []s3Queued
	batchAt time.Time // when batch's first key was queued
	c       S3SweepCounts
}

// s3Queued is a key decided for deletion whose local file is gone and
// whose chunk lock is held until the server has answered.
type s3Queued struct {
	key  string
	size int64
	bad  bool
	lock *locking.Lock
}

// run sweeps the whole listing. On an error or cancel it stops: what it
// queued is sent (its local files are already gone; an object left without
// one is harmless, uploaders re-upload and get 412, and the next run
// removes it) unless the context is done, and every chunk lock is
// released.
func (s *s3Sweep) run(ctx context.Context) (err error) {
	defer func() {
		if ferr := s.flush(ctx); ferr != nil {
			err = errors.Join(err, ferr)
		}
	}()
	for obj, lerr := range s.bucket.List(ctx, s.prefix, objstore.ListOptions{}) {
		if lerr != nil {
			return lerr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.object(ctx, obj); err != nil {
			return err
		}
		if len(s.batch) >= S3DeleteBatch || (len(s.batch) > 0 && s.now().Sub(s.batchAt) >= s3DeleteDefer) {
			if err := s.flush(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// object decides one listed object and carries the verdict out.
func (s *s3Sweep) object(ctx context.Context, obj objstore.Object) error {
	if s.before != nil {
		s.before(obj.Key)
	}
	k, ok := parseS3Key(s.prefix, obj.Key)
	if !ok {
		s.c.Foreign++
		s.log.Debug("not a chunk's key, kept", zap.String("key", obj.Key))
		return nil
	}
	s.c.Objects++
	s.c.ObjectBytes += obj.Size
	hex := k.digest.String()
	lock, err := s.locks.LockChunk(ctx, hex, 0)
	if errors.Is(err, locking.ErrLocked) {
		s.c.Busy++
		s.c.BusyBytes += obj.Size
		return nil
	}
	if err != nil {
		return fmt.Errorf("s3 sweep %s: %w", obj.Key, err)
	}
	queued := false
	defer func() {
		if !queued {
			lock.Unlock()
		}
	}()
	dir, err := s.cache.OpenPrefix(k.digest.Prefix())
	if err != nil {
		return fmt.Errorf("s3 sweep %s: local cache: %w", obj.Key, err)
	}
	defer dir.Close()
	e, err := s3LocalEvidence(dir, k)
	if err != nil {
		return fmt.Errorf("s3 sweep %s: local cache: %w", obj.Key, err)
	}
	e.lastModified = obj.LastModified
	bad := k.kind == chunkstore.KindBad
	switch v := decideS3(e, s.cut); v {
	case s3Keep:
		if bad {
			s.c.KeptBad++
		}
	case s3Pending:
		s.c.Pending++
		s.c.PendingBytes += obj.Size
		if bad {
			s.c.PendingBad++
		}
	case s3KeepYoung:
		s.c.KeptYoung++
		s.c.KeptYoungBytes += obj.Size
	case s3KeepUsing:
		if s.dryRun {
			break
		}
		// The chunk is referenced and on S3: say so locally, as PBS does,
		// so that uploaders skip it and the next run finds a marker.
		if err := dir.WriteMarker(k.name); err != nil {
			return fmt.Errorf("s3 sweep %s: %w", obj.Key, err)
		}
		if err := dir.Unlink(k.name + usingSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("s3 sweep %s: %w", obj.Key, err)
		}
		s.c.UsingMarkers++
	case s3Delete:
		if s.dryRun {
			s.c.Removed++
			s.c.RemovedBytes += obj.Size
			if k.kind == chunkstore.KindBad {
				s.c.RemovedBad++
			}
			break
		}
		// The local file goes first: uploaders take it to mean that the
		// object exists, so it must never outlive the object.
		if e.local == localFile {
			if err := dir.Unlink(k.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("s3 sweep %s: %w", obj.Key, err)
			}
			s.c.LocalRemoved++
		}
		if len(s.batch) == 0 {
			s.batchAt = s.now()
		}
		s.batch = append(s.batch, s3Queued{key: obj.Key, size: obj.Size, bad: k.kind == chunkstore.KindBad, lock: lock})
		queued = true
	default:
		return fmt.Errorf("s3 sweep %s: verdict %v", obj.Key, v)
	}
	return nil
}

// usingSuffix marks a chunk phase 1 found referenced and not cached.
const usingSuffix = ".using"

// s3LocalEvidence stats the local file of k's name in dir without following
// a symlink and, for a chunk without one, its .using marker. Anything but a
// regular file under either name is doubt: an error naming it.
func s3LocalEvidence(dir *chunkstore.PrefixDir, k s3Key) (s3Evidence, error) {
	var stx unix.Statx_t
	err := dir.StatFresh(k.name, &stx)
	switch {
	case err == nil:
		if stx.Mode&unix.S_IFMT != unix.S_IFREG {
			return s3Evidence{}, fmt.Errorf("%s/%s: not a regular file (mode %#o)", dir.Name(), k.name, stx.Mode)
		}
		return s3Evidence{local: localFile, atime: stx.Atime.Sec}, nil
	case !errors.Is(err, fs.ErrNotExist):
		return s3Evidence{}, err
	case k.kind != chunkstore.KindChunk:
		return s3Evidence{local: localMissing}, nil
	}
	err = dir.StatFresh(k.name+usingSuffix, &stx)
	switch {
	case err == nil:
		if stx.Mode&unix.S_IFMT != unix.S_IFREG {
			return s3Evidence{}, fmt.Errorf("%s/%s%s: not a regular file (mode %#o)", dir.Name(), k.name, usingSuffix, stx.Mode)
		}
		return s3Evidence{local: localUsing}, nil
	case errors.Is(err, fs.ErrNotExist):
		return s3Evidence{local: localMissing}, nil
	}
	return s3Evidence{}, err
}

// flush sends the queued keys in one Delete and releases their locks,
// counting only what the server confirmed. After a cancel nothing is sent.
func (s *s3Sweep) flush(ctx context.Context) error {
	if len(s.batch) == 0 {
		return nil
	}
	batch := s.batch
	s.batch = nil
	defer func() {
		for _, q := range batch {
			q.lock.Unlock()
		}
	}()
	if err := ctx.Err(); err != nil {
		return err
	}
	keys := make([]string, len(batch))
	for i, q := range batch {
		keys[i] = q.key
	}
	if err := s.bucket.Delete(ctx, keys); err != nil {
		return fmt.Errorf("s3 sweep: delete %d objects (%s … %s): %w", len(keys), keys[0], keys[len(keys)-1], err)
	}
	for _, q := range batch {
		s.c.Removed++
		s.c.RemovedBytes += q.size
		if q.bad {
			s.c.RemovedBad++
		}
	}
	s.log.Debug("s3 objects deleted", zap.Int("keys", len(keys)))
	return nil
}
