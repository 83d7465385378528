package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"sync"
	"sync/atomic"
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

// s3DeleteAnswer is how long a DeleteObjects request that was sent is
// waited for, retries included, even when the run is cancelled: within
// systemd's default stop timeout (90 s).
const s3DeleteAnswer = 60 * time.Second

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

// s3MaxQueued bounds the keys all ranges of a sweep hold queued for
// deletion, each with its chunk lock (one open fd) held until the server has
// answered: four batches, being filled or in flight. With the keys being
// decided (one lock per range) and each range's prefix dir, a sweep holds
// at most s3MaxQueued + 2×16 fds beside its HTTP connections, well inside
// the 2,048 fds chunkstore leaves out of its prefix dir cache
// (chunkstore's fdReserve) and inside a 1,024 soft limit as well.
const s3MaxQueued = 4 * S3DeleteBatch

// s3Sweep is phase 2 of an S3 datastore: the listing of <store>/.chunks/,
// split into key ranges listed in parallel (s3KeyRanges), each deciding its
// keys in order under their chunk locks (decideS3), all feeding shared
// delete batches. The local cache is the chunk store below the datastore's
// path; locks is the store's lock dir.
type s3Sweep struct {
	bucket s3Bucket
	cache  *chunkstore.Store
	locks  *locking.Dir
	prefix string // "<store>/.chunks/"
	ranges int    // key ranges listed in parallel; 0 or 1: one listing
	cut    s3Cutoffs
	log    *zap.Logger
	now    func() time.Time
	dryRun bool             // decide and count, remove nothing
	before func(key string) // test hook: before each key is decided, one call at a time
	// onQueued is a test hook: called with the number of keys queued
	// each time a key takes a place.
	onQueued func(n int64)

	beforeMu sync.Mutex
	b        s3Batches
	c        S3SweepCounts // the run's figures, once run returned
}

// s3Queued is a key decided for deletion whose local file is gone and
// whose chunk lock is held until the server has answered.
type s3Queued struct {
	key  string
	size int64
	bad  bool
	lock *locking.Lock
}

// s3Batches is the sweep's delete queue, shared by its ranges: the open
// batch, which the range whose key fills it (or finds it older than
// s3DeleteDefer) takes and sends, and the places that bound the queued
// keys (s3MaxQueued).
type s3Batches struct {
	places chan struct{} // one token per queued key
	mu     sync.Mutex
	open   []s3Queued
	openAt time.Time // when open's first key was queued
	// queued and peak count the keys holding a place: now and at most.
	queued, peak atomic.Int64
	onQueued     func(n int64) // s3Sweep.onQueued
	// Confirmed deletions, under mu.
	removed, removedBytes, removedBad int64
}

// acquire takes a place for one key, waiting while s3MaxQueued keys are
// queued: a batch in flight frees its places when the server answers.
func (b *s3Batches) acquire(ctx context.Context) error {
	select {
	case b.places <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	n := b.queued.Add(1)
	for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
	}
	if b.onQueued != nil {
		b.onQueued(n)
	}
	return nil
}

// release gives back the place of one key.
func (b *s3Batches) release() {
	b.queued.Add(-1)
	<-b.places
}

// add queues q, whose place is taken, and returns the open batch when q
// filled it.
func (b *s3Batches) add(q s3Queued, now time.Time) []s3Queued {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.open) == 0 {
		b.openAt = now
	}
	b.open = append(b.open, q)
	if len(b.open) < S3DeleteBatch {
		return nil
	}
	batch := b.open
	b.open = nil
	return batch
}

// due returns the open batch when its first key has waited s3DeleteDefer,
// or whatever it holds when all is true.
func (b *s3Batches) due(now time.Time, all bool) []s3Queued {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.open) == 0 || (!all && now.Sub(b.openAt) < s3DeleteDefer) {
		return nil
	}
	batch := b.open
	b.open = nil
	return batch
}

// drop releases the locks and places of batch, unsent.
func (b *s3Batches) drop(batch []s3Queued) {
	for _, q := range batch {
		q.lock.Unlock()
		b.release()
	}
}

// s3KeyRanges splits the listing of prefix ("<store>/.chunks/") into n
// key ranges (1..16) at the first hex digit of the prefix dir: digit
// boundaries d_i = ⌊i·16/n⌋, range i the keys k with prefix+d_i < k ≤
// prefix+d_{i+1} (StartAfter prefix+d_i; Before prefix+d_{i+1}+"\x00",
// the least string above prefix+d_{i+1}), the first from the listing's
// start, the last to its end. Every key, whatever it is, falls into
// exactly one range, and the chunk keys of prefix dirs d… into the range
// of d. n ≤ 1 is one listing.
func s3KeyRanges(prefix string, n int) []objstore.ListOptions {
	n = min(max(n, 1), 16)
	r := make([]objstore.ListOptions, n)
	const hexDigits = "0123456789abcdef"
	for i := range r {
		if i > 0 {
			r[i].StartAfter = prefix + hexDigits[i*16/n:i*16/n+1]
		}
		if i < n-1 {
			r[i].Before = prefix + hexDigits[(i+1)*16/n:(i+1)*16/n+1] + "\x00"
		}
	}
	return r
}

