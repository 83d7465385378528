package gc

import (
	"context"
	"errors"
	"os"
	"testing"

	"go.uber.org/zap/zaptest"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/tuning"
)

// TestS3ProbeUploadsItsChunk: with the atime probe on, a GC of an S3
// datastore uploads the probe's zero chunk before it caches it, so the
// cache file has its object (a cache file without one makes uploaders skip
// the zero chunk: data loss); with an .in-use marker of another host the
// run is refused before the probe, and nothing is uploaded or cached.
func TestS3ProbeUploadsItsChunk(t *testing.T) {
	onBuckets(t, func(t *testing.T, f *s3Fixture) {
		_, zero, err := blob.ZeroChunk(blob.ZeroChunkSize)
		rtest.OK(t, err)
		run := func() error {
			tun := tuning.Defaults() // the probe on
			_, err := Run(context.Background(), f.cache, f.locks, Options{Log: zaptest.NewLogger(t), StoreName: "store1", Tuning: tun,
				S3: &S3{Bucket: f.tb, Store: "store1"}})
			return err
		}
		marker := []byte(`{"hostname":"pbs-elsewhere"}`)
		if fb, ok := f.tb.(*fakeBucket); ok {
			fb.data["store1/.in-use"] = marker
		} else {
			rtest.OK(t, f.tb.(*realBucket).Put(context.Background(), "store1/.in-use", marker))
		}
		if err := run(); !errors.Is(err, ErrS3InUse) {
			t.Fatalf("run on another host's bucket: %v, want %v", err, ErrS3InUse)
		}
		if f.tb.has(f.key(zero, "")) || exists(f.cache.ChunkPath(zero)) {
			t.Error("a refused run uploaded or cached the probe's chunk")
		}

		if fb, ok := f.tb.(*fakeBucket); ok {
			delete(fb.data, "store1/.in-use")
		} else {
			rtest.OK(t, f.tb.(*realBucket).Delete(context.Background(), []string{"store1/.in-use"}))
		}
		rtest.OK(t, run())
		if !f.tb.has(f.key(zero, "")) {
			t.Error("the probe's chunk has no object")
		}
		if fi, err := os.Stat(f.cache.ChunkPath(zero)); err != nil || fi.Size() == 0 {
			t.Errorf("the probe's chunk is not cached: %v", err)
		}
		f.checkObjects(t)
	})
}
