package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/locking"
	"chunkgc/objstore"
)

// S3Bucket is what a run of an S3 datastore asks of its bucket;
// *objstore.Client is one.
type S3Bucket interface {
	s3Bucket
	chunkstore.S3Putter // the atime probe's chunk
	ServerTime(ctx context.Context) (objstore.ServerClock, error)
	Get(ctx context.Context, key string) ([]byte, error)
	Requests() objstore.Requests
}

// S3 makes [Run] collect an S3 datastore of PBS 4.2 (SPEC §12; doc "S3
// datastores"): the run's store is the datastore's local cache, Bucket
// holds its objects, every key starting with Store + "/".
type S3 struct {
	Bucket S3Bucket
	Store  string
}

// ErrS3ClockSkew is matched by the error of a run whose S3 server's clock
// is further from this host's than gc-max-clock-skew.
var ErrS3ClockSkew = errors.New("the S3 server's clock is too far from this host's")

// s3Clock reads the server's clock once, at run start, refuses a skew
// beyond the bound and returns the object cutoff: min_atime moved into the
// server's clock by the smallest skew the Date header allows (it has whole
// seconds; SPEC §12), so that LastModified is compared in the clock that
// stamped it.
func (r *run) s3Clock(ctx context.Context) error {
	sc, err := r.opts.S3.Bucket.ServerTime(ctx)
	if err != nil {
		return fmt.Errorf("s3 server clock: %w", err)
	}
	rtt := sc.Received.Sub(sc.Sent)
	lo, hi := sc.Skew()-rtt/2, sc.Skew()+time.Second+rtt/2
	bound := r.opts.Tuning.MaxClockSkew
	if lo.Abs() > bound || hi.Abs() > bound {
		return fmt.Errorf("%w: server %s, host %s, skew %v..%v, bound gc-max-clock-skew=%v", ErrS3ClockSkew,
			sc.Server.UTC().Format(time.RFC3339), sc.Sent.UTC().Format(time.RFC3339Nano), lo, hi, bound)
	}
	r.s3Cut = time.Unix(r.st.MinAtime, 0).Add(lo)
	r.log.Info("s3 server clock", zap.Time("server-time", sc.Server), zap.Duration("skew-min", lo), zap.Duration("skew-max", hi),
		zap.Time("object-cutoff", r.s3Cut.UTC()))
	return nil
}

// ErrS3InUse is matched by the error of a run whose bucket's .in-use
// marker names another host: PBS lets only one host use a datastore's
// objects, and this host's local cache does not know the other's chunks.
var ErrS3InUse = errors.New("the S3 datastore is in use by another host")

// s3InUse reads <store>/.in-use ({"hostname":…}, written when the
// datastore was created) and refuses a run when it names another host
// than this one's node name as PBS writes it ([objstore.Nodename]). A
// missing marker is warned about: a datastore PBS created has one.
func (r *run) s3InUse(ctx context.Context) error {
	key := objstore.InUseKey(r.opts.S3.Store)
	b, err := r.opts.S3.Bucket.Get(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		r.log.Warn("the S3 datastore has no .in-use marker (PBS writes one when it creates a datastore)", zap.String("key", key))
		return nil
	}
	if err != nil {
		return fmt.Errorf("s3 %s: %w", key, err)
	}
	m, err := objstore.ParseInUse(b)
	if err != nil {
		return fmt.Errorf("s3 %s: %w", key, err)
	}
	host, err := objstore.Nodename()
	if err != nil {
		return fmt.Errorf("s3 %s: %w", key, err)
	}
	if m.Hostname != host {
		return fmt.Errorf("%w: %s names host %q, this is %q", ErrS3InUse, key, m.Hostname, host)
	}
	return nil
}

