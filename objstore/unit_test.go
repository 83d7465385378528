package objstore

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"chunkgc/config"
	"chunkgc/internal/testkit/rtest"
)

// These tests run against a scripted HTTP server in the test process: they
// check what the client sends and how it reads answers no real server
// gives on demand (refused keys, 503s, an unsorted listing). The behaviour
// against a real S3 server is in versitygw_test.go.

// seen is one request as the scripted server received it.
type seen struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   []byte
}

// script serves each request with fn and records it.
type script struct {
	mu   sync.Mutex
	reqs []seen
	fn   func(w http.ResponseWriter, r *http.Request, body []byte)
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.reqs = append(s.reqs, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
	s.mu.Unlock()
	s.fn(w, r, body)
}

func (s *script) requests() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]seen(nil), s.reqs...)
}

// endpointFor is an s3.cfg endpoint for the test server at rawURL.
func endpointFor(t *testing.T, rawURL string) config.S3Endpoint {
	t.Helper()
	u, err := url.Parse(rawURL)
	rtest.OK(t, err)
	port, err := strconv.Atoi(u.Port())
	rtest.OK(t, err)
	return config.S3Endpoint{ID: "scripted", Endpoint: u.Hostname(), Port: port, Region: config.DefaultS3Region,
		AccessKey: "ak", SecretKey: "sk", PathStyle: true}
}

func startScript(t *testing.T, fn func(w http.ResponseWriter, r *http.Request, body []byte)) (*script, config.S3Endpoint) {
	t.Helper()
	s := &script{fn: fn}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, endpointFor(t, srv.URL)
}

func newPlain(t *testing.T, ep config.S3Endpoint, o Options) *Client {
	t.Helper()
	o.TestOnlyPlainHTTP = true
	if o.MaxBackoff == 0 {
		o.MaxBackoff = time.Millisecond
	}
	c, err := New(ep, "bucket1", o)
	rtest.OK(t, err)
	return c
}

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>scripted %s</Message></Error>`, code, code)
}

type deleteReq struct {
	Objects []struct{ Key string } `xml:"Object"`
	Quiet   bool
}

// answerDelete answers the DeleteObjects request body with one entry per
// key as entry gives it ("" leaves the key out).
func answerDelete(w http.ResponseWriter, body []byte, entry func(key string) string) {
	var d deleteReq
	if err := xml.Unmarshal(body, &d); err != nil {
		s3Error(w, 400, "MalformedXML")
		return
	}
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`)
	for _, o := range d.Objects {
		b.WriteString(entry(o.Key))
	}
	b.WriteString("</DeleteResult>")
	io.WriteString(w, b.String())
}

func TestDeleteObjectsRequest(t *testing.T) {
	s, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		answerDelete(w, body, func(key string) string {
			switch {
			case strings.HasSuffix(key, "refused"):
				return fmt.Sprintf("<Error><Key>%s</Key><Code>AccessDenied</Code><Message>no</Message></Error>", key)
			case strings.HasSuffix(key, "silent"):
				return ""
			}
			return fmt.Sprintf("<Deleted><Key>%s</Key></Deleted>", key)
		})
	})
	c := newPlain(t, ep, Options{})
	var keys []string
	for i := range 250 {
		keys = append(keys, fmt.Sprintf("st/.chunks/0000/%064x", i))
	}
	rtest.OK(t, c.Delete(context.Background(), keys))
	reqs := s.requests()
	rtest.Equal(t, "DeleteObjects requests for 250 keys", 3, len(reqs))
	for i, r := range reqs {
		rtest.Equal(t, "method", http.MethodPost, r.Method)
		rtest.Equal(t, "path", "/bucket1", r.Path)
		rtest.Equal(t, "query", "delete=", r.RawQuery)
		sum := md5.Sum(r.Body)
		rtest.Equal(t, "Content-MD5", base64.StdEncoding.EncodeToString(sum[:]), r.Header.Get("Content-MD5"))
		for h := range r.Header {
			if l := strings.ToLower(h); strings.HasPrefix(l, "x-amz-checksum-") || l == "x-amz-sdk-checksum-algorithm" {
				t.Errorf("request %d has flexible checksum header %s", i, h)
			}
		}
		var d deleteReq
		rtest.OK(t, xml.Unmarshal(r.Body, &d))
		rtest.Equal(t, "batch size", min(100, 250-100*i), len(d.Objects))
		rtest.Equal(t, "quiet", false, d.Quiet)
	}
	rtest.Equal(t, "POST counted", int64(3), c.Requests().Post)

	// A refused key, a key the answer does not mention, and the batch
	// after them.
	batch := append(append([]string(nil), keys[:98]...), "st/.chunks/0000/x-refused", "st/.chunks/0000/y-silent")
	err := c.Delete(context.Background(), append(batch, keys[98:130]...))
	de, ok := errors.AsType[*DeleteError](err)
	if !ok {
		t.Fatalf("Delete = %v, want a *DeleteError", err)
	}
	rtest.Equal(t, "failed", []KeyError{{Key: "st/.chunks/0000/x-refused", Code: "AccessDenied", Message: "no"}}, de.Failed)
	rtest.Equal(t, "unknown", []string{"st/.chunks/0000/y-silent"}, de.Unknown)
	rtest.Equal(t, "not attempted", 32, len(de.NotAttempted))
	rtest.Contains(t, "error", err.Error(), "x-refused (AccessDenied: no)", "y-silent", "32 keys not attempted", "scripted (http://127.0.0.1:")
}