// run sweeps the whole listing, its ranges in parallel. The first error
// in any range (a listing, a local file, a delete the server refused or
// left unanswered) cancels the others and stops the run; a delete already
// in flight is still answered before its locks are released, and nothing
// more is sent: the keys queued then keep their objects, whose local files
// are gone, which is harmless (uploaders re-upload and get 412) and the
// next run removes them. Without an error the last batch is sent. Every
// chunk lock is released on return.
func (s *s3Sweep) run(ctx context.Context) error {
	s.b = s3Batches{places: make(chan struct{}, s3MaxQueued), onQueued: s.onQueued}
	ranges := s3KeyRanges(s.prefix, s.ranges)
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := make([]s3Range, len(ranges))
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.s, w.opts = s, ranges[i]
		wg.Go(func() {
			if w.err = w.run(rctx, ctx); w.err != nil {
				cancel(w.err)
			}
		})
	}
	wg.Wait()
	var errs []error
	for i := range workers {
		w := &workers[i]
		s.c.add(&w.c)
		// A range stopped by another's error says only "canceled".
		if w.err != nil && (ctx.Err() != nil || !errors.Is(w.err, context.Canceled)) {
			errs = append(errs, w.err)
		}
	}
	err := errors.Join(errs...)
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case err == nil && rctx.Err() != nil:
		err = context.Cause(rctx) // fail closed, though only an error cancels rctx
	}
	if last := s.b.due(s.now(), true); last != nil {
		if err != nil {
			s.b.drop(last)
		} else {
			err = s.send(ctx, last)
		}
	}
	s.c.Removed += s.b.removed
	s.c.RemovedBytes += s.b.removedBytes
	s.c.RemovedBad += s.b.removedBad
	return err
}

// s3Range is one key range of the sweep: its listing, decided in key
// order, and its figures.
type s3Range struct {
	s    *s3Sweep
	opts objstore.ListOptions
	c    S3SweepCounts
	err  error
	dir  *chunkstore.PrefixDir // the cache's prefix dir of the last chunk key
}

// prefixDir returns the cache's prefix dir p, kept open across the
// consecutive keys of one prefix dir: a range lists them one after the
// other, and no other range lists any of them. It is taken from the
// store's fd cache, where the prefix dir check before phase 2 left it (no
// open at all), else opened; a dir the check found missing is asked for
// again, as a plain open would.
func (w *s3Range) prefixDir(p uint16) (*chunkstore.PrefixDir, error) {
	if w.dir != nil && w.dir.Prefix() == p {
		return w.dir, nil
	}
	w.closeDir()
	dir, err := w.s.cache.TakePrefix(p)
	if errors.Is(err, fs.ErrNotExist) {
		dir, err = w.s.cache.OpenPrefix(p)
	}
	if err != nil {
		return nil, err
	}
	w.dir = dir
	return dir, nil
}

// closeDir closes the range's open prefix dir, if any.
func (w *s3Range) closeDir() {
	if w.dir != nil {
		w.dir.Close()
		w.dir = nil
	}
}

