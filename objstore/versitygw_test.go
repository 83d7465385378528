package objstore

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap/zaptest"

	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/s3server"
)

// These tests run the client against a real S3 server, versitygw
// (internal/testkit/s3server): skipped with the reason when it is not
// installed, failed under CI.

func versity(t *testing.T, so s3server.Options, o Options) (*s3server.Server, *Client) {
	t.Helper()
	s := s3server.Start(t, so)
	o.TestOnlyPlainHTTP = !so.TLS
	if o.Log == nil {
		o.Log = zaptest.NewLogger(t)
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 10 * time.Millisecond
	}
	c, err := New(s.Endpoint(), s.Bucket, o)
	rtest.OK(t, err)
	return s, c
}

// chunkKey is the PBS object key of the i-th test chunk of store st.
func chunkKey(i int) string {
	d := sha256.Sum256([]byte(fmt.Sprint(i)))
	return fmt.Sprintf("st/.chunks/%x/%x", d[:2], d[:])
}

// putAll uploads keys with 8 uploaders.
func putAll(t *testing.T, c *Client, keys []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	work := make(chan string)
	for range 8 {
		wg.Go(func() {
			for k := range work {
				if _, err := c.PutIfAbsent(context.Background(), k, []byte("chunk "+k)); err != nil {
					errs <- err
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func listKeys(t *testing.T, c *Client, prefix string, o ListOptions) []string {
	t.Helper()
	var keys []string
	for ob, err := range c.List(context.Background(), prefix, o) {
		rtest.OK(t, err)
		keys = append(keys, ob.Key)
	}
	return keys
}

// TestListPagingVersitygw lists 2,500 objects in pages of 1,000: ⌈n/1000⌉
// GETs, every key once, sorted; a key range costs only its pages.
func TestListPagingVersitygw(t *testing.T) {
	s, c := versity(t, s3server.Options{}, Options{ListPageSize: 1000})
	const n = 2500
	keys := make([]string, n)
	for i := range keys {
		keys[i] = chunkKey(i)
	}
	putAll(t, c, keys)
	rtest.Equal(t, "PUTs", int64(n), c.Requests().Put)

	before := c.Requests()
	got := listKeys(t, c, "st/.chunks/", ListOptions{})
	rtest.Equal(t, "listed", n, len(got))
	for i := 1; i < len(got); i++ {
		if got[i-1] >= got[i] {
			t.Fatalf("listing not sorted at %d: %s, %s", i, got[i-1], got[i])
		}
	}
	rtest.Equal(t, "LIST requests for 2,500 keys", Requests{Get: 3}, diff(c.Requests(), before))

	// The server's default page size is 1,000 too.
	d, err := New(s.Endpoint(), s.Bucket, Options{TestOnlyPlainHTTP: true})
	rtest.OK(t, err)
	rtest.Equal(t, "listed with the server's page size", n, len(listKeys(t, d, "st/.chunks/", ListOptions{})))
	rtest.Equal(t, "LIST requests, server's page size", Requests{Get: 3}, d.Requests())

	// One of 16 ranges: first hex digit 8 (about 1/16 of the keys, one page).
	before = c.Requests()
	part := listKeys(t, c, "st/.chunks/", ListOptions{StartAfter: "st/.chunks/7g", Before: "st/.chunks/9"})
	want := 0
	for _, k := range got {
		if k > "st/.chunks/7g" && k < "st/.chunks/9" {
			want++
		}
	}
	rtest.Equal(t, "range keys", want, len(part))
	rtest.Equal(t, "range LIST requests", Requests{Get: 1}, diff(c.Requests(), before))

	// A listing stopped early sends no further pages.
	before = c.Requests()
	for range c.List(context.Background(), "st/.chunks/", ListOptions{}) {
		break
	}
	rtest.Equal(t, "LIST requests of a stopped listing", Requests{Get: 1}, diff(c.Requests(), before))
}

func diff(a, b Requests) Requests {
	return Requests{a.Get - b.Get, a.Put - b.Put, a.Post - b.Post, a.Head - b.Head, a.Delete - b.Delete, a.Other - b.Other}
}

// TestLastModifiedVersitygw: listing and HEAD report an aged object's
// mtime; Get and Head of a missing key match ErrNotFound.
func TestLastModifiedVersitygw(t *testing.T) {
	s, c := versity(t, s3server.Options{}, Options{})
	ctx := context.Background()
	k := chunkKey(1)
	_, err := c.PutIfAbsent(ctx, k, []byte("payload"))
	rtest.OK(t, err)
	old := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	s.Age(k, old)
	for ob, err := range c.List(ctx, "st/", ListOptions{}) {
		rtest.OK(t, err)
		rtest.Equal(t, "listed LastModified", old, ob.LastModified.UTC())
		rtest.Equal(t, "listed size", int64(7), ob.Size)
	}
	ob, err := c.Head(ctx, k)
	rtest.OK(t, err)
	rtest.Equal(t, "HEAD LastModified", old, ob.LastModified.UTC())
	b, err := c.Get(ctx, k)
	rtest.OK(t, err)
	rtest.Equal(t, "content", "payload", string(b))
	_, err = c.Head(ctx, chunkKey(2))
	rtest.ErrorIs(t, err, ErrNotFound)
	_, err = c.Get(ctx, chunkKey(2))
	rtest.ErrorIs(t, err, ErrNotFound)
}

// TestDeleteObjectsVersitygw deletes 250 objects in 3 DeleteObjects
// requests with Content-MD5; a missing key is confirmed too.
func TestDeleteObjectsVersitygw(t *testing.T) {
	s, c := versity(t, s3server.Options{}, Options{})
	keys := make([]string, 250)
	for i := range keys {
		keys[i] = chunkKey(i)
	}
	putAll(t, c, keys)
	keep := chunkKey(1000)
	putAll(t, c, []string{keep})
	before := c.Requests()
	rtest.OK(t, c.Delete(context.Background(), append(keys, chunkKey(2000)))) // 251 keys, one never uploaded
	rtest.Equal(t, "requests", Requests{Post: 3}, diff(c.Requests(), before))
	rtest.Equal(t, "left", []string{keep}, listKeys(t, c, "st/", ListOptions{}))
	if _, err := os.Stat(s.ObjectPath(keys[0])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("object file of a deleted key: %v", err)
	}

	// versitygw checks Content-MD5: a wrong one is refused (400 BadDigest),
	// nothing is deleted, and every key of the batch is named as refused.
	bad := Options{TestOnlyPlainHTTP: true, deleteOptions: []func(*s3.Options){func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Insert(middleware.FinalizeMiddlewareFunc("corruptMD5",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					in.Request.(*smithyhttp.Request).Header.Set("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")
					return next.HandleFinalize(ctx, in)
				}), "chunkgcContentMD5", middleware.After)
		})
	}}}
	b, err := New(s.Endpoint(), s.Bucket, bad)
	rtest.OK(t, err)
	err = b.Delete(context.Background(), []string{keep})
	de, ok := errors.AsType[*DeleteError](err)
	if !ok || len(de.Failed) != 1 || de.Failed[0].Code != "BadDigest" {
		t.Fatalf("DeleteObjects with a wrong Content-MD5: %v, want the key refused with BadDigest", err)
	}
	rtest.Equal(t, "left after the refused delete", []string{keep}, listKeys(t, c, "st/", ListOptions{}))
}

// TestPutIfAbsentVersitygw: the second PUT of a key is answered 412 and
// leaves the first object; under skip-if-none-match-header it overwrites.
func TestPutIfAbsentVersitygw(t *testing.T) {
	s, c := versity(t, s3server.Options{}, Options{})
	ctx := context.Background()
	k := chunkKey(7)
	created, err := c.PutIfAbsent(ctx, k, []byte("first"))
	rtest.OK(t, err)
	rtest.Equal(t, "first PUT created", true, created)
	created, err = c.PutIfAbsent(ctx, k, []byte("second"))
	rtest.OK(t, err)
	rtest.Equal(t, "second PUT created", false, created)
	b, err := os.ReadFile(s.ObjectPath(k))
	rtest.OK(t, err)
	rtest.Equal(t, "object after the duplicate", "first", string(b))
	rtest.Equal(t, "requests", Requests{Put: 2}, c.Requests())

	ep := s.Endpoint()
	ep.Quirks = []string{"skip-if-none-match-header"}
	q, err := New(ep, s.Bucket, Options{TestOnlyPlainHTTP: true})
	rtest.OK(t, err)
	created, err = q.PutIfAbsent(ctx, k, []byte("third"))
	rtest.OK(t, err)
	rtest.Equal(t, "quirk PUT created", true, created)
	b, err = os.ReadFile(s.ObjectPath(k))
	rtest.OK(t, err)
	rtest.Equal(t, "object after the unconditional PUT", "third", string(b))
}

// TestDeleteViaDeleteObjectVersitygw: the quirk deletes with one DELETE
// per key.
func TestDeleteViaDeleteObjectVersitygw(t *testing.T) {
	s, c := versity(t, s3server.Options{}, Options{})
	keys := []string{chunkKey(1), chunkKey(2), chunkKey(3)}
	putAll(t, c, keys)
	ep := s.Endpoint()
	ep.Quirks = []string{"delete-objects-via-delete-object"}
	q, err := New(ep, s.Bucket, Options{TestOnlyPlainHTTP: true})
	rtest.OK(t, err)
	rtest.OK(t, q.Delete(context.Background(), keys))
	rtest.Equal(t, "requests", Requests{Delete: 3}, q.Requests())
	rtest.Equal(t, "left", 0, len(listKeys(t, c, "st/", ListOptions{})))
}

// TestFingerprintVersitygw pins the certificate of versitygw over TLS: the
// right fingerprint works, a wrong one fails at once with an error naming
// the endpoint, and without a fingerprint the unknown self-signed
// certificate is refused unless its CA is given.
func TestFingerprintVersitygw(t *testing.T) {
	s, c := versity(t, s3server.Options{TLS: true}, Options{})
	ctx := context.Background()
	_, err := c.ServerTime(ctx)
	rtest.OK(t, err)
	_, err = c.PutIfAbsent(ctx, chunkKey(1), []byte("over tls"))
	rtest.OK(t, err)

	ep := s.Endpoint()
	ep.Fingerprint = strings.Repeat("00:", 31) + "00"
	w, err := New(ep, s.Bucket, Options{MaxBackoff: time.Millisecond})
	rtest.OK(t, err)
	_, err = w.ServerTime(ctx)
	fe, ok := errors.AsType[*FingerprintError](err)
	if !ok {
		t.Fatalf("wrong fingerprint: %v, want a *FingerprintError", err)
	}
	rtest.Equal(t, "server's fingerprint", s.Fingerprint, fe.Got)
	if !strings.Contains(err.Error(), "versitygw (https://"+s.Addr) {
		t.Errorf("error %q does not name the endpoint %s", err, s.Addr)
	}
	rtest.Equal(t, "requests: one, not retried", Requests{Head: 1}, w.Requests())

	ep.Fingerprint = ""
	n, err := New(ep, s.Bucket, Options{MaxBackoff: time.Millisecond})
	rtest.OK(t, err)
	_, err = n.ServerTime(ctx)
	if !IsTLSError(err) {
		t.Fatalf("self-signed certificate without fingerprint: %v, want a TLS error", err)
	}
	rtest.Equal(t, "requests: one, not retried", Requests{Head: 1}, n.Requests())

	cert, err := x509.ParseCertificate(s.CertDER)
	rtest.OK(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	v, err := New(ep, s.Bucket, Options{RootCAs: pool})
	rtest.OK(t, err)
	_, err = v.ServerTime(ctx)
	rtest.OK(t, err)
}

// TestServerTimeVersitygw: the server runs on this machine, so its Date is
// this clock within a second or two.
func TestServerTimeVersitygw(t *testing.T) {
	_, c := versity(t, s3server.Options{}, Options{})
	clk, err := c.ServerTime(context.Background())
	rtest.OK(t, err)
	if skew := clk.Skew(); skew < -2*time.Second || skew > 2*time.Second {
		t.Errorf("skew %v against the local server (Date %v, sent %v)", skew, clk.Server, clk.Sent)
	}
	rtest.Equal(t, "requests", Requests{Head: 1}, c.Requests())
}

// TestServerDownVersitygw: with the server killed, a listing fails after
// MaxAttempts connection attempts with an error naming the endpoint; after
// a restart on the same directory everything is there.
func TestServerDownVersitygw(t *testing.T) {
	s, c := versity(t, s3server.Options{}, Options{})
	putAll(t, c, []string{chunkKey(1), chunkKey(2)})
	s.Kill()
	before := c.Requests()
	var err error
	for _, e := range c.List(context.Background(), "st/", ListOptions{}) {
		err = e
	}
	if err == nil || !strings.Contains(err.Error(), "versitygw (http://"+s.Addr) {
		t.Fatalf("listing a killed server: %v, want an error naming the endpoint", err)
	}
	rtest.Equal(t, "attempts", Requests{Get: 3}, diff(c.Requests(), before))
	s.Restart()
	rtest.Equal(t, "after restart", 2, len(listKeys(t, c, "st/", ListOptions{})))
}

// TestVirtualHostVersitygw addresses the bucket by host name, as an
// endpoint "{{bucket}}.s3.test" without path-style does: versitygw serves
// <bucket>.s3.test (--virtual-domain), the dialer sends every host to it.
func TestVirtualHostVersitygw(t *testing.T) {
	s := s3server.Start(t, s3server.Options{VirtualDomain: "s3.test"})
	ep := s.Endpoint()
	ep.Endpoint, ep.PathStyle = "{{bucket}}.s3.test", false
	var dialed []string
	var mu sync.Mutex
	c, err := New(ep, s.Bucket, Options{TestOnlyPlainHTTP: true, dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, addr)
		mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, network, s.Addr)
	}})
	rtest.OK(t, err)
	ctx := context.Background()
	k := chunkKey(1)
	created, err := c.PutIfAbsent(ctx, k, []byte("vhost"))
	rtest.OK(t, err)
	rtest.Equal(t, "created", true, created)
	b, err := os.ReadFile(s.ObjectPath(k))
	rtest.OK(t, err)
	rtest.Equal(t, "object file in the bucket", "vhost", string(b))
	rtest.Equal(t, "listed", []string{k}, listKeys(t, c, "st/", ListOptions{}))
	rtest.OK(t, c.Delete(ctx, []string{k}))
	rtest.Equal(t, "left", 0, len(listKeys(t, c, "st/", ListOptions{})))
	_, port, _ := net.SplitHostPort(s.Addr)
	mu.Lock()
	defer mu.Unlock()
	rtest.Equal(t, "dialed", s.Bucket+".s3.test:"+port, dialed[0])
}