func TestDeleteRequestFailure(t *testing.T) {
	status := 403
	_, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		s3Error(w, status, map[int]string{403: "AccessDenied", 503: "SlowDown"}[status])
	})
	c := newPlain(t, ep, Options{})
	keys := []string{"a/1", "a/2"}
	de, ok := errors.AsType[*DeleteError](c.Delete(context.Background(), keys))
	if !ok || len(de.Failed) != 2 || len(de.Unknown) != 0 || de.Failed[0].Code != "AccessDenied" {
		t.Fatalf("403: got %+v, want both keys refused", de)
	}
	status = 503
	de, ok = errors.AsType[*DeleteError](c.Delete(context.Background(), keys))
	if !ok || len(de.Failed) != 0 || len(de.Unknown) != 2 {
		t.Fatalf("503: got %+v, want both keys unknown", de)
	}
	rtest.Equal(t, "POSTs: 1 for the 403, 3 attempts for the 503", int64(4), c.Requests().Post)
}

func TestDeleteViaDeleteObjectQuirk(t *testing.T) {
	s, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.HasSuffix(r.URL.Path, "refused") {
			s3Error(w, 403, "AccessDenied")
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ep.Quirks = []string{config.QuirkDeleteViaDeleteObject}
	c := newPlain(t, ep, Options{})
	rtest.OK(t, c.Delete(context.Background(), []string{"st/a", "st/b", "st/c"}))
	var got []string
	for _, r := range s.requests() {
		got = append(got, r.Method+" "+r.Path)
	}
	rtest.Equal(t, "requests", []string{"DELETE /bucket1/st/a", "DELETE /bucket1/st/b", "DELETE /bucket1/st/c"}, got)
	de, ok := errors.AsType[*DeleteError](c.Delete(context.Background(), []string{"st/d", "st/refused", "st/e"}))
	if !ok || len(de.Failed) != 1 || de.Failed[0].Key != "st/refused" || len(de.NotAttempted) != 1 || de.NotAttempted[0] != "st/e" {
		t.Fatalf("got %+v, want st/refused refused and st/e not attempted", de)
	}
	rtest.Equal(t, "DELETEs counted", int64(5), c.Requests().Delete)
}

func TestPutIfAbsentRequest(t *testing.T) {
	exists := map[string]bool{}
	var mu sync.Mutex
	s, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("If-None-Match") == "*" && exists[r.URL.Path] {
			s3Error(w, 412, "PreconditionFailed")
			return
		}
		exists[r.URL.Path] = true
		w.Header().Set("ETag", `"e"`)
	})
	c := newPlain(t, ep, Options{})
	data := []byte("chunk data")
	created, err := c.PutIfAbsent(context.Background(), "st/.chunks/abcd/k1", data)
	rtest.OK(t, err)
	rtest.Equal(t, "first PUT created", true, created)
	created, err = c.PutIfAbsent(context.Background(), "st/.chunks/abcd/k1", data)
	rtest.OK(t, err)
	rtest.Equal(t, "second PUT (412) created", false, created)
	r := s.requests()[0]
	rtest.Equal(t, "path", "/bucket1/st/.chunks/abcd/k1", r.Path)
	rtest.Equal(t, "If-None-Match", "*", r.Header.Get("If-None-Match"))
	sum := md5.Sum(data)
	rtest.Equal(t, "Content-MD5", base64.StdEncoding.EncodeToString(sum[:]), r.Header.Get("Content-MD5"))
	rtest.Equal(t, "body", string(data), string(r.Body))

	ep.Quirks = []string{config.QuirkSkipIfNoneMatch}
	q := newPlain(t, ep, Options{})
	created, err = q.PutIfAbsent(context.Background(), "st/.chunks/abcd/k1", data)
	rtest.OK(t, err)
	rtest.Equal(t, "quirk PUT created", true, created)
	reqs := s.requests()
	if h, ok := reqs[len(reqs)-1].Header["If-None-Match"]; ok {
		t.Errorf("quirk skip-if-none-match-header: PUT sent If-None-Match %q", h)
	}
	rtest.Equal(t, "PUTs counted", Requests{Put: 2}, c.Requests())
}

