package objstore

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyauth "github.com/aws/smithy-go/auth"
	smithyendpoints "github.com/aws/smithy-go/endpoints"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.uber.org/zap"

	"chunkgc/config"
)

// Options tune a [Client]. The zero value is the production setting.
type Options struct {
	// Log receives the retry warnings; nil logs nothing.
	Log *zap.Logger
	// MaxAttempts bounds the attempts of one request, the first included
	// (default 3, as PBS).
	MaxAttempts int
	// MaxBackoff bounds the jittered exponential wait between attempts
	// (default 3 s: PBS waits 1 s, then 3 s).
	MaxBackoff time.Duration
	// ListPageSize is the max-keys of a ListObjectsV2 request; 0 sends
	// none, so the server's default applies (1,000 on AWS), as in PBS.
	ListPageSize int32
	// RootCAs verifies the server's certificate when the endpoint has no
	// fingerprint; nil is the system's pool.
	RootCAs *x509.CertPool
	// TestOnlyPlainHTTP talks plain http:// instead of https://. PBS has
	// no such setting and chunkgc's command line never sets it: it exists
	// for tests against a local server (and a fault-injecting proxy) only.
	TestOnlyPlainHTTP bool

	// deleteOptions are added to every DeleteObjects call, after the
	// Content-MD5 middleware: tests corrupt the header with them.
	deleteOptions []func(*s3.Options)
	// dial, when set, replaces the dialer: tests send a virtual-host
	// request for <bucket>.<domain> to a local server without DNS.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Client is an S3 client for one bucket of one s3.cfg endpoint. It is safe
// for concurrent use.
type Client struct {
	api      *s3.Client
	bucket   string
	name     string // for errors and logs: "id (https://host:port, bucket b)"
	log      *zap.Logger
	pageSize int32
	// The provider quirks.
	skipIfNoneMatch bool
	deleteOneByOne  bool
	counts          counters
	deleteOptions   []func(*s3.Options)
}

// New returns a client for bucket at the endpoint ep (an s3-endpoint of
// PBS's s3.cfg, see [config.ReadS3]). Requests go to https://ep.Host(bucket)
// with the key as the path, or /bucket/key under path-style, as PBS sends
// them; they are signed with SigV4 for ep.Region. New makes no request.
func New(ep config.S3Endpoint, bucket string, o Options) (*Client, error) {
	if err := config.CheckBucketName(bucket); err != nil {
		return nil, fmt.Errorf("s3 endpoint %s: %w", ep, err)
	}
	if ep.Endpoint == "" || ep.AccessKey == "" || ep.SecretKey == "" {
		return nil, fmt.Errorf("s3 endpoint %s: needs an endpoint, an access key and a secret key", ep)
	}
	region := ep.Region
	if region == "" {
		region = config.DefaultS3Region
	}
	scheme := "https"
	if o.TestOnlyPlainHTTP {
		scheme = "http"
	}
	base := url.URL{Scheme: scheme, Host: ep.Host(bucket)}
	if ep.PathStyle {
		base.Path = "/" + bucket
	}
	c := &Client{
		bucket:          bucket,
		name:            fmt.Sprintf("%s (%s, bucket %s)", ep.ID, base.Scheme+"://"+base.Host, bucket),
		log:             o.Log,
		pageSize:        o.ListPageSize,
		skipIfNoneMatch: ep.HasQuirk(config.QuirkSkipIfNoneMatch),
		deleteOneByOne:  ep.HasQuirk(config.QuirkDeleteViaDeleteObject),
		deleteOptions:   o.deleteOptions,
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	c.log = c.log.With(zap.String("s3-endpoint", ep.ID), zap.String("bucket", bucket))
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 3 * time.Second
	}
	tlsConf, err := c.tlsConfig(ep, base.Hostname(), o.RootCAs)
	if err != nil {
		return nil, err
	}
	dial := (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if o.dial != nil {
		dial = o.dial
	}
	tr := &http.Transport{
		// No proxy from the environment: PBS talks to its endpoint
		// directly unless its own proxy setting says otherwise.
		Proxy:                 nil,
		DialContext:           dial,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	retryer := retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = o.MaxAttempts
		so.MaxBackoff = o.MaxBackoff
		// No client-side retry quota: under load the SDK's token bucket
		// turns a burst of 503s into "retry quota exceeded" failures.
		so.RateLimiter = ratelimit.None
		// A certificate or fingerprint failure does not heal by retrying.
		so.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(noRetryTLS)}, so.Retryables...)
	})
	c.api = s3.New(s3.Options{
		Region:                     region,
		Credentials:                staticCredentials{ep.AccessKey, ep.SecretKey},
		HTTPClient:                 &http.Client{Transport: tr},
		Retryer:                    retryer,
		UsePathStyle:               ep.PathStyle,
		EndpointResolverV2:         fixedEndpoint{base},
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		// Skipped response validation is the WhenRequired norm, not news.
		DisableLogOutputChecksumValidationSkipped: true,
		APIOptions: []func(*middleware.Stack) error{c.addAttemptMiddleware},
	})
	return c, nil
}