// TestPutVersitygw: Put creates an object and replaces it, one PUT each,
// where PutIfAbsent would keep the first; a key with the ':' of a snapshot
// time (sent as %3A) is signed as S3 wants it, escaped once, and stored
// and read back under its name, over HTTP and TLS.
func TestPutVersitygw(t *testing.T) {
	for _, tls := range []bool{false, true} {
		s, c := versity(t, s3server.Options{TLS: tls}, Options{})
		k := ContentKey("st", "ns/a/vm/100/2025-07-14T14:20:02Z/index.json.blob")
		rtest.OK(t, c.Put(context.Background(), k, []byte("manifest")))
		b, err := c.Get(context.Background(), k)
		rtest.OK(t, err)
		rtest.Equal(t, "object read back", "manifest", string(b))
		b, err = os.ReadFile(s.ObjectPath(k))
		rtest.OK(t, err)
		rtest.Equal(t, "object file", "manifest", string(b))
		created, err := c.PutIfAbsent(context.Background(), k, []byte("other"))
		rtest.OK(t, err)
		rtest.Equal(t, "PutIfAbsent over it created", false, created)
	}
	s, c := versity(t, s3server.Options{}, Options{})
	ctx := context.Background()
	k := InUseKey("st")
	rtest.OK(t, c.Put(ctx, k, []byte("first")))
	rtest.OK(t, c.Put(ctx, k, []byte("second")))
	b, err := os.ReadFile(s.ObjectPath(k))
	rtest.OK(t, err)
	rtest.Equal(t, "object after the second Put", "second", string(b))
	rtest.Equal(t, "requests", Requests{Put: 2}, c.Requests())
}
