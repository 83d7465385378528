package gc

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/s3server"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/objstore"
	"chunkgc/tuning"
)

func gc3Requests(r objstore.Requests) S3Requests {
	return S3Requests{Get: r.Get, Put: r.Put, Post: r.Post, Head: r.Head, Delete: r.Delete, Other: r.Other}
}

// TestS3RunVersitygw is an S3 datastore's GC against a real S3 server
// (versitygw over TLS, its certificate pinned by fingerprint as s3.cfg
// does): 1,200 referenced chunks (one of them not cached), 250 old garbage
// objects with and without cache files, a young object with no local
// evidence (a no-cache upload whose index is not finished) and a young
// object whose cache file is old (a lost and re-created cache). Referenced
// and young objects stay, old garbage goes with its cache files, and the
// run sends one HEAD (the server's clock), one GET (.in-use), the LIST
// requests of its 16 key ranges (s3ListPages, at most ⌈objects/1000⌉ + 16)
// and ⌈deleted/100⌉ POST requests and nothing else.
func TestS3RunVersitygw(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{TLS: true})
	client, err := objstore.New(srv.Endpoint(), srv.Bucket, objstore.Options{Log: zaptest.NewLogger(t)})
	rtest.OK(t, err)
	f := newS3Fixture(t)
	ctx := context.Background()
	const old = 72 * time.Hour
	put := func(d blob.Digest, age time.Duration) string {
		t.Helper()
		k := f.key(d, "")
		_, err := client.PutIfAbsent(ctx, k, []byte(k))
		rtest.OK(t, err)
		if age > 0 {
			srv.Age(k, time.Now().Add(-age))
		}
		return k
	}
	var refs []blob.Digest
	for i := range 1200 {
		n := fmt.Sprint("ref ", i)
		f.st.Add(storetest.Chunk(n, storetest.Size(64), storetest.Age(old)))
		refs = append(refs, f.st.Digest(n))
	}
	f.st.Add(storetest.Missing("ref uncached"))
	refs = append(refs, f.st.Digest("ref uncached"))
	f.st.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", refs...)
	for _, d := range refs {
		put(d, old)
	}
	var garbage []string
	var garbageLocal []string
	for i := range 250 {
		d := f.digest()
		garbage = append(garbage, put(d, old))
		if i%2 == 0 {
			garbageLocal = append(garbageLocal, f.local(d, "", 0, old))
		}
	}
	noCache := put(f.digest(), 0)
	recreated := f.digest()
	recreatedKey := put(recreated, time.Minute)
	f.local(recreated, "", 0, old)
	objects := int64(len(refs) + len(garbage) + 2)
	keys := append(slices.Clone(garbage), noCache, recreatedKey)
	for _, d := range refs {
		keys = append(keys, f.key(d, ""))
	}
	ranges := tuning.Defaults().S3ListRanges
	lists := int64(s3ListPages(keys, 1000, ranges))
	if bound := (objects+999)/1000 + int64(ranges); lists > bound {
		t.Fatalf("s3ListPages %d: beyond ⌈objects/1000⌉ + %d = %d", lists, ranges, bound)
	}

	before := client.Requests()
	st, err := f.run(t, client)
	rtest.OK(t, err)
	req := client.Requests()
	req.Get -= before.Get
	req.Head -= before.Head
	req.Post -= before.Post
	req.Put -= before.Put
	req.Delete -= before.Delete
	// The HEAD reads the server's clock, one GET the .in-use marker, one
	// LIST (a GET) the empty <store>/.cnt/.
	want := objstore.Requests{Head: 1, Get: 2 + lists, Post: (int64(len(garbage)) + 99) / 100}
	req.Other -= before.Other
	rtest.Equal(t, "requests", want, req)

	storetest.CheckObjects(t, f.cache.Base(), func(d blob.Digest) bool {
		_, err := os.Stat(srv.ObjectPath(f.key(d, "")))
		return err == nil
	})
	for _, k := range garbage {
		if _, err := os.Stat(srv.ObjectPath(k)); err == nil {
			t.Errorf("old garbage %s kept", k)
		}
	}
	for _, p := range garbageLocal {
		if exists(p) {
			t.Errorf("cache file %s left without its object", p)
		}
	}
	for _, k := range []string{noCache, recreatedKey} {
		if _, err := os.Stat(srv.ObjectPath(k)); err != nil {
			t.Errorf("young object %s deleted: %v", k, err)
		}
	}
	rtest.Equal(t, "removed", int64(len(garbage)), st.RemovedChunks)
	rtest.Equal(t, "kept young", int64(2), st.S3.KeptYoung)
	rtest.Equal(t, "listed", objects, st.S3.Objects)
	rtest.Equal(t, "requests in the status", gc3Requests(want), st.S3.Requests)
}
