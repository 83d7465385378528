package gc

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/s3server"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/locking"
	"chunkgc/objstore"
	"chunkgc/tuning"
)

// fakeBucket is an in-process stand-in for a bucket, for the fast table
// tests of the S3 sweep (fake: the decision and its bookkeeping need no
// HTTP; the same behaviour is tested against versitygw in the objstore
// and S3 GC tests). It lists in key order and records each Delete.
type fakeBucket struct {
	mu      sync.Mutex
	skew    time.Duration // of ServerTime
	objs    map[string]objstore.Object
	data    map[string][]byte // objects Get can read, beside objs
	deletes [][]string
	// failDelete, when set, is asked before each Delete; an error fails it
	// with nothing deleted.
	failDelete func(call int, keys []string) error
	// listHook, when set, is asked before a listing yields its n-th key
	// (from 0); an error is yielded instead and ends the listing.
	listHook func(ctx context.Context, o objstore.ListOptions, n int, key string) error
	// deleteGate, when set, is waited for by each Delete, outside the
	// lock; inflight and maxInflight count the Deletes under way.
	deleteGate            chan struct{}
	inflight, maxInflight atomic.Int32
}

func newFakeBucket() *fakeBucket {
	return &fakeBucket{objs: map[string]objstore.Object{}, data: map[string][]byte{}}
}

func (b *fakeBucket) Get(ctx context.Context, key string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, ok := b.data[key]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("fake get %s: %w", key, objstore.ErrNotFound)
}

// Requests counts nothing: the fake speaks no HTTP.
func (b *fakeBucket) Requests() objstore.Requests { return objstore.Requests{} }

func (b *fakeBucket) put(key string, size int64, lastModified time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objs[key] = objstore.Object{Key: key, Size: size, LastModified: lastModified}
}

func (b *fakeBucket) has(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.objs[key]
	return ok
}

