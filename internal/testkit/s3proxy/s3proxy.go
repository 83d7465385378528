// Package s3proxy is test support: a fault-injecting HTTP reverse proxy on
// 127.0.0.1 in front of an S3 server (the tests' versitygw), so that a test
// can make the network and the server misbehave in the ways an S3 client
// must survive — a response lost after the server acted, 503 SlowDown,
// latency, a truncated listing, a connection reset mid-body, a request
// held while the server is killed — and count what the client sent, by
// method and by operation. Never linked into the binary.
package s3proxy

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Op names an S3 operation as the proxy sees it.
type Op string

// The operations a GC sends.
const (
	OpList   Op = "LIST"   // GET /bucket?list-type=2
	OpGet    Op = "GET"    // GET of an object
	OpHead   Op = "HEAD"   // HEAD of the bucket or an object
	OpPut    Op = "PUT"    // PUT of an object
	OpDelete Op = "DELETE" // DELETE of an object
	OpBatch  Op = "POST"   // POST /bucket?delete: DeleteObjects
	OpOther  Op = "OTHER"
)

// OpOf classifies a request.
func OpOf(r *http.Request) Op {
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet:
		if q.Has("list-type") {
			return OpList
		}
		return OpGet
	case http.MethodHead:
		return OpHead
	case http.MethodPut:
		return OpPut
	case http.MethodDelete:
		return OpDelete
	case http.MethodPost:
		if q.Has("delete") {
			return OpBatch
		}
	}
	return OpOther
}

// Fault is what the proxy does with one request; the zero value forwards
// it untouched.
type Fault struct {
	// Delay waits this long before forwarding.
	Delay time.Duration
	// Hold, when not nil, waits until it is closed before forwarding (the
	// test kills or restarts the server meanwhile). Held reports the
	// request's arrival, when not nil.
	Hold, Held chan struct{}
	// SlowDown answers 503 SlowDown without forwarding.
	SlowDown bool
	// DropResponse forwards the request, then closes the client's
	// connection without an answer: the server acted, the client never
	// hears of it.
	DropResponse bool
	// TruncateBody forwards, then sends the status, the headers (with
	// the full Content-Length) and only the first TruncateBody bytes of
	// the body before closing the connection.
	TruncateBody int
	// ResetBody is TruncateBody with a TCP reset instead of a close.
	ResetBody bool
}

// Rule picks the fault of the n-th request (from 0) of its operation.
type Rule func(op Op, n int, r *http.Request) Fault

// Proxy is a running proxy.
type Proxy struct {
	Addr string // 127.0.0.1:PORT

	upstream *url.URL
	tr       *http.Transport
	srv      *http.Server

	mu     sync.Mutex
	rule   Rule
	counts map[Op]int
	faults int
}

// Start starts a proxy to upstream ("http://127.0.0.1:PORT") and stops it
// when the test ends.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p, err := Listen(upstream, ListenOptions{})
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// ListenOptions configure [Listen].
type ListenOptions struct {
	// TLS, when set, makes the proxy speak HTTPS with this certificate.
	TLS *tls.Certificate
	// UpstreamTLS is the client TLS config for an https:// upstream.
	UpstreamTLS *tls.Config
}

// Listen starts a proxy to upstream (http:// or https://) on a free
// 127.0.0.1 port outside a test, for the benchmarks in bench/; Close stops
// it.
func Listen(upstream string, o ListenOptions) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("s3proxy: upstream %q: %w", upstream, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("s3proxy: listen: %w", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), upstream: u, counts: map[Op]int{},
		tr: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 16, TLSClientConfig: o.UpstreamTLS}}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 30 * time.Second}
	if o.TLS != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*o.TLS}})
	}
	go p.srv.Serve(ln)
	return p, nil
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	p.tr.CloseIdleConnections()
	return err
}

// SetRule replaces the rule (nil: forward everything) and resets the
// per-operation request numbers the rule sees.
func (p *Proxy) SetRule(r Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rule = r
	p.counts = map[Op]int{}
}

// Counts returns the requests seen per operation since the last SetRule.
func (p *Proxy) Counts() map[Op]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(map[Op]int, len(p.counts))
	for k, v := range p.counts {
		c[k] = v
	}
	return c
}

// Faults returns how many requests got a fault other than the zero one.
func (p *Proxy) Faults() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	op := OpOf(r)
	p.mu.Lock()
	n := p.counts[op]
	p.counts[op]++
	var f Fault
	if p.rule != nil {
		f = p.rule(op, n, r)
	}
	if f != (Fault{}) {
		p.faults++
	}
	p.mu.Unlock()

	if f.Held != nil {
		close(f.Held)
	}
	if f.Hold != nil {
		<-f.Hold
	}
	if f.Delay > 0 {
		time.Sleep(f.Delay)
	}
	if f.SlowDown {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		p.abort(w, false)
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream.Scheme+"://"+p.upstream.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, vs := range r.Header {
		out.Header[k] = vs
	}
	out.Host = r.Host // the signature covers it
	out.ContentLength = int64(len(body))
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		// The server is gone (killed): as a dead server would, drop the
		// connection.
		p.abort(w, false)
		return
	}
	defer resp.Body.Close()
	if f.DropResponse {
		io.Copy(io.Discard, resp.Body)
		p.abort(w, false)
		return
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	if f.TruncateBody > 0 || f.ResetBody {
		b, _ := io.ReadAll(resp.Body)
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.WriteHeader(resp.StatusCode)
		w.Write(b[:min(f.TruncateBody, len(b))])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		p.abort(w, f.ResetBody)
		return
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// abort closes the client's connection, with a TCP reset when reset.
func (p *Proxy) abort(w http.ResponseWriter, reset bool) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("s3proxy: response writer cannot be hijacked")
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok && reset {
		tc.SetLinger(0)
	}
	conn.Close()
}

// Every returns a rule that applies f to the requests of the operations ops
// (all when empty) whose number in their operation satisfies pick.
func Every(pick func(n int) bool, f Fault, ops ...Op) Rule {
	return func(op Op, n int, r *http.Request) Fault {
		if len(ops) > 0 && !contains(ops, op) {
			return Fault{}
		}
		if pick(n) {
			return f
		}
		return Fault{}
	}
}

func contains(ops []Op, op Op) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}

// String describes counts for messages: "LIST=3 POST=1".
func String(counts map[Op]int) string {
	var b strings.Builder
	for _, op := range []Op{OpHead, OpGet, OpList, OpPut, OpBatch, OpDelete, OpOther} {
		if n := counts[op]; n > 0 {
			fmt.Fprintf(&b, "%s=%d ", op, n)
		}
	}
	return strings.TrimSpace(b.String())
}