// s3Expect is phase 1's handling of a referenced chunk with no local file in
// an S3 datastore's cache (evicted without a marker, uploaded with
// no-cache, or a lost cache), as PBS does it: under the chunk lock (an
// upload in progress finishes first) it touches again, and if there is
// still no file and no bad copy it creates <hex>.using, which the sweep
// keeps the object for. It reports whether the chunk was touched after
// all.
func s3Expect(ctx context.Context, store *chunkstore.Store, locks *locking.Dir, t *chunkstore.Toucher, d blob.Digest) (touched bool, err error) {
	hex := d.String()
	lock, err := locks.LockChunk(ctx, hex, chunkstore.S3ChunkLockTimeout)
	if err != nil {
		return false, err
	}
	defer lock.Unlock()
	if err := t.Touch(d); err == nil {
		return true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if n, err := t.TouchBad(d); err != nil || n > 0 {
		return false, err
	}
	dir, err := store.OpenPrefix(d.Prefix())
	if err != nil {
		return false, err
	}
	defer dir.Close()
	if err := dir.Touch(hex + chunkstore.UsingSuffix); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return false, dir.WriteMarker(hex + chunkstore.UsingSuffix)
}

// sweepS3 is phase 2 of an S3 datastore: the sweep of the bucket's listing
// (s3Sweep), then phase 3, the local cache. Its figures are the objects'
// (PBS's .gc-status of an S3 store counts objects and listed sizes;
// [S3SweepCounts.setStatus]).
func (r *run) sweepS3(ctx context.Context) error {
	r.log.Info("start phase 2 (sweep unused objects)", zap.String("bucket-prefix", r.opts.S3.Store+"/.chunks/"),
		zap.Int("key-ranges", r.opts.Tuning.S3ListRanges))
	s := &s3Sweep{bucket: r.opts.S3.Bucket, cache: r.store, locks: r.locks, prefix: r.opts.S3.Store + "/.chunks/", ranges: r.opts.Tuning.S3ListRanges,
		cut: s3Cutoffs{minAtime: r.st.MinAtime, oldestWriter: r.st.OldestWriter, objCutoff: r.s3Cut},
		log: r.log.With(zap.String("phase", "sweep")), now: r.now, dryRun: r.opts.DryRun, before: r.opts.hooks.s3BeforeObject}
	err := s.run(ctx)
	q, q0 := r.opts.S3.Bucket.Requests(), r.s3Req0
	s.c.Requests = S3Requests{Get: q.Get - q0.Get, Put: q.Put - q0.Put, Post: q.Post - q0.Post,
		Head: q.Head - q0.Head, Delete: q.Delete - q0.Delete, Other: q.Other - q0.Other}
	r.st.S3 = &s.c
	s.c.setStatus(r.st)
	if err != nil {
		if ctx.Err() != nil {
			return errCanceled(ctx, "phase 2")
		}
		return fmt.Errorf("phase 2: %w", err)
	}
	r.log.Info("start phase 3 (sweep the local cache)")
	n, err := sweepS3Cache(ctx, r.store, r.locks, r.st.MinAtime, r.opts.DryRun)
	r.st.S3.CacheRemoved = n
	if err != nil {
		if ctx.Err() != nil {
			return errCanceled(ctx, "phase 3")
		}
		return fmt.Errorf("phase 3: %w", err)
	}
	return nil
}

// sweepS3Cache is phase 3: it removes every .using marker (phase 2 has
// acted on them) and every cache file or bad copy whose atime is before
// minAtime, re-stat'ed under its chunk lock, tried once. A cache file
// without an object is what makes an uploader skip an upload, so none may
// outlive the run; an object without a cache file is harmless (the
// uploader re-uploads and gets 412). It never talks to the bucket.
func sweepS3Cache(ctx context.Context, store *chunkstore.Store, locks *locking.Dir, minAtime int64, dryRun bool) (removed int64, err error) {
	var stx unix.Statx_t
	for p := range chunkstore.PrefixCount {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		dir, err := store.OpenPrefix(uint16(p))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return removed, err
		}
		var names []string
		err = dir.ReadNames(func(name []byte, _ uint8) error {
			names = append(names, string(name))
			return nil
		})
		if err == nil {
			for _, name := range names {
				var ok bool
				if ok, err = sweepS3CacheEntry(ctx, dir, locks, name, minAtime, dryRun, &stx); err != nil {
					break
				}
				if ok {
					removed++
				}
			}
		}
		dir.Close()
		if err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// sweepS3CacheEntry removes entry name of dir if phase 3 should.
func sweepS3CacheEntry(ctx context.Context, dir *chunkstore.PrefixDir, locks *locking.Dir, name string, minAtime int64, dryRun bool, stx *unix.Statx_t) (bool, error) {
	base, using := strings.CutSuffix(name, chunkstore.UsingSuffix)
	kind, d := chunkstore.Classify([]byte(base))
	if kind == chunkstore.KindOther || (using && kind != chunkstore.KindChunk) {
		return false, nil
	}
	lock, err := locks.LockChunk(ctx, d.String(), 0)
	if errors.Is(err, locking.ErrLocked) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer lock.Unlock()
	if err := dir.StatFresh(name, stx); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if stx.Mode&unix.S_IFMT != unix.S_IFREG || (!using && stx.Atime.Sec >= minAtime) || stx.Nlink > 1 {
		return false, nil
	}
	if dryRun {
		return true, nil
	}
	if err := dir.Unlink(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}