func TestPutConflictRetried(t *testing.T) {
	n := 0
	_, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		n++
		if n < 3 {
			s3Error(w, 409, "ConditionalRequestConflict")
		}
	})
	c := newPlain(t, ep, Options{})
	created, err := c.PutIfAbsent(context.Background(), "k", []byte("x"))
	rtest.OK(t, err)
	rtest.Equal(t, "created after two 409s", true, created)
	rtest.Equal(t, "PUTs", int64(3), c.Requests().Put)
}

// TestRetryBounded: 503 is retried up to MaxAttempts, each retry logged
// with the operation; no retry quota stops it early.
func TestRetryBounded(t *testing.T) {
	fails := 2
	_, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if fails > 0 {
			fails--
			s3Error(w, 503, "SlowDown")
			return
		}
		w.Header().Set("Content-Length", "3")
		w.Header().Set("Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT")
	})
	core, logs := observer.New(zap.WarnLevel)
	c := newPlain(t, ep, Options{Log: zap.New(core)})
	ob, err := c.Head(context.Background(), "st/k")
	rtest.OK(t, err)
	rtest.Equal(t, "size", int64(3), ob.Size)
	rtest.Equal(t, "HEADs: two 503s and the answer", int64(3), c.Requests().Head)
	retries := logs.FilterMessage("s3 request retried").All()
	rtest.Equal(t, "retry warnings", 2, len(retries))
	rtest.Equal(t, "op", "HeadObject", retries[0].ContextMap()["op"])

	// Always 503: exactly MaxAttempts requests per call, for many calls in
	// a row (the SDK's default retry quota would start refusing retries).
	fails = 1 << 30
	before := c.Requests().Head
	for range 30 {
		if _, err := c.Head(context.Background(), "st/k"); statusCode(err) != 503 {
			t.Fatalf("Head = %v, want the 503", err)
		}
	}
	rtest.Equal(t, "HEADs for 30 calls of 3 attempts", int64(90), c.Requests().Head-before)
}

