package gc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"chunkgc/internal/testkit/rtest"
	"chunkgc/objstore"
)

// s3ListPages is how many LIST requests a sweep over ranges key ranges
// sends for keys (all under s3Prefix) in pages of pageSize: a range that
// keys follow reads ⌊n/pageSize⌋+1 pages (its last one shows the first
// key after it), the last range ⌈n/pageSize⌉, at least 1. The sum is at
// most ⌈len(keys)/pageSize⌉ + ranges.
func s3ListPages(keys []string, pageSize, ranges int) int {
	total := 0
	for _, o := range s3KeyRanges(s3Prefix, ranges) {
		n, after := 0, false
		for _, k := range keys {
			switch {
			case k <= o.StartAfter:
			case o.Before != "" && k >= o.Before:
				after = true
			default:
				n++
			}
		}
		if after {
			total += n/pageSize + 1
		} else {
			total += max(1, (n+pageSize-1)/pageSize)
		}
	}
	return total
}

// TestS3KeyRanges: for every number of ranges, the sweep's ranges list
// every key exactly once — keys at and around the boundaries, keys before
// the first and after the last hex digit, uppercase, NUL and the largest
// code point on the fake — and chunk keys of prefix dirs d… in the range
// of d, each range in key order; the sweep counts every key once
// (objects or foreign).
func TestS3KeyRanges(t *testing.T) {
	onBuckets(t, func(t *testing.T, f *s3Fixture) {
		const hexDigits = "0123456789abcdef"
		var keys []string
		for _, c := range hexDigits {
			for range 3 {
				d := f.digest()
				h := d.String()
				h = string(c) + h[1:] // a chunk key of a prefix dir starting with c
				keys = append(keys, s3Prefix+h[:4]+"/"+h)
			}
			keys = append(keys, s3Prefix+string(c), s3Prefix+string(c)+"-", s3Prefix+string(c)+"0")
		}
		keys = append(keys, s3Prefix+"-x", s3Prefix+"A", s3Prefix+"F", s3Prefix+"_", s3Prefix+"g")
		if _, ok := f.tb.(*fakeBucket); ok {
			// Names a posix backend cannot store, or whose signature
			// versitygw computes differently.
			keys = append(keys, s3Prefix+"1\x00", s3Prefix+"1\x00\x00", s3Prefix+"0\U0010FFFF", s3Prefix+"f\U0010FFFF", s3Prefix+"\x00",
				s3Prefix+"!", s3Prefix+"~", s3Prefix+"é")
		}
		for _, k := range keys {
			f.tb.put(k, 10, f.now)
		}
		slices.Sort(keys)
		for _, n := range []int{1, 2, 3, 5, 7, 16} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				ranges := s3KeyRanges(s3Prefix, n)
				rtest.Equal(t, "ranges", n, len(ranges))
				var got []string
				for i, o := range ranges {
					var in []string
					for obj, err := range f.tb.List(t.Context(), s3Prefix, o) {
						rtest.OK(t, err)
						in = append(in, obj.Key)
					}
					if !slices.IsSorted(in) {
						t.Errorf("range %d (%+q) not in key order", i, o)
					}
					for _, k := range in {
						k, ok := parseS3Key(s3Prefix, k)
						if !ok {
							continue
						}
						d := strings.IndexByte(hexDigits, k.name[0])
						if lo, hi := i*16/n, (i+1)*16/n; d < lo || d >= hi {
							t.Errorf("chunk key %s in range %d, want digits %d..%d", k.name, i, lo, hi-1)
						}
					}
					got = append(got, in...)
				}
				rtest.Equal(t, "keys listed over all ranges, in order", keys, got)

				var seen []string
				s := &s3Sweep{bucket: f.tb, cache: f.cache, locks: f.locks, prefix: s3Prefix, ranges: n, cut: f.cut,
					log: zaptest.NewLogger(t), now: time.Now, before: func(key string) { seen = append(seen, key) }}
				rtest.OK(t, s.run(t.Context()))
				slices.Sort(seen)
				rtest.Equal(t, "keys the sweep decided", keys, seen)
				rtest.Equal(t, "objects + foreign", int64(len(keys)), s.c.Objects+s.c.Foreign)
				rtest.Equal(t, "objects", int64(16*3), s.c.Objects)
			})
		}
	})
}

