package objstore

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

// TestFingerprintScripted pins the certificate of an in-process TLS server:
// the right fingerprint connects, a wrong one fails once (not retried) with
// a *FingerprintError naming the endpoint; without a fingerprint the chain
// is checked against the CAs.
func TestFingerprintScripted(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	ep := endpointFor(t, srv.URL)
	fp := Fingerprint(srv.Certificate().Raw)

	ep.Fingerprint = fp
	c, err := New(ep, "bucket1", Options{})
	rtest.OK(t, err)
	_, err = c.ServerTime(context.Background())
	rtest.OK(t, err)

	ep.Fingerprint = strings.Repeat("ab:", 31) + "ab"
	c, err = New(ep, "bucket1", Options{})
	rtest.OK(t, err)
	_, err = c.ServerTime(context.Background())
	fe, ok := errors.AsType[*FingerprintError](err)
	if !ok {
		t.Fatalf("wrong fingerprint: %v, want a *FingerprintError", err)
	}
	rtest.Equal(t, "got", fp, fe.Got)
	if !strings.Contains(err.Error(), "scripted (https://127.0.0.1:") || !IsTLSError(err) {
		t.Errorf("error %q does not name the endpoint, or is not a TLS error", err)
	}
	rtest.Equal(t, "requests: one, not retried", int64(1), c.Requests().Head)

	// No fingerprint: the system's CAs do not know the test CA.
	ep.Fingerprint = ""
	c, err = New(ep, "bucket1", Options{})
	rtest.OK(t, err)
	_, err = c.ServerTime(context.Background())
	if !IsTLSError(err) {
		t.Fatalf("unknown CA: %v, want a TLS error", err)
	}
	rtest.Equal(t, "requests: one, not retried", int64(1), c.Requests().Head)

	// With the test CA as root the chain verifies (127.0.0.1 is in its SANs).
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c, err = New(ep, "bucket1", Options{RootCAs: pool})
	rtest.OK(t, err)
	_, err = c.ServerTime(context.Background())
	rtest.OK(t, err)

	// A plain HTTP server where TLS is expected.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(plain.Close)
	c, err = New(endpointFor(t, plain.URL), "bucket1", Options{})
	rtest.OK(t, err)
	_, err = c.ServerTime(context.Background())
	if !IsTLSError(err) {
		t.Fatalf("plain HTTP server: %v, want a TLS error", err)
	}
	rtest.Equal(t, "requests: one, not retried", int64(1), c.Requests().Head)
}
