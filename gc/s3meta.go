package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/index"
	"chunkgc/internal/nofollow"
	"chunkgc/objstore"
)

// ErrS3CacheIncomplete is matched by the error of a run whose local cache
// lacks an index file that the bucket holds under <store>/.cnt/.
var ErrS3CacheIncomplete = errors.New("the S3 datastore's local cache lacks index files the bucket holds")

// s3MissingShown is how many index objects without a local file the error
// names; it counts them all.
const s3MissingShown = 5

// s3Indexes lists <store>/.cnt/, the bucket's copy of the datastore's
// metadata, and refuses the run when an index object (.fidx, .didx) has no
// regular file at its relative path in the local cache (doc "S3
// datastores"): phase 1 marks from the cache's indexes only, so a cache
// that lost them (a lost disk, a cache re-created empty) would leave every
// chunk they reference unmarked, and such chunks' objects are old — both
// proofs of the sweep would hold. Writers keep the cache's indexes a
// superset of the objects: an ingest writes an index before it uploads it,
// and forget and a failed ingest delete the objects before the local
// files. A local path is opened O_PATH below the cache's base fd without
// following a symlink (a symlink, a non-regular file or a key that is no
// plain relative path is missing, not followed); any other error stops the
// run.
func (r *run) s3Indexes(ctx context.Context) error {
	prefix := objstore.ContentKey(r.opts.S3.Store, "")
	base := r.store.Base()
	var checked, missing int
	var shown []string
	for obj, err := range r.opts.S3.Bucket.List(ctx, prefix, objstore.ListOptions{}) {
		if err != nil {
			return fmt.Errorf("s3 listing of %s: %w", prefix, err)
		}
		rel := strings.TrimPrefix(obj.Key, prefix)
		if _, ok := index.KindOf(rel); !ok {
			continue // a manifest, an owner, a .namespace marker, a log
		}
		checked++
		fd, err := nofollow.Open(r.store.BaseFD(), base, rel, unix.O_PATH, 0)
		if err == nil {
			err = nofollow.CheckRegular(fd, base+"/"+rel)
			unix.Close(fd)
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, nofollow.ErrSymlink), errors.Is(err, nofollow.ErrNotDir),
			errors.Is(err, nofollow.ErrNotRegular), errors.Is(err, nofollow.ErrBadName), errors.Is(err, unix.ENOTDIR):
			missing++
			if len(shown) < s3MissingShown {
				shown = append(shown, fmt.Sprintf("%s (%v)", obj.Key, err))
			}
		default:
			return fmt.Errorf("s3 index object %s: %w", obj.Key, err)
		}
	}
	if missing > 0 {
		r.log.Error("the local cache lacks index files the bucket holds: nothing is marked or deleted",
			zap.String("cache", base), zap.String("prefix", prefix), zap.Int("index-objects", checked), zap.Int("missing", missing))
		return fmt.Errorf("%w: %d of the %d index objects under %s have no index file in the cache %s: %s; phase 1 could not mark the chunks they reference, so nothing is deleted: restore the cache's indexes from the bucket (PBS: reuse the datastore) before GC",
			ErrS3CacheIncomplete, missing, checked, prefix, base, strings.Join(shown, "; "))
	}
	r.log.Info("s3 metadata: every index object has its index file in the cache", zap.String("prefix", prefix), zap.Int("index-objects", checked))
	return nil
}
