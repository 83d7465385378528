package s3server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"chunkgc/config"
	"chunkgc/internal/testkit/rtest"
)

// Version is the versitygw release the tests run against.
const Version = "v1.8.0"

// GOBIN is where .ci/run installs versitygw.
const GOBIN = "/var/cache/chunkgc/gobin"

// Options configure [Start].
type Options struct {
	Bucket string // default "chunkgc-test"
	Region string // default config.DefaultS3Region
	TLS    bool   // HTTPS with a generated self-signed certificate
	// VirtualDomain, when set, is versitygw's --virtual-domain: a request
	// for host <bucket>.<VirtualDomain> addresses that bucket
	// (virtual-host style); requests to 127.0.0.1 stay path-style.
	VirtualDomain string
}

// Server is a running (or stopped) versitygw.
type Server struct {
	t         testing.TB
	bin       string
	Dir       string // the posix root; the bucket is Dir/<Bucket>
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
	Addr      string // 127.0.0.1:PORT
	TLS       bool
	// VirtualDomain is Options.VirtualDomain.
	VirtualDomain string
	// Fingerprint is the SHA-256 fingerprint of the TLS certificate as
	// s3.cfg writes it ("xx:xx:…"); empty without TLS.
	Fingerprint string
	// CertDER is the TLS certificate; nil without TLS.
	CertDER           []byte
	certFile, keyFile string
	logFile           string
	cmd               *exec.Cmd
	exited            chan struct{} // closed when cmd has been waited for
}

// Binary returns the versitygw binary: on PATH, else in [GOBIN]; "" when
// there is none.
func Binary() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	p := filepath.Join(GOBIN, "versitygw")
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p
	}
	return ""
}

// Start starts versitygw on a free 127.0.0.1 port over a new directory,
// creates the bucket, and stops the server when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		rtest.SkipOrFail(t, "versitygw not installed: bash .ci/run installs "+Version+" into "+GOBIN+
			" (GOBIN="+GOBIN+" go install github.com/versity/versitygw/cmd/versitygw@"+Version+")")
	}
	if o.Bucket == "" {
		o.Bucket = "chunkgc-test"
	}
	if o.Region == "" {
		o.Region = config.DefaultS3Region
	}
	tmp := t.TempDir()
	s := &Server{
		t: t, bin: bin, Dir: filepath.Join(tmp, "data"), Bucket: o.Bucket, Region: o.Region,
		AccessKey: "chunkgc-test-access", SecretKey: "chunkgc-test-secret-key",
		TLS: o.TLS, VirtualDomain: o.VirtualDomain, logFile: filepath.Join(tmp, "versitygw.log"),
	}
	rtest.OK(t, os.Mkdir(s.Dir, 0o755))
	if o.TLS {
		s.writeCert(tmp)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(s.logFile); err == nil && len(b) > 0 {
				t.Logf("versitygw log (%s):\n%s", s.logFile, tail(b, 4096))
			}
		}
	})
	var err error
	for range 3 { // a port taken between the probe and the start: take another
		s.Addr, err = freeAddr()
		rtest.OK(t, err)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		t.Fatalf("versitygw %s: create bucket %s: %v", s.Addr, s.Bucket, err)
	}
	return s
}

// Endpoint is the s3.cfg endpoint of the server: 127.0.0.1, its port and
// region, its keys, path-style, and with TLS the certificate's fingerprint.
func (s *Server) Endpoint() config.S3Endpoint {
	host, port, _ := net.SplitHostPort(s.Addr)
	p, _ := strconv.Atoi(port)
	return config.S3Endpoint{
		ID: "versitygw", Endpoint: host, Port: p, Region: s.Region,
		Fingerprint: s.Fingerprint, AccessKey: s.AccessKey, SecretKey: s.SecretKey, PathStyle: true,
	}
}

// ObjectPath is the file that holds the object key.
func (s *Server) ObjectPath(key string) string {
	return filepath.Join(s.Dir, s.Bucket, filepath.FromSlash(key))
}

// Age sets the LastModified of the object key (its file's mtime) to mtime.
func (s *Server) Age(key string, mtime time.Time) {
	s.t.Helper()
	rtest.OK(s.t, os.Chtimes(s.ObjectPath(key), time.Time{}, mtime))
}

// Kill stops the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop stops the server with SIGTERM (SIGKILL after 10 s) and waits for
// it; a stopped server is left alone.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Restart starts a stopped (or killed) server again on the same directory
// and port and waits until it answers; a running one is stopped first.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for range 50 { // the old socket may linger for a moment
		if err = s.start(); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("restart versitygw: %v", err)
	}
}

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Signal(sig)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	s.cmd = nil
}

// start runs versitygw on s.Addr and waits until it answers S3 requests.
func (s *Server) start() error {
	args := []string{"--port", s.Addr, "--quiet", "--region", s.Region}
	if s.TLS {
		args = append(args, "--cert", s.certFile, "--key", s.keyFile)
	}
	if s.VirtualDomain != "" {
		args = append(args, "--virtual-domain", s.VirtualDomain)
	}
	args = append(args, "posix", s.Dir)
	log, err := os.OpenFile(s.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "--- %s %s\n", s.bin, strings.Join(args, " "))
	cmd := exec.Command(s.bin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VGW_") && !strings.HasPrefix(kv, "ROOT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = s.Dir
	// The server dies with the test binary, even on a panic.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited

	api := s.admin()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := api.ListBuckets(ctx, &s3.ListBucketsInput{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			s.cmd = nil
			b, _ := os.ReadFile(s.logFile)
			return fmt.Errorf("versitygw on %s exited before answering: %s", s.Addr, tail(b, 2048))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.signal(syscall.SIGKILL)
			return fmt.Errorf("versitygw on %s: no answer within 20 s: %w", s.Addr, err)
		}
	}
}

// admin is a plain SDK client for the kit's own requests (readiness,
// bucket creation): no retries, no certificate check.
func (s *Server) admin() *s3.Client {
	scheme := "http"
	tr := &http.Transport{Proxy: nil}
	if s.TLS {
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	return s3.New(s3.Options{
		Region: s.Region,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: s.AccessKey, SecretAccessKey: s.SecretKey}, nil
		}),
		BaseEndpoint: aws.String(scheme + "://" + s.Addr),
		UsePathStyle: true,
		HTTPClient:   &http.Client{Transport: tr},
		Retryer:      aws.NopRetryer{},
	})
}

// writeCert writes a self-signed ECDSA certificate for 127.0.0.1 and its
// key into dir and records its fingerprint.
func (s *Server) writeCert(dir string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rtest.OK(s.t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "chunkgc test versitygw"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	rtest.OK(s.t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	rtest.OK(s.t, err)
	s.certFile, s.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	rtest.OK(s.t, os.WriteFile(s.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	rtest.OK(s.t, os.WriteFile(s.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	s.CertDER = der
	sum := sha256.Sum256(der)
	h := hex.EncodeToString(sum[:])
	var fp []string
	for i := 0; i < len(h); i += 2 {
		fp = append(fp, h[i:i+2])
	}
	s.Fingerprint = strings.Join(fp, ":")
}

// freeAddr returns a 127.0.0.1 address with a port nothing listens on.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func tail(b []byte, n int) []byte {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
