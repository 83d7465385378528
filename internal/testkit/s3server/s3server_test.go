package s3server

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"chunkgc/internal/testkit/rtest"
)

// TestStartKillRestart: the server answers on 127.0.0.1, an object is the
// file DIR/<bucket>/<key> and Age sets its LastModified; after kill -9 and a
// restart on the same directory the bucket and the object are still there.
func TestStartKillRestart(t *testing.T) {
	s := Start(t, Options{})
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Fatalf("listens on %s, want 127.0.0.1", s.Addr)
	}
	ctx := context.Background()
	key := "st/.chunks/abcd/" + strings.Repeat("ab", 32)
	_, err := s.admin().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key), Body: bytes.NewReader([]byte("data"))})
	rtest.OK(t, err)
	b, err := os.ReadFile(s.ObjectPath(key))
	rtest.OK(t, err)
	rtest.Equal(t, "object file", "data", string(b))

	old := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Age(key, old)
	head, err := s.admin().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)})
	rtest.OK(t, err)
	rtest.Equal(t, "LastModified after Age", old, head.LastModified.UTC())

	s.Kill()
	if _, err := s.admin().ListBuckets(ctx, &s3.ListBucketsInput{}); err == nil {
		t.Fatal("killed server still answers")
	}
	s.Restart()
	head, err = s.admin().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(key)})
	rtest.OK(t, err)
	rtest.Equal(t, "LastModified after restart", old, head.LastModified.UTC())
}

func TestTLS(t *testing.T) {
	s := Start(t, Options{TLS: true, Bucket: "tls-bucket"})
	rtest.Equal(t, "fingerprint length", 95, len(s.Fingerprint))
	ep := s.Endpoint()
	rtest.Equal(t, "endpoint fingerprint", s.Fingerprint, ep.Fingerprint)
	_, err := s.admin().HeadBucket(context.Background(), &s3.HeadBucketInput{Bucket: aws.String("tls-bucket")})
	rtest.OK(t, err)
}