// String names the client's endpoint, URL and bucket, as errors do.
func (c *Client) String() string { return c.name }

// Bucket returns the client's bucket.
func (c *Client) Bucket() string { return c.bucket }

// staticCredentials are the s3.cfg keys.
type staticCredentials struct{ access, secret string }

func (s staticCredentials) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: s.access, SecretAccessKey: s.secret, Source: "s3.cfg"}, nil
}

// fixedEndpoint resolves every request to the URL PBS would use: the
// endpoint's host with its templates substituted, and /bucket under
// path-style. The SDK's own rules would prepend the bucket to the host a
// second time for an endpoint with {{bucket}} in it.
type fixedEndpoint struct{ base url.URL }

func (f fixedEndpoint) ResolveEndpoint(_ context.Context, p s3.EndpointParameters) (smithyendpoints.Endpoint, error) {
	// The SigV4 properties S3's own rules give: without them the signer
	// escapes the already escaped path again, and every key with a
	// character to escape (the ':' of every snapshot time in a .cnt/ key,
	// which goes as %3A) is refused as SignatureDoesNotMatch by S3.
	var sp smithy.Properties
	smithyhttp.SetDisableDoubleEncoding(&sp, true)
	smithyhttp.SetSigV4SigningName(&sp, "s3")
	smithyhttp.SetSigV4SigningRegion(&sp, aws.ToString(p.Region))
	var props smithy.Properties
	smithyauth.SetAuthOptions(&props, []*smithyauth.Option{{SchemeID: smithyauth.SchemeIDSigV4, SignerProperties: sp}})
	return smithyendpoints.Endpoint{URI: f.base, Properties: props}, nil
}

// FingerprintError is returned when the server's leaf certificate does not
// have the SHA-256 fingerprint s3.cfg pins. It is never retried.
type FingerprintError struct {
	Endpoint string // the client's name
	Want     string // from s3.cfg
	Got      string // the server's leaf certificate
}

func (e *FingerprintError) Error() string {
	return fmt.Sprintf("s3 endpoint %s: server certificate fingerprint %s, want %s (s3.cfg fingerprint)", e.Endpoint, e.Got, e.Want)
}