// TestS3SweepRangeErrorCancels: a listing error in one range stops the
// whole sweep: the other 15 ranges, each blocked in its listing after its
// first key until the error, are cancelled and list nothing more; the
// error names the range's key and carries no cancel; nothing is deleted
// (the keys queued so far are not sent) and every chunk lock is released.
func TestS3SweepRangeErrorCancels(t *testing.T) {
	f := newS3Fixture(t)
	var perDigit [16]int
	for n := 0; n < 16*20; {
		d := f.digest()
		if i := d[0] >> 4; perDigit[i] < 20 {
			perDigit[i]++
			n++
			f.bucket.put(f.key(d, ""), 10, f.now.Add(-72*time.Hour))
			f.local(d, "", 0, 72*time.Hour)
		}
	}
	errList := errors.New("fake list: connection reset")
	failAfter := s3Prefix + "7"
	var mu sync.Mutex
	var blocked, cancelled, timedOut, beyond int
	allBlocked := make(chan struct{})
	var failedKey string
	f.bucket.listHook = func(ctx context.Context, o objstore.ListOptions, n int, key string) error {
		if o.StartAfter == failAfter {
			if n == 3 {
				select {
				case <-allBlocked:
				case <-time.After(10 * time.Second):
					t.Error("the other ranges never reached their second key")
				}
				mu.Lock()
				failedKey = key
				mu.Unlock()
				return fmt.Errorf("before %s: %w", key, errList)
			}
			return nil
		}
		if n < 1 {
			return nil
		}
		mu.Lock()
		if n > 1 {
			beyond++
		}
		if blocked++; blocked == 15 {
			close(allBlocked)
		}
		mu.Unlock()
		select {
		case <-ctx.Done():
			mu.Lock()
			cancelled++
			mu.Unlock()
			return ctx.Err()
		case <-time.After(10 * time.Second):
			mu.Lock()
			timedOut++
			mu.Unlock()
			return nil
		}
	}
	s, err := f.sweep(f.bucket)
	rtest.ErrorIs(t, err, errList)
	if !strings.Contains(err.Error(), failedKey) {
		t.Errorf("error %q does not name the key %s", err, failedKey)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("error %q carries the other ranges' cancels", err)
	}
	rtest.Equal(t, "ranges cancelled", 15, cancelled)
	rtest.Equal(t, "ranges that went on", 0, timedOut+beyond)
	rtest.Equal(t, "delete requests", 0, len(f.bucket.deletes))
	rtest.Equal(t, "queued keys left", int64(0), s.b.queued.Load())
	for k := range f.bucket.objs {
		d, _ := parseS3Key(s3Prefix, k)
		l, err := f.locks.LockChunk(t.Context(), d.digest.String(), 0)
		if err != nil {
			t.Fatalf("chunk lock of %s held after the failed sweep: %v", k, err)
		}
		rtest.OK(t, l.Unlock())
	}
	f.bucket.listHook = nil
	s, err = f.sweep(f.bucket)
	rtest.OK(t, err)
	rtest.Equal(t, "second run removed", int64(16*20), s.c.Removed)
}

// TestS3SweepQueueBound: 16 ranges deciding 3,000 deletable keys share
// full batches of 100 — exactly ⌈3000/100⌉ DeleteObjects — and never hold
// more than s3MaxQueued keys (each a chunk lock, an open fd) queued or in
// flight: the deletes are held until the queue is full, the ranges then
// wait for places, and the peak is the bound exactly.
func TestS3SweepQueueBound(t *testing.T) {
	f := newS3Fixture(t)
	const n = 3000
	for range n {
		f.bucket.put(f.key(f.digest(), ""), 10, f.now.Add(-72*time.Hour))
	}
	full := make(chan struct{})
	f.bucket.deleteGate = full
	var once sync.Once
	s := &s3Sweep{bucket: f.bucket, cache: f.cache, locks: f.locks, prefix: s3Prefix, ranges: 16, cut: f.cut,
		log: zaptest.NewLogger(t), now: time.Now, onQueued: func(q int64) {
			if q >= s3MaxQueued {
				once.Do(func() { close(full) })
			}
		}}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	rtest.OK(t, s.run(ctx))
	rtest.Equal(t, "removed", int64(n), s.c.Removed)
	rtest.Equal(t, "delete requests", (n+S3DeleteBatch-1)/S3DeleteBatch, len(f.bucket.deletes))
	for i, b := range f.bucket.deletes {
		if len(b) != S3DeleteBatch {
			t.Errorf("delete %d: %d keys, want full batches", i, len(b))
		}
	}
	rtest.Equal(t, "peak queued keys", int64(s3MaxQueued), s.b.peak.Load())
	t.Logf("deletes in flight at most %d", f.bucket.maxInflight.Load())
	rtest.Equal(t, "queued keys left", int64(0), s.b.queued.Load())
	rtest.Equal(t, "objects left", 0, len(f.bucket.objs))
}

// TestS3SweepDryRun: a dry run over 16 ranges decides and counts every
// deletable object, sends nothing and removes no local file.
func TestS3SweepDryRun(t *testing.T) {
	f := newS3Fixture(t)
	var locals []string
	for range 250 {
		d := f.digest()
		f.bucket.put(f.key(d, ""), 10, f.now.Add(-72*time.Hour))
		locals = append(locals, f.local(d, "", 0, 72*time.Hour))
	}
	s := &s3Sweep{bucket: f.bucket, cache: f.cache, locks: f.locks, prefix: s3Prefix, ranges: 16, cut: f.cut,
		log: zaptest.NewLogger(t), now: time.Now, dryRun: true}
	rtest.OK(t, s.run(t.Context()))
	rtest.Equal(t, "removed (would be)", int64(250), s.c.Removed)
	rtest.Equal(t, "removed bytes (would be)", int64(2500), s.c.RemovedBytes)
	rtest.Equal(t, "delete requests", 0, len(f.bucket.deletes))
	rtest.Equal(t, "objects", 250, len(f.bucket.objs))
	for _, p := range locals {
		if !exists(p) {
			t.Errorf("dry run removed %s", p)
		}
	}
}