func TestListPagingScripted(t *testing.T) {
	keys := []string{"st/.chunks/0000/a", "st/.chunks/0000/b", "st/.chunks/0001/c", "st/.chunks/0002/d", "st/.chunks/0003/e"}
	unsorted := false
	_, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		q := r.URL.Query()
		start := 0
		if tok := q.Get("continuation-token"); tok != "" {
			start, _ = strconv.Atoi(tok)
		} else if sa := q.Get("start-after"); sa != "" {
			for start < len(keys) && keys[start] <= sa {
				start++
			}
		}
		end := min(start+2, len(keys))
		var b strings.Builder
		fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket1</Name><IsTruncated>%v</IsTruncated>`, end < len(keys))
		if end < len(keys) {
			fmt.Fprintf(&b, "<NextContinuationToken>%d</NextContinuationToken>", end)
		}
		page := keys[start:end]
		if unsorted && start == 2 {
			page = []string{keys[3], keys[2]}
		}
		for _, k := range page {
			fmt.Fprintf(&b, `<Contents><Key>%s</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>"e"</ETag><Size>7</Size></Contents>`, k)
		}
		b.WriteString("</ListBucketResult>")
		io.WriteString(w, b.String())
	})
	c := newPlain(t, ep, Options{ListPageSize: 2})
	list := func(o ListOptions) ([]string, error) {
		var got []string
		for ob, err := range c.List(context.Background(), "st/.chunks/", o) {
			if err != nil {
				return got, err
			}
			rtest.Equal(t, "LastModified", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), ob.LastModified)
			got = append(got, ob.Key)
		}
		return got, nil
	}
	got, err := list(ListOptions{})
	rtest.OK(t, err)
	rtest.Equal(t, "all keys", keys, got)
	rtest.Equal(t, "pages", int64(3), c.Requests().Get)

	got, err = list(ListOptions{StartAfter: "st/.chunks/0000/b", Before: "st/.chunks/0002"})
	rtest.OK(t, err)
	rtest.Equal(t, "range", []string{"st/.chunks/0001/c"}, got)
	rtest.Equal(t, "pages of the range: one", int64(4), c.Requests().Get)

	unsorted = true
	_, err = list(ListOptions{})
	if err == nil || !strings.Contains(err.Error(), "out of order") || !strings.Contains(err.Error(), keys[2]) {
		t.Fatalf("unsorted listing: %v, want an error naming %s", err, keys[2])
	}
}

func TestServerTimeScripted(t *testing.T) {
	date := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	_, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Date", date.Format(http.TimeFormat))
	})
	c := newPlain(t, ep, Options{})
	clk, err := c.ServerTime(context.Background())
	rtest.OK(t, err)
	rtest.Equal(t, "server time", date, clk.Server.UTC())
	if skew := clk.Skew(); skew > -time.Since(date)+time.Second || skew < -time.Since(date)-time.Minute {
		t.Errorf("Skew %v, want about %v", skew, -time.Since(date))
	}
}

func TestNotFound(t *testing.T) {
	_, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		s3Error(w, 404, "NoSuchKey")
	})
	c := newPlain(t, ep, Options{})
	_, err := c.Head(context.Background(), "st/missing")
	rtest.ErrorIs(t, err, ErrNotFound)
	_, err = c.Get(context.Background(), "st/missing")
	rtest.ErrorIs(t, err, ErrNotFound)
	if !strings.Contains(err.Error(), "st/missing") {
		t.Errorf("error %q does not name the key", err)
	}
}

// TestVirtualHostURL: without path-style the bucket is not in the path,
// and an endpoint template puts it in the host.
func TestVirtualHostURL(t *testing.T) {
	for _, tt := range []struct {
		name      string
		ep        config.S3Endpoint
		wantHost  string
		wantPath  string
		plainHTTP bool
	}{
		{"path-style", config.S3Endpoint{Endpoint: "s3.example.com", PathStyle: true}, "s3.example.com", "/bk1", false},
		{"vhost template", config.S3Endpoint{Endpoint: "{{bucket}}.s3.{{region}}.example.com", Region: "eu-1", Port: 8443}, "bk1.s3.eu-1.example.com:8443", "", false},
		{"vhost plain", config.S3Endpoint{Endpoint: "127.0.0.1", Port: 7070}, "127.0.0.1:7070", "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.ep.ID, tt.ep.AccessKey, tt.ep.SecretKey = "ep1", "a", "s"
			c, err := New(tt.ep, "bk1", Options{TestOnlyPlainHTTP: tt.plainHTTP})
			rtest.OK(t, err)
			e, err := c.api.Options().EndpointResolverV2.ResolveEndpoint(context.Background(), s3.EndpointParameters{})
			rtest.OK(t, err)
			scheme := "https"
			if tt.plainHTTP {
				scheme = "http"
			}
			rtest.Equal(t, "URL", scheme+"://"+tt.wantHost+tt.wantPath, e.URI.String())
		})
	}
}

// TestAnsweredRequestsNotRetried sends many requests with a body to a
// server that answers each at once: none may be sent twice. A request body
// whose WriteTo returns io.EOF after the SDK closed it made the transport
// close the connection under the answer now and then (about one request
// in 150 here), and the SDK sent the request again.
func TestAnsweredRequestsNotRetried(t *testing.T) {
	s, ep := startScript(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Method == http.MethodPut {
			return
		}
		answerDelete(w, body, func(key string) string { return fmt.Sprintf("<Deleted><Key>%s</Key></Deleted>", key) })
	})
	core, logs := observer.New(zap.WarnLevel)
	c := newPlain(t, ep, Options{Log: zap.New(core)})
	const rounds = 300
	data := make([]byte, 8<<10)
	keys := make([]string, MaxDeleteBatch)
	for i := range keys {
		keys[i] = fmt.Sprintf("st/.chunks/0000/%064x", i)
	}
	for i := range rounds {
		rtest.OK(t, c.Put(context.Background(), fmt.Sprintf("st/.cnt/k%d", i), data))
		rtest.OK(t, c.Delete(context.Background(), keys))
	}
	for _, e := range logs.FilterMessage("s3 request retried").All() {
		t.Errorf("retried: %v", e.ContextMap())
	}
	rtest.Equal(t, "requests", 2*rounds, len(s.requests()))
}
