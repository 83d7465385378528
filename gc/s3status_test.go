package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
)

// jsonKeys returns the object keys of the JSON document b in order, a
// nested object's as "outer.inner".
func jsonKeys(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	var keys []string
	var walk func(prefix string)
	walk = func(prefix string) {
		for dec.More() {
			tok, err := dec.Token()
			rtest.OK(t, err)
			k := prefix + tok.(string)
			keys = append(keys, k)
			tok, err = dec.Token()
			rtest.OK(t, err)
			if d, ok := tok.(json.Delim); ok && d == '{' {
				walk(k + ".")
				_, err = dec.Token() // '}'
				rtest.OK(t, err)
			}
		}
	}
	tok, err := dec.Token()
	rtest.OK(t, err)
	if tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", b)
	}
	walk("")
	return keys
}

// TestS3GCStatusAsPBS: the .gc-status of a chunkgc GC of an S3 datastore
// has exactly the fields of PBS's, in PBS's order and form (one line, no
// newline, testdata/pbs-gc-status-s3.json, reconstructed from PBS's
// source), and values counted as PBS counts the listed objects: in use
// (touched in phase 1, or expected through .using) in disk-*, deleted in
// removed-*, pending (atime before the oldest writer) and young (unused,
// LastModified after the cutoff) in pending-*, a pending bad object in
// still-bad and pending-bytes, a busy key and a foreign key in nothing;
// cache-stats from phase 1's digest cache. chunkgc's own figures stay out
// of it but are in the run's status. On the fake bucket and on versitygw.
func TestS3GCStatusAsPBS(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("testdata", "pbs-gc-status-s3.json"))
	rtest.OK(t, err)
	onBuckets(t, func(t *testing.T, f *s3Fixture) {
		const old = 72 * time.Hour
		var refs []blob.Digest
		for i := range 3 {
			n := "status ref " + string(rune('a'+i))
			f.st.Add(storetest.Chunk(n, storetest.Age(old)))
			refs = append(refs, f.st.Digest(n))
		}
		f.st.Add(storetest.Missing("status ref uncached"))
		refs = append(refs, f.st.Digest("status ref uncached"))
		f.st.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", refs...)
		for _, d := range refs {
			f.tb.put(f.key(d, ""), 1000, f.now.Add(-old))
		}
		for range 2 { // garbage, cached: removed
			d := f.digest()
			f.local(d, "", 10, old)
			f.tb.put(f.key(d, ""), 2000, f.now.Add(-old))
		}
		f.tb.put(f.key(f.digest(), ""), 2000, f.now.Add(-old))        // garbage, no local file: removed
		f.tb.put(f.key(f.digest(), ""), 300, f.now.Add(-time.Minute)) // young: kept, pending
		pending := f.digest()
		f.local(pending, "", 10, time.Hour) // after min_atime, before the oldest writer (the run's start)
		f.tb.put(f.key(pending, ""), 400, f.now.Add(-old))
		bad := f.digest()
		f.local(bad, ".0.bad", 10, time.Hour)
		f.tb.put(f.key(bad, ".0.bad"), 50, f.now.Add(-old))
		busy := f.digest()
		f.tb.put(f.key(busy, ""), 7000, f.now.Add(-old))
		f.tb.put(s3Prefix+"README", 99, f.now.Add(-old))
		lock, err := f.locks.LockChunk(context.Background(), busy.String(), 0)
		rtest.OK(t, err)
		st, err := f.run(t, f.tb)
		rtest.OK(t, lock.Unlock())
		rtest.OK(t, err)

		got, err := os.ReadFile(filepath.Join(f.cache.Base(), StatusFile))
		rtest.OK(t, err)
		rtest.Equal(t, "fields and their order", strings.Join(jsonKeys(t, want), " "), strings.Join(jsonKeys(t, got), " "))
		if bytes.ContainsAny(got, "\n ") {
			t.Errorf(".gc-status is not one line without spaces and newline as serde_json writes it: %q", got)
		}
		var p PBSStatus
		rtest.OK(t, json.Unmarshal(got, &p))
		rtest.Equal(t, "values", PBSStatus{
			PBSFigures: PBSFigures{UPID: st.UPID, IndexFileCount: 1, IndexDataBytes: st.IndexDataBytes,
				DiskChunks: 4, DiskBytes: 4000, RemovedChunks: 3, RemovedBytes: 6000,
				PendingChunks: 2, PendingBytes: 750, RemovedBad: 0, StillBad: 1},
			CacheStats: &PBSCacheStats{Hits: 0, Misses: 4},
		}, p)
		rtest.Equal(t, "values are the run's", st.PBS(), p)
		rtest.Equal(t, "busy key (counted by chunkgc only)", int64(1), st.S3.Busy)
		rtest.Equal(t, "young object (counted by chunkgc only)", int64(1), st.S3.KeptYoung)
		rtest.Equal(t, "foreign key (counted by chunkgc only)", int64(1), st.S3.Foreign)
		if !strings.HasPrefix(p.UPID, "UPID:") || !strings.Contains(p.UPID, ":garbage_collection:store1:") {
			t.Errorf("upid %q is not PBS's task id form", p.UPID)
		}
		read, err := ReadStatus(f.cache.Base())
		rtest.OK(t, err)
		rtest.Equal(t, "read back", st.PBS(), read.PBS())
		f.checkObjects(t)
	})
}
