package gc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"chunkgc/blob"
	"chunkgc/datastore"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/objstore"
	"chunkgc/tuning"
)

// PutIfAbsent uploads key unless it exists, as S3 with If-None-Match does;
// the new object's LastModified is now.
func (b *fakeBucket) PutIfAbsent(ctx context.Context, key string, data []byte) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objs[key]; ok {
		return false, nil
	}
	b.objs[key] = objstore.Object{Key: key, Size: int64(len(data)), LastModified: time.Now()}
	return true, nil
}

// chunkData returns data whose digest's key sorts in the first (early) or
// last (late) sixteenth of the listing.
func chunkData(t *testing.T, early bool) ([]byte, blob.Digest) {
	t.Helper()
	for i := 0; ; i++ {
		data := []byte(fmt.Sprint("s3 race chunk ", early, " ", i))
		d := blob.Sum(data)
		if h := d.String(); (early && h[0] == '0') || (!early && h[0] == 'f') {
			return data, d
		}
	}
}

// TestS3UploadsDuringGC: what backups do while an S3 GC runs must survive
// it. A PBS no-cache upload (an object, no local file, its index not yet
// finished) during phase 1 and during phase 2 is young, so it stays, where
// PBS's sweep deletes it. A re-upload by chunkgc's writer
// (chunkstore.InsertS3) of an old garbage chunk — old object, old cache
// file — during phase 2, before the sweep reaches its key or after it
// deleted it, leaves the object and its cache file: before, the writer's
// touch gives the sweep a fresh atime (PBS's cache hit returns without a
// touch, and its sweep deletes the object); after, the writer finds no
// cache file and uploads again.
func TestS3UploadsDuringGC(t *testing.T) {
	onBuckets(t, func(t *testing.T, f *s3Fixture) {
		const old = 72 * time.Hour
		ctx := context.Background()
		ref := f.digest()
		f.tb.put(f.key(ref, ""), 100, f.now.Add(-old))
		f.local(ref, "", 0, old)
		f.st.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", ref)
		noCache1, noCache2 := f.digest(), f.digest()
		type reupload struct {
			data []byte
			d    blob.Digest
			b    []byte
		}
		var re []reupload
		for _, early := range []bool{false, true} { // late: before the sweep reaches it; early: after
			data, d := chunkData(t, early)
			b, err := blob.Encode(data, false)
			rtest.OK(t, err)
			f.tb.put(f.key(d, ""), int64(len(b)), f.now.Add(-old))
			f.local(d, "", 0, old)
			re = append(re, reupload{data, d, b})
		}
		// More old garbage, so that the sweep has keys to decide after
		// the re-upload of the early chunk, two of them after it in its
		// key range (the ranges are listed in parallel, each in order).
		earlyKey := f.key(re[1].d, "")
		for n := 0; n < 2; {
			k := f.key(f.digest(), "")
			if k[len(s3Prefix)] == earlyKey[len(s3Prefix)] && k > earlyKey {
				n++
			}
			f.tb.put(k, 10, f.now.Add(-old))
		}
		var keys []string
		inserted := map[blob.Digest]bool{}
		lateErr := make(chan error, 1)
		opts := Options{Log: zaptest.NewLogger(t), StoreName: "store1", Tuning: tuning.Defaults(), S3: &S3{Bucket: f.tb, Store: "store1"}}
		opts.Tuning.AtimeSafetyCheck = false
		opts.hooks.afterGroupList = func(g datastore.Group, attempt int) {
			f.tb.put(f.key(noCache1, ""), 100, time.Now()) // PBS no-cache: no local file
		}
		opts.hooks.s3BeforeObject = func(key string) {
			keys = append(keys, key)
			switch len(keys) {
			case 1:
				f.tb.put(f.key(noCache2, ""), 100, time.Now())
				// The late chunk: its key comes after this one.
				_, _, err := f.cache.InsertS3(ctx, f.locks, f.tb, "store1", false, re[0].b, re[0].d)
				rtest.OK(t, err)
				inserted[re[0].d] = true
			}
			if !inserted[re[1].d] && key > earlyKey && key[len(s3Prefix)] == earlyKey[len(s3Prefix)] {
				// The early chunk: the sweep of its range (first hex
				// digit) has passed it and holds its lock until its
				// deletion is answered. A writer is another process: it
				// waits for the lock while the sweep goes on.
				inserted[re[1].d] = true
				go func() {
					pre, _, err := f.cache.InsertS3(ctx, f.locks, f.tb, "store1", false, re[1].b, re[1].d)
					if err == nil && pre {
						err = errors.New("the early chunk's cache file outlived its deletion")
					}
					lateErr <- err
				}()
			}
		}
		_, err := Run(ctx, f.cache, f.locks, opts)
		rtest.OK(t, err)
		if !inserted[re[1].d] {
			t.Fatalf("the sweep never passed the early chunk (keys %d)", len(keys))
		}
		rtest.OK(t, <-lateErr)
		for name, d := range map[string]blob.Digest{"no-cache upload in phase 1": noCache1, "no-cache upload in phase 2": noCache2,
			"re-upload before the sweep reached it": re[0].d, "re-upload after the sweep deleted it": re[1].d, "referenced": ref} {
			if !f.tb.has(f.key(d, "")) {
				t.Errorf("%s: object deleted", name)
			}
		}
		for _, r := range re {
			if !exists(f.cache.ChunkPath(r.d)) {
				t.Errorf("re-uploaded chunk %s has no cache file", r.d)
			}
		}
		// The backups that uploaded them finish: their indexes reference
		// them, and every chunk of every index is an object.
		f.st.Snapshot("vm/101/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", noCache1, noCache2, re[0].d, re[1].d)
		f.checkObjects(t)
		// PBS's no-cache uploads leave no cache file: the local store
		// invariant (every referenced chunk is a file) does not hold for
		// them in an S3 cache, the S3 one above does.
		f.st.Except(noCache1, noCache2)
		if !strings.HasPrefix(keys[0], s3Prefix) {
			t.Errorf("first key %q", keys[0])
		}
	})
}