// run lists and decides the range's keys. ctx stops it (another range's
// error); sendCtx, the run's, is the one of the deletes it sends, so that
// a batch in flight is answered before its locks go.
func (w *s3Range) run(ctx, sendCtx context.Context) error {
	s := w.s
	defer w.closeDir()
	for obj, lerr := range s.bucket.List(ctx, s.prefix, w.opts) {
		if lerr != nil {
			return lerr
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		full, err := w.object(ctx, obj)
		if err != nil {
			return err
		}
		if full == nil {
			full = s.b.due(s.now(), false)
		}
		if full != nil {
			if err := ctx.Err(); err != nil {
				s.b.drop(full) // another range failed: nothing more is sent
				return err
			}
			if err := s.send(sendCtx, full); err != nil {
				return err
			}
		}
	}
	return nil
}

// object decides one listed object and carries the verdict out. It returns
// the open batch when its key filled it.
func (w *s3Range) object(ctx context.Context, obj objstore.Object) (full []s3Queued, err error) {
	s := w.s
	if s.before != nil {
		s.beforeMu.Lock()
		s.before(obj.Key)
		s.beforeMu.Unlock()
	}
	k, ok := parseS3Key(s.prefix, obj.Key)
	if !ok {
		w.c.Foreign++
		if ce := s.log.Check(zap.DebugLevel, "not a chunk's key, kept"); ce != nil {
			ce.Write(zap.String("key", obj.Key))
		}
		return nil, nil
	}
	w.c.Objects++
	w.c.ObjectBytes += obj.Size
	hex := k.digest.String()
	lock, err := s.locks.LockChunk(ctx, hex, 0)
	if errors.Is(err, locking.ErrLocked) {
		w.c.Busy++
		w.c.BusyBytes += obj.Size
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("s3 sweep %s: %w", obj.Key, err)
	}
	queued := false
	defer func() {
		if !queued {
			lock.Unlock()
		}
	}()
	dir, err := w.prefixDir(k.digest.Prefix())
	if err != nil {
		return nil, fmt.Errorf("s3 sweep %s: local cache: %w", obj.Key, err)
	}
	e, err := s3LocalEvidence(dir, k)
	if err != nil {
		return nil, fmt.Errorf("s3 sweep %s: local cache: %w", obj.Key, err)
	}
	e.lastModified = obj.LastModified
	bad := k.kind == chunkstore.KindBad
	switch v := decideS3(e, s.cut); v {
	case s3Keep:
		if bad {
			w.c.KeptBad++
		}
	case s3Pending:
		w.c.Pending++
		w.c.PendingBytes += obj.Size
		if bad {
			w.c.PendingBad++
		}
	case s3KeepYoung:
		w.c.KeptYoung++
		w.c.KeptYoungBytes += obj.Size
	case s3KeepUsing:
		if s.dryRun {
			break
		}
		// The chunk is referenced and on S3: say so locally, as PBS does,
		// so that uploaders skip it and the next run finds a marker.
		if err := dir.WriteMarker(k.name); err != nil {
			return nil, fmt.Errorf("s3 sweep %s: %w", obj.Key, err)
		}
		if err := dir.Unlink(k.name + chunkstore.UsingSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("s3 sweep %s: %w", obj.Key, err)
		}
		w.c.UsingMarkers++
	case s3Delete:
		if s.dryRun {
			w.c.Removed++
			w.c.RemovedBytes += obj.Size
			if k.kind == chunkstore.KindBad {
				w.c.RemovedBad++
			}
			break
		}
		// A place in the queue first (waiting for a batch in flight
		// to be answered), so that the local file goes only for a key
		// that is queued.
		if err := s.b.acquire(ctx); err != nil {
			return nil, err
		}
		// The local file goes first: uploaders take it to mean that the
		// object exists, so it must never outlive the object.
		if e.local == localFile {
			if err := dir.Unlink(k.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.b.release()
				return nil, fmt.Errorf("s3 sweep %s: %w", obj.Key, err)
			}
			w.c.LocalRemoved++
		}
		queued = true
		return s.b.add(s3Queued{key: obj.Key, size: obj.Size, bad: k.kind == chunkstore.KindBad, lock: lock}, s.now()), nil
	default:
		return nil, fmt.Errorf("s3 sweep %s: verdict %v", obj.Key, v)
	}
	return nil, nil
}

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
	err = dir.StatFresh(k.name+chunkstore.UsingSuffix, &stx)
	switch {
	case err == nil:
		if stx.Mode&unix.S_IFMT != unix.S_IFREG {
			return s3Evidence{}, fmt.Errorf("%s/%s%s: not a regular file (mode %#o)", dir.Name(), k.name, chunkstore.UsingSuffix, stx.Mode)
		}
		return s3Evidence{local: localUsing}, nil
	case errors.Is(err, fs.ErrNotExist):
		return s3Evidence{local: localMissing}, nil
	}
	return s3Evidence{}, err
}

// send sends batch in one Delete and releases its locks and places,
// counting only what the server confirmed. After a cancel nothing is sent.
func (s *s3Sweep) send(ctx context.Context, batch []s3Queued) error {
	defer s.b.drop(batch)
	if err := ctx.Err(); err != nil {
		return err
	}
	keys := make([]string, len(batch))
	for i, q := range batch {
		keys[i] = q.key
	}
	// A batch once sent is waited for, also when the run is cancelled (a
	// signal): its chunk locks must outlive any delete the server may
	// still carry out, or an uploader could take a lock, get 412 for an
	// object about to go and cache it. Bounded by s3DeleteAnswer.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s3DeleteAnswer)
	defer cancel()
	if err := s.bucket.Delete(dctx, keys); err != nil {
		return fmt.Errorf("s3 sweep: delete %d objects (%s … %s): %w", len(keys), keys[0], keys[len(keys)-1], err)
	}
	s.b.mu.Lock()
	for _, q := range batch {
		s.b.removed++
		s.b.removedBytes += q.size
		if q.bad {
			s.b.removedBad++
		}
	}
	s.b.mu.Unlock()
	s.log.Debug("s3 objects deleted", zap.Int("keys", len(keys)))
	return nil
}

// add adds o's figures to c.
func (c *S3SweepCounts) add(o *S3SweepCounts) {
	c.Objects += o.Objects
	c.ObjectBytes += o.ObjectBytes
	c.Removed += o.Removed
	c.RemovedBytes += o.RemovedBytes
	c.RemovedBad += o.RemovedBad
	c.Pending += o.Pending
	c.PendingBytes += o.PendingBytes
	c.KeptYoung += o.KeptYoung
	c.KeptYoungBytes += o.KeptYoungBytes
	c.Busy += o.Busy
	c.BusyBytes += o.BusyBytes
	c.PendingBad += o.PendingBad
	c.KeptBad += o.KeptBad
	c.Foreign += o.Foreign
	c.UsingMarkers += o.UsingMarkers
	c.LocalRemoved += o.LocalRemoved
	c.CacheRemoved += o.CacheRemoved
}
