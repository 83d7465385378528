package gc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/objstore"
)

// TestS3CacheLacksIndexes: a run of an S3 datastore whose local cache lacks
// an index file the bucket holds under <store>/.cnt/ — a lost cache
// re-created empty, one lost snapshot, the index replaced by a symlink, a
// FIFO or a directory — stops before phase 1 naming the key (errors.Is
// ErrS3CacheIncomplete), and deletes nothing: not the chunks of the lost
// index (old objects with old or no cache files, both proofs would hold),
// not even the garbage, and creates no .using marker. With the cache
// complete the same store is collected, and objects beside the indexes
// (manifests, owners, .namespace markers) are not asked for.
func TestS3CacheLacksIndexes(t *testing.T) { onBuckets(t, testS3CacheLacksIndexes) }

func testS3CacheLacksIndexes(t *testing.T, f *s3Fixture) {
	const old = 72 * time.Hour
	const snap = "vm/100/2025-01-01T00:00:00Z"
	const lost = "ns/a/ct/200/2025-01-02T00:00:00Z"
	cnt := func(rel string) string { return objstore.ContentKey("store1", rel) }

	var kept, lostRefs []blob.Digest
	for i := range 3 {
		n := fmt.Sprint("kept ", i)
		f.st.Add(storetest.Chunk(n, storetest.Age(old)))
		kept = append(kept, f.st.Digest(n))
		lostRefs = append(lostRefs, f.digest())
	}
	f.local(lostRefs[0], "", 100, old) // an old cache file
	f.local(lostRefs[1], "", 0, old)   // an old empty marker; lostRefs[2]: none
	f.st.Snapshot(snap, "drive-scsi0.img.fidx", kept...)
	for _, d := range append(append([]blob.Digest(nil), kept...), lostRefs...) {
		f.tb.put(f.key(d, ""), 1000, f.now.Add(-old))
	}
	garbage := f.digest()
	garbagePath := f.local(garbage, "", 100, old)
	f.tb.put(f.key(garbage, ""), 1000, f.now.Add(-old))
	for _, rel := range []string{snap + "/drive-scsi0.img.fidx", snap + "/index.json.blob", "vm/100/owner", "ns/a/.namespace",
		lost + "/index.json.blob"} {
		f.tb.put(cnt(rel), 10, f.now.Add(-old))
	}
	lostKey := cnt(lost + "/root.pxar.didx")
	f.tb.put(lostKey, 10, f.now.Add(-old))
	lostIndex := filepath.Join(f.cache.Base(), lost, "root.pxar.didx")
	elsewhere := filepath.Join(t.TempDir(), "root.pxar.didx")

	refused := func(what string, wantIn ...string) {
		t.Helper()
		_, err := f.run(t, f.tb)
		if !errors.Is(err, ErrS3CacheIncomplete) {
			t.Fatalf("%s: run error %v, want %v", what, err, ErrS3CacheIncomplete)
		}
		rtest.Contains(t, what+": error", err.Error(), append(wantIn, lostKey, f.cache.Base())...)
		for _, d := range append(append([]blob.Digest{garbage}, kept...), lostRefs...) {
			if !f.tb.has(f.key(d, "")) {
				t.Errorf("%s: object %s deleted", what, d)
			}
		}
		for _, d := range lostRefs {
			if exists(f.cache.ChunkPath(d) + ".using") {
				t.Errorf("%s: phase 1 ran: %s.using", what, d)
			}
		}
		if !exists(garbagePath) {
			t.Errorf("%s: garbage cache file removed", what)
		}
	}
	refused("lost snapshot", "1 of the 2 index objects", "no such file")

	rtest.OK(t, os.MkdirAll(filepath.Dir(lostIndex), 0o755))
	rtest.OK(t, os.WriteFile(elsewhere, nil, 0o644))
	rtest.OK(t, os.Symlink(elsewhere, lostIndex))
	refused("a symlinked index")
	rtest.OK(t, os.Remove(lostIndex))
	rtest.OK(t, unix.Mkfifo(lostIndex, 0o644))
	refused("a FIFO for the index", "not a regular file")
	rtest.OK(t, os.Remove(lostIndex))
	rtest.OK(t, os.Mkdir(lostIndex, 0o755))
	refused("a directory for the index")
	rtest.OK(t, os.Remove(lostIndex))

	// The snapshot restored in the cache: the run collects the garbage and
	// keeps every referenced object.
	f.st.Snapshot(lost, "root.pxar.didx", lostRefs...)
	st, err := f.run(t, f.tb)
	rtest.OK(t, err)
	rtest.Equal(t, "removed", int64(1), st.RemovedChunks)
	if f.tb.has(f.key(garbage, "")) {
		t.Error("garbage object kept with the cache complete")
	}
	for _, d := range append(kept, lostRefs...) {
		if !f.tb.has(f.key(d, "")) {
			t.Errorf("referenced object %s deleted", d)
		}
	}
	f.checkObjects(t)
}

// TestS3CacheLacksIndexesBadKey: an index key under .cnt/ that is no
// plain relative path cannot name a cache file: the run is refused naming
// it, nothing deleted (the fake bucket only: a server may refuse such a
// key).
func TestS3CacheLacksIndexesBadKey(t *testing.T) {
	f := newS3Fixture(t)
	k := f.key(f.digest(), "")
	f.bucket.put(k, 10, f.now.Add(-72*time.Hour))
	bad := objstore.ContentKey("store1", "vm/../../x.fidx")
	f.bucket.put(bad, 10, f.now.Add(-72*time.Hour))
	_, err := f.run(t, f.bucket)
	if !errors.Is(err, ErrS3CacheIncomplete) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("run error %v, want %v naming %s", err, ErrS3CacheIncomplete, bad)
	}
	if !f.bucket.has(k) || len(f.bucket.deletes) != 0 {
		t.Error("an object was deleted")
	}
}