func (b *fakeBucket) List(ctx context.Context, prefix string, o objstore.ListOptions) iter.Seq2[objstore.Object, error] {
	return func(yield func(objstore.Object, error) bool) {
		b.mu.Lock()
		var keys []string
		for k := range b.objs {
			if strings.HasPrefix(k, prefix) && k > o.StartAfter && (o.Before == "" || k < o.Before) {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		b.mu.Unlock()
		for n, k := range keys {
			if b.listHook != nil {
				if err := b.listHook(ctx, o, n, k); err != nil {
					yield(objstore.Object{}, err)
					return
				}
			}
			b.mu.Lock()
			obj, ok := b.objs[k]
			b.mu.Unlock()
			if ok && !yield(obj, nil) {
				return
			}
		}
	}
}

func (b *fakeBucket) Delete(ctx context.Context, keys []string) error {
	n := b.inflight.Add(1)
	for p := b.maxInflight.Load(); n > p && !b.maxInflight.CompareAndSwap(p, n); p = b.maxInflight.Load() {
	}
	defer b.inflight.Add(-1)
	if b.deleteGate != nil {
		select {
		case <-b.deleteGate:
		case <-ctx.Done():
			return &objstore.DeleteError{Endpoint: "fake", Unknown: keys, Err: ctx.Err()}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	call := len(b.deletes)
	b.deletes = append(b.deletes, slices.Clone(keys))
	if b.failDelete != nil {
		if err := b.failDelete(call, keys); err != nil {
			return err
		}
	}
	for _, k := range keys {
		delete(b.objs, k)
	}
	return nil
}

// s3Fixture is an S3 datastore's local cache (a full chunk store on tmpfs,
// built by storetest with the store invariant at cleanup), its lock dir and
// a fake bucket, with the run's cutoffs.
type s3Fixture struct {
	t      testing.TB
	st     *storetest.Store
	cache  *chunkstore.Store
	locks  *locking.Dir
	bucket *fakeBucket
	// tb is the bucket the table tests fill and inspect: bucket, or with
	// onVersitygw a real one.
	tb  testBucket
	now time.Time
	cut s3Cutoffs
	seq int
	// ranges is gc-s3-list-ranges of the fixture's sweeps and runs; 0:
	// the default.
	ranges int
}

const s3Prefix = "store1/.chunks/"

func newS3Fixture(t testing.TB) *s3Fixture {
	t.Helper()
	base := filepath.Join(testfs.Tmpfs(t, ""), "cache")
	st := storetest.Build(t, storetest.At(base))
	cache, err := chunkstore.Open(base, chunkstore.Options{Log: zaptest.NewLogger(t), Owner: fsys.Keep, SyncLevel: tuning.SyncNone})
	rtest.OK(t, err)
	t.Cleanup(func() { cache.Close() })
	locks, err := locking.OpenDir(filepath.Join(t.TempDir(), "locks"), fsys.Keep)
	rtest.OK(t, err)
	t.Cleanup(func() { locks.Close() })
	now := time.Now()
	fb := newFakeBucket()
	return &s3Fixture{t: t, st: st, cache: cache, locks: locks, bucket: fb, tb: fb, now: now, cut: s3Cutoffs{
		minAtime:     now.Add(-24*time.Hour - 5*time.Minute).Unix(),
		oldestWriter: now.Add(-time.Minute).Unix(),
		objCutoff:    now.Add(-24*time.Hour - 5*time.Minute),
	}}
}

// testBucket is a bucket a table test fills and inspects: the fake, or
// versitygw (every behaviour the fake shows must also hold against a real
// server).
type testBucket interface {
	S3Bucket
	PutIfAbsent(ctx context.Context, key string, data []byte) (bool, error)
	put(key string, size int64, lastModified time.Time)
	has(key string) bool
}

// realBucket is versitygw behind an objstore client.
type realBucket struct {
	*objstore.Client
	t   *testing.T
	srv *s3server.Server
}

func (b *realBucket) put(key string, size int64, lastModified time.Time) {
	b.t.Helper()
	_, err := b.PutIfAbsent(context.Background(), key, make([]byte, size))
	rtest.OK(b.t, err)
	b.srv.Age(key, lastModified)
}

func (b *realBucket) has(key string) bool {
	_, err := os.Stat(b.srv.ObjectPath(key))
	return err == nil
}

// onBuckets runs test once on the fake bucket and once on versitygw.
func onBuckets(t *testing.T, test func(t *testing.T, f *s3Fixture)) {
	t.Run("fake", func(t *testing.T) { test(t, newS3Fixture(t)) })
	t.Run("versitygw", func(t *testing.T) {
		srv := s3server.Start(t, s3server.Options{})
		client, err := objstore.New(srv.Endpoint(), srv.Bucket, objstore.Options{Log: zaptest.NewLogger(t), TestOnlyPlainHTTP: true})
		rtest.OK(t, err)
		f := newS3Fixture(t)
		f.tb = &realBucket{Client: client, t: t, srv: srv}
		test(t, f)
	})
}

// digest returns a new digest unique in the fixture.
func (f *s3Fixture) digest() blob.Digest {
	f.seq++
	return blob.Sum([]byte(fmt.Sprint("s3 sweep chunk ", f.seq)))
}

func (f *s3Fixture) key(d blob.Digest, suffix string) string {
	h := d.String()
	return s3Prefix + h[:4] + "/" + h + suffix
}

// local writes the cache file <p>/<hex><suffix> with size bytes, its atime
// age in the past.
func (f *s3Fixture) local(d blob.Digest, suffix string, size int, age time.Duration) string {
	f.t.Helper()
	p := f.cache.ChunkPath(d) + suffix
	rtest.OK(f.t, os.WriteFile(p, make([]byte, size), 0o644))
	at := f.now.Add(-age)
	rtest.OK(f.t, os.Chtimes(p, at, at))
	return p
}

func (f *s3Fixture) sweep(bucket s3Bucket) (*s3Sweep, error) {
	s := &s3Sweep{bucket: bucket, cache: f.cache, locks: f.locks, prefix: s3Prefix, ranges: f.listRanges(), cut: f.cut,
		log: zaptest.NewLogger(f.t), now: time.Now}
	return s, s.run(context.Background())
}

// listRanges is the fixture's gc-s3-list-ranges.
func (f *s3Fixture) listRanges() int {
	if f.ranges > 0 {
		return f.ranges
	}
	return tuning.Defaults().S3ListRanges
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestS3SweepDecisionTable runs the sweep over every combination of local
// state (cached chunk, empty marker, .using marker, nothing, local bad
// copy, bad object without a local copy) × local atime old/new ×
// LastModified old/new × chunk lock free/held, plus foreign keys, and
// checks each object, each local file and the counters: an object goes
// only with both proofs and a free lock, its local file first; .using
// becomes an empty marker; foreign keys stay.
func TestS3SweepDecisionTable(t *testing.T) { onBuckets(t, testS3SweepDecisionTable) }

func testS3SweepDecisionTable(t *testing.T, f *s3Fixture) {
	type row struct {
		name      string
		key       string
		localPath string // "" when the row has no local file
		usingPath string
		wantGone  bool
		held      *locking.Lock
	}
	var rows []*row
	const old, fresh = 72 * time.Hour, time.Second
	for _, busy := range []bool{false, true} {
		for _, local := range []string{"cached", "marker", "using", "none", "bad", "bad-none"} {
			for _, atime := range []string{"old", "pending", "new"} {
				if (local == "using" || local == "none" || local == "bad-none") && atime != "old" {
					continue // no local file, no atime
				}
				atimeOld := atime == "old"
				for _, lmOld := range []bool{true, false} {
					d := f.digest()
					r := &row{name: fmt.Sprintf("busy=%v/local=%s/atime=%s/lm-old=%v", busy, local, atime, lmOld)}
					age := map[string]time.Duration{"old": old, "pending": time.Hour, "new": fresh}[atime]
					suffix := ""
					switch local {
					case "cached":
						r.localPath = f.local(d, "", 300, age)
					case "marker":
						r.localPath = f.local(d, "", 0, age)
					case "using":
						r.usingPath = f.local(d, ".using", 0, fresh)
					case "bad":
						suffix = ".0.bad"
						r.localPath = f.local(d, suffix, 200, age)
					case "bad-none":
						suffix = ".0.bad"
					}
					r.key = f.key(d, suffix)
					lm := f.now.Add(-time.Second)
					if lmOld {
						lm = f.now.Add(-old)
					}
					f.tb.put(r.key, 300, lm)
					r.wantGone = !busy && lmOld && local != "using" && (atimeOld || local == "none" || local == "bad-none")
					if busy {
						l, err := f.locks.LockChunk(t.Context(), d.String(), 0)
						rtest.OK(t, err)
						r.held = l
					}
					rows = append(rows, r)
				}
			}
		}
	}
	d := f.digest()
	h := d.String()
	foreign := []string{
		s3Prefix + h[:4] + "/" + strings.ToUpper(h),
		s3Prefix + h[:4] + "/" + h + ".using",
		s3Prefix + h[:4] + "/" + h + ".tmp_1234",
		s3Prefix + h[:4] + "/x/" + h,
		s3Prefix + "README",
	}
	for _, k := range foreign {
		f.tb.put(k, 10, f.now.Add(-old))
	}

	s, err := f.sweep(f.tb)
	rtest.OK(t, err)
	var gone, busy, young, pending int64
	for _, r := range rows {
		if r.held != nil {
			rtest.OK(t, r.held.Unlock())
			busy++
		}
		if got := !f.tb.has(r.key); got != r.wantGone {
			t.Errorf("%s: object deleted %v, want %v", r.name, got, r.wantGone)
		}
		if r.wantGone {
			gone++
		}
		if r.held == nil && strings.Contains(r.name, "atime=pending") {
			pending++
		}
		if r.localPath != "" && exists(r.localPath) == r.wantGone {
			t.Errorf("%s: local file %s exists %v after the sweep, want %v", r.name, r.localPath, exists(r.localPath), !r.wantGone)
		}
		if r.usingPath != "" && r.held == nil {
			if exists(r.usingPath) {
				t.Errorf("%s: .using marker left", r.name)
			}
			marker := strings.TrimSuffix(r.usingPath, ".using")
			if fi, err := os.Stat(marker); err != nil || fi.Size() != 0 {
				t.Errorf("%s: want an empty marker %s: %v", r.name, marker, err)
			}
		}
		if strings.Contains(r.name, "lm-old=false") && r.held == nil && !strings.Contains(r.name, "local=using") &&
			(strings.Contains(r.name, "atime=old") || strings.Contains(r.name, "local=none") || strings.Contains(r.name, "local=bad-none")) {
			young++
		}
	}
	for _, k := range foreign {
		if !f.tb.has(k) {
			t.Errorf("foreign key %s deleted", k)
		}
	}
	rtest.Equal(t, "Removed", gone, s.c.Removed)
	rtest.Equal(t, "Busy", busy, s.c.Busy)
	rtest.Equal(t, "KeptYoung", young, s.c.KeptYoung)
	rtest.Equal(t, "Foreign", int64(len(foreign)), s.c.Foreign)
	rtest.Equal(t, "Objects", int64(len(rows)), s.c.Objects)
	rtest.Equal(t, "UsingMarkers", int64(2), s.c.UsingMarkers) // lock free, LastModified old and new
	rtest.Equal(t, "Pending", pending, s.c.Pending)
	rtest.Equal(t, "RemovedBad", int64(2), s.c.RemovedBad)   // a local bad copy and none, both old
	rtest.Equal(t, "LocalRemoved", gone-2, s.c.LocalRemoved) // all but the two without a local file
}

// TestS3SweepBatches: 250 deletable objects go in DeleteObjects batches of
// at most 100, each key once; the request count is ⌈deleted/100⌉.
func TestS3SweepBatches(t *testing.T) {
	f := newS3Fixture(t)
	for range 250 {
		f.bucket.put(f.key(f.digest(), ""), 100, f.now.Add(-72*time.Hour))
	}
	s, err := f.sweep(f.bucket)
	rtest.OK(t, err)
	rtest.Equal(t, "Removed", int64(250), s.c.Removed)
	rtest.Equal(t, "requests", 3, len(f.bucket.deletes))
	seen := map[string]bool{}
	for _, b := range f.bucket.deletes {
		if len(b) > S3DeleteBatch {
			t.Errorf("a batch of %d keys", len(b))
		}
		for _, k := range b {
			if seen[k] {
				t.Errorf("%s deleted twice", k)
			}
			seen[k] = true
		}
	}
}

// TestS3SweepDeleteFails: the second DeleteObjects fails (the outcome is
// unknown): the run stops with an error naming the keys, every chunk lock
// is released, no local file of an object still there survives (the local
// file always goes first), and a second run with a working server
// converges: every old object without local evidence goes.
func TestS3SweepDeleteFails(t *testing.T) {
	f := newS3Fixture(t)
	var keys []string
	var locals []string
	for i := range 250 {
		d := f.digest()
		keys = append(keys, f.key(d, ""))
		f.bucket.put(keys[i], 100, f.now.Add(-72*time.Hour))
		locals = append(locals, f.local(d, "", 0, 72*time.Hour))
	}
	f.bucket.failDelete = func(call int, keys []string) error {
		if call == 1 {
			return &objstore.DeleteError{Endpoint: "fake", Unknown: keys, Err: errors.New("connection reset")}
		}
		return nil
	}
	s, err := f.sweep(f.bucket)
	var de *objstore.DeleteError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), f.bucket.deletes[1][0]) {
		t.Fatalf("sweep: %v, want a DeleteError naming the batch's keys", err)
	}
	rtest.Equal(t, "Removed (confirmed)", int64(100), s.c.Removed)
	for i, k := range keys {
		if f.bucket.has(k) && exists(locals[i]) && slices.Contains(f.bucket.deletes[1], k) {
			t.Errorf("%s: local marker kept for an object whose delete was sent", k)
		}
		d, _ := blob.ParseDigest(k[strings.LastIndexByte(k, '/')+1:])
		l, err := f.locks.LockChunk(t.Context(), d.String(), 0)
		if err != nil {
			t.Fatalf("chunk lock of %s still held after the failed run: %v", k, err)
		}
		l.Unlock()
	}
	f.bucket.failDelete = nil
	s, err = f.sweep(f.bucket)
	rtest.OK(t, err)
	for _, k := range keys {
		if f.bucket.has(k) {
			t.Errorf("%s survived the second run", k)
		}
	}
	rtest.Equal(t, "second run Removed", int64(150), s.c.Removed)
}

// ServerTime is the fake server's clock: this host's plus skew.
func (b *fakeBucket) ServerTime(ctx context.Context) (objstore.ServerClock, error) {
	now := time.Now()
	return objstore.ServerClock{Server: now.Add(b.skew).Truncate(time.Second), Sent: now, Received: now}, nil
}

// TestS3Run is a whole run of an S3 datastore over the fake bucket: phase
// 1 touches the cached referenced chunks and marks the uncached one
// .using; phase 2 keeps every referenced object (the uncached one's
// .using becomes an empty marker), deletes old garbage with and without a
// local file, keeps a young object without local evidence (a no-cache
// upload whose index is not finished), leaves foreign keys; phase 3
// removes the cache file of an object that is gone. Every chunk of every
// index still exists as an object.
func TestS3Run(t *testing.T) { onBuckets(t, testS3Run) }

func testS3Run(t *testing.T, f *s3Fixture) {
	const old = 72 * time.Hour
	var refs []blob.Digest
	for i := range 4 {
		n := fmt.Sprint("ref ", i)
		f.st.Add(storetest.Chunk(n, storetest.Age(old)))
		refs = append(refs, f.st.Digest(n))
	}
	f.st.Add(storetest.Missing("ref uncached"))
	uncached := f.st.Digest("ref uncached")
	refs = append(refs, uncached)
	f.st.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", refs...)
	for _, d := range refs {
		f.tb.put(f.key(d, ""), 1000, f.now.Add(-old))
	}
	garbageCached, garbageMarker, garbageNone, young := f.digest(), f.digest(), f.digest(), f.digest()
	cachedPath := f.local(garbageCached, "", 500, old)
	markerPath := f.local(garbageMarker, "", 0, old)
	for _, d := range []blob.Digest{garbageCached, garbageMarker, garbageNone} {
		f.tb.put(f.key(d, ""), 1000, f.now.Add(-old))
	}
	f.tb.put(f.key(young, ""), 1000, f.now.Add(-time.Minute))
	orphan := f.digest() // a cache file whose object is gone
	orphanPath := f.local(orphan, "", 0, old)
	foreign := s3Prefix + "README"
	f.tb.put(foreign, 10, f.now.Add(-old))

	st, err := f.run(t, f.tb)
	rtest.OK(t, err)
	for _, d := range refs {
		if !f.tb.has(f.key(d, "")) {
			t.Errorf("referenced object %s deleted", d)
		}
	}
	if fi, err := os.Stat(f.cache.ChunkPath(uncached)); err != nil || fi.Size() != 0 {
		t.Errorf("uncached referenced chunk: want an empty marker: %v", err)
	}
	if exists(f.cache.ChunkPath(uncached) + ".using") {
		t.Error(".using marker left after the run")
	}
	for name, d := range map[string]blob.Digest{"cached": garbageCached, "marker": garbageMarker, "none": garbageNone} {
		if f.tb.has(f.key(d, "")) {
			t.Errorf("old garbage object (%s) kept", name)
		}
	}
	for _, p := range []string{cachedPath, markerPath, orphanPath} {
		if exists(p) {
			t.Errorf("cache file %s left without its object", p)
		}
	}
	if !f.tb.has(f.key(young, "")) || !f.tb.has(foreign) {
		t.Error("young or foreign object deleted")
	}
	rtest.Equal(t, "expected (.using)", int64(1), st.S3Expected)
	rtest.Equal(t, "removed", int64(3), st.RemovedChunks)
	rtest.Equal(t, "kept young", int64(1), st.S3.KeptYoung)
	rtest.Equal(t, "disk chunks (the young one is pending)", int64(len(refs)), st.DiskChunks)
	rtest.Equal(t, "pending chunks (young)", int64(1), st.PendingChunks)
	rtest.Equal(t, "cache removed", int64(1), st.S3.CacheRemoved)
	f.checkObjects(t)
	read, err := ReadStatus(f.cache.Base())
	rtest.OK(t, err)
	rtest.Equal(t, ".gc-status removed-chunks", int64(3), read.RemovedChunks)
}

// TestS3RunClockSkew: a server clock further off than gc-max-clock-skew
// stops the run before phase 1, naming it; nothing is deleted.
func TestS3RunClockSkew(t *testing.T) {
	for _, skew := range []time.Duration{2 * time.Minute, -2 * time.Minute} {
		f := newS3Fixture(t)
		f.bucket.skew = skew
		k := f.key(f.digest(), "")
		f.bucket.put(k, 10, f.now.Add(-72*time.Hour))
		_, err := f.run(t, f.bucket)
		if !errors.Is(err, ErrS3ClockSkew) {
			t.Errorf("skew %v: %v, want %v", skew, err, ErrS3ClockSkew)
		}
		if !f.bucket.has(k) || len(f.bucket.deletes) != 0 {
			t.Errorf("skew %v: an object was deleted", skew)
		}
	}
}

// TestS3RunInUse: an .in-use marker naming another host stops the run
// before phase 1 (nothing deleted); one naming this host lets it run.
func TestS3RunInUse(t *testing.T) {
	host, err := objstore.Nodename()
	rtest.OK(t, err)
	for _, tt := range []struct {
		marker string
		want   error
	}{
		{`{"hostname":"pbs-elsewhere"}`, ErrS3InUse},
		{`{"hostname":"` + host + `"}`, nil},
	} {
		f := newS3Fixture(t)
		f.bucket.data["store1/.in-use"] = []byte(tt.marker)
		k := f.key(f.digest(), "")
		f.bucket.put(k, 10, f.now.Add(-72*time.Hour))
		_, err := f.run(t, f.bucket)
		if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
			t.Errorf("marker %s: %v, want %v", tt.marker, err, tt.want)
		}
		if gone := !f.bucket.has(k); gone != (tt.want == nil) {
			t.Errorf("marker %s: garbage deleted %v", tt.marker, gone)
		}
	}
}

// run runs GC of the S3 datastore store1 over bucket, the probe off.
func (f *s3Fixture) run(t *testing.T, bucket S3Bucket) (*Status, error) {
	t.Helper()
	tun := tuning.Defaults()
	tun.AtimeSafetyCheck = false
	tun.S3ListRanges = f.listRanges()
	return Run(context.Background(), f.cache, f.locks, Options{Log: zaptest.NewLogger(t), StoreName: "store1", Tuning: tun,
		S3: &S3{Bucket: bucket, Store: "store1"}})
}

// checkObjects is the S3 store invariant: every chunk of every index of
// the local cache exists as an object.
func (f *s3Fixture) checkObjects(t *testing.T) {
	t.Helper()
	storetest.CheckObjects(t, f.cache.Base(), func(d blob.Digest) bool { return f.tb.has(f.key(d, "")) })
}

// TestS3SweepCountsAdd: add sums every figure of the ranges (a field added
// to S3SweepCounts and forgotten in add fails here). Requests are the
// client's, set once per run, not summed.
func TestS3SweepCountsAdd(t *testing.T) {
	var o S3SweepCounts
	ov := reflect.ValueOf(&o).Elem()
	for i := range ov.NumField() {
		if ov.Field(i).Kind() == reflect.Int64 {
			ov.Field(i).SetInt(int64(i + 1))
		}
	}
	var c S3SweepCounts
	c.add(&o)
	c.add(&o)
	cv := reflect.ValueOf(c)
	for i := range cv.NumField() {
		if cv.Field(i).Kind() == reflect.Int64 {
			rtest.Equal(t, cv.Type().Field(i).Name, int64(2*(i+1)), cv.Field(i).Int())
		}
	}
}

// TestS3SweepCancelWaitsForDelete: a run cancelled (a signal) while a
// DeleteObjects is in flight waits for the server's answer before it lets
// the batch's chunk locks go: an uploader that took a lock meanwhile could
// get 412 for an object the server is about to delete and cache it. The
// request's context is not cancelled with the run; the answer counts.
func TestS3SweepCancelWaitsForDelete(t *testing.T) {
	f := newS3Fixture(t)
	var keys []string
	var digests []blob.Digest
	for range S3DeleteBatch {
		d := f.digest()
		k := f.key(d, "")
		f.bucket.put(k, 10, f.now.Add(-72*time.Hour))
		f.local(d, "", 0, 72*time.Hour)
		keys, digests = append(keys, k), append(digests, d)
	}
	f.bucket.deleteGate = make(chan struct{})
	ctx, cancel := context.WithCancel(t.Context())
	s := &s3Sweep{bucket: f.bucket, cache: f.cache, locks: f.locks, prefix: s3Prefix, ranges: f.listRanges(), cut: f.cut,
		log: zaptest.NewLogger(t), now: time.Now}
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for f.bucket.inflight.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no DeleteObjects was sent")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("the sweep returned (%v) with its DeleteObjects unanswered", err)
	case <-time.After(300 * time.Millisecond):
	}
	for _, d := range digests[:3] {
		_, err := f.locks.LockChunk(t.Context(), d.String(), 0)
		rtest.ErrorIs(t, err, locking.ErrLocked)
	}
	close(f.bucket.deleteGate)
	err := <-done
	t.Logf("sweep: %v", err)
	for _, k := range keys {
		rtest.Equal(t, "deleted "+k, false, f.bucket.has(k))
	}
	for _, d := range digests {
		l, err := f.locks.LockChunk(t.Context(), d.String(), 0)
		rtest.OK(t, err)
		rtest.OK(t, l.Unlock())
	}
}