// Fingerprint returns the SHA-256 fingerprint of a DER certificate as
// s3.cfg writes it: lower-case hex pairs separated by ':'.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := hex.EncodeToString(sum[:])
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// tlsConfig returns the TLS settings for ep: without a fingerprint the
// certificate chain is verified against roots (nil: the system's) for
// host; with one, the leaf certificate must have that fingerprint and no
// CA is consulted (a self-signed certificate, as PBS's fingerprint setting
// is meant for).
func (c *Client) tlsConfig(ep config.S3Endpoint, host string, roots *x509.CertPool) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host, RootCAs: roots}
	if ep.Fingerprint == "" {
		return conf, nil
	}
	want := strings.ToLower(ep.Fingerprint)
	if len(want) != 32*3-1 {
		return nil, fmt.Errorf("s3 endpoint %s: fingerprint %q is not a SHA-256 fingerprint", c.name, ep.Fingerprint)
	}
	// The pin replaces the chain check: crypto/tls skips it, and
	// VerifyConnection checks the leaf.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &FingerprintError{Endpoint: c.name, Want: want, Got: "(no certificate)"}
		}
		if got := Fingerprint(cs.PeerCertificates[0].Raw); got != want {
			return &FingerprintError{Endpoint: c.name, Want: want, Got: got}
		}
		return nil
	}
	return conf, nil
}

// noRetryTLS marks certificate, fingerprint and TLS protocol errors as not
// retryable: the SDK would otherwise retry some of them as connection
// errors.
func noRetryTLS(err error) aws.Ternary {
	if IsTLSError(err) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

// IsTLSError reports whether err comes from checking the server's
// certificate (a fingerprint mismatch, an unknown authority, a wrong host
// name, an expired certificate) or from a TLS handshake with something that
// does not speak TLS.
func IsTLSError(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*FingerprintError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		return true
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return true
	}
	if _, ok := errors.AsType[tls.AlertError](err); ok {
		return true
	}
	// net/http turns the tls.RecordHeaderError of an HTTP answer into a
	// plain error.
	return strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// Requests counts the HTTP requests a client sent, by method, retries
// included.
type Requests struct {
	Get, Put, Post, Head, Delete, Other int64
}

// Total is the number of requests of every method.
func (r Requests) Total() int64 { return r.Get + r.Put + r.Post + r.Head + r.Delete + r.Other }

type counters struct {
	get, put, post, head, del, other atomic.Int64
}

func (n *counters) add(method string) {
	switch method {
	case http.MethodGet:
		n.get.Add(1)
	case http.MethodPut:
		n.put.Add(1)
	case http.MethodPost:
		n.post.Add(1)
	case http.MethodHead:
		n.head.Add(1)
	case http.MethodDelete:
		n.del.Add(1)
	default:
		n.other.Add(1)
	}
}

// Requests returns the number of requests sent so far, by method.
func (c *Client) Requests() Requests {
	return Requests{
		Get: c.counts.get.Load(), Put: c.counts.put.Load(), Post: c.counts.post.Load(),
		Head: c.counts.head.Load(), Delete: c.counts.del.Load(), Other: c.counts.other.Load(),
	}
}

// attempts is the state of one operation across its attempts.
type attempts struct {
	n    int
	last error
}

type attemptsKey struct{}

// addAttemptMiddleware adds to every operation: at Initialize, the attempt
// state; after the retry middleware (so once per attempt), the request
// counter and a warning for each retry.
func (c *Client) addAttemptMiddleware(stack *middleware.Stack) error {
	err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("chunkgcAttempts",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			return next.HandleInitialize(context.WithValue(ctx, attemptsKey{}, &attempts{}), in)
		}), middleware.Before)
	if err != nil {
		return err
	}
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("chunkgcCountRequest",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			if req, ok := in.Request.(*smithyhttp.Request); ok {
				c.counts.add(req.Method)
			}
			a, _ := ctx.Value(attemptsKey{}).(*attempts)
			if a != nil {
				a.n++
				if a.n > 1 {
					c.log.Warn("s3 request retried", zap.String("op", middleware.GetOperationName(ctx)),
						zap.Int("attempt", a.n), zap.NamedError("previous", a.last))
				}
			}
			out, md, err := next.HandleFinalize(ctx, in)
			if a != nil {
				a.last = err
			}
			return out, md, err
		}), "Retry", middleware.After)
}
