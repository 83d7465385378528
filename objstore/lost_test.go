package objstore

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"testing"

	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/s3server"
)

// lossyProxy forwards to the server at addr; the first request with method
// drop is forwarded and answered by the server, but the client's
// connection is then reset (reset) or closed (not reset) instead of
// getting that answer.
func lossyProxy(t *testing.T, addr, drop string, reset bool) string {
	t.Helper()
	target := &url.URL{Scheme: "http", Host: addr}
	rp := httputil.NewSingleHostReverseProxy(target)
	var dropped atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != drop || !dropped.CompareAndSwap(false, true) {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r) // the server did it…
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0) // …the client hears a reset
		}
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestLostPutResponse: the first PUT's answer is lost (the connection is
// reset, or closed) after versitygw stored the object. The PUT is retried,
// and the retry's 412 means "it is there": PutIfAbsent reports a
// duplicate, not an error, and the object is the one uploaded.
func TestLostPutResponse(t *testing.T) {
	for _, reset := range []bool{true, false} {
		name := map[bool]string{true: "reset", false: "closed"}[reset]
		t.Run(name, func(t *testing.T) {
			s := s3server.Start(t, s3server.Options{})
			ep := s.Endpoint()
			host, port, err := net.SplitHostPort(lossyProxy(t, s.Addr, http.MethodPut, reset))
			rtest.OK(t, err)
			ep.Endpoint = host
			ep.Port = atoiT(t, port)
			c, err := New(ep, s.Bucket, Options{TestOnlyPlainHTTP: true})
			rtest.OK(t, err)
			k := chunkKey(1)
			created, err := c.PutIfAbsent(context.Background(), k, []byte("lost answer"))
			rtest.OK(t, err)
			rtest.Equal(t, "created (the retry got 412)", false, created)
			rtest.Equal(t, "PUTs", int64(2), c.Requests().Put)
			b, err := os.ReadFile(s.ObjectPath(k))
			rtest.OK(t, err)
			rtest.Equal(t, "object", "lost answer", string(b))
		})
	}
}

func atoiT(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	rtest.OK(t, err)
	return n
}

// TestLostDeleteResponse: the answer to a DeleteObjects that versitygw
// carried out is lost; the retry finds the keys gone, which the server
// confirms as deleted, so Delete succeeds and the objects are gone.
func TestLostDeleteResponse(t *testing.T) {
	s := s3server.Start(t, s3server.Options{})
	direct, err := New(s.Endpoint(), s.Bucket, Options{TestOnlyPlainHTTP: true})
	rtest.OK(t, err)
	keys := []string{chunkKey(1), chunkKey(2), chunkKey(3)}
	putAll(t, direct, keys)
	ep := s.Endpoint()
	host, port, err := net.SplitHostPort(lossyProxy(t, s.Addr, http.MethodPost, true))
	rtest.OK(t, err)
	ep.Endpoint, ep.Port = host, atoiT(t, port)
	c, err := New(ep, s.Bucket, Options{TestOnlyPlainHTTP: true})
	rtest.OK(t, err)
	rtest.OK(t, c.Delete(context.Background(), keys))
	rtest.Equal(t, "POSTs", int64(2), c.Requests().Post)
	rtest.Equal(t, "left", 0, len(listKeys(t, direct, "st/", ListOptions{})))
}
