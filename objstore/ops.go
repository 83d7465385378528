package objstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ErrNotFound is matched (errors.Is) by the error of [Client.Head] and
// [Client.Get] when the server answers 404 for the key.
var ErrNotFound = errors.New("object not found")

// Object is a listed or HEADed object.
type Object struct {
	Key          string
	Size         int64
	LastModified time.Time // in the server's clock; zero when the server sent none
	ETag         string
}

// statusCode returns the HTTP status of the response err comes from, or 0
// when there was none (a transport error, a cancel).
func statusCode(err error) int {
	if re, ok := errors.AsType[*smithyhttp.ResponseError](err); ok {
		return re.HTTPStatusCode()
	}
	return 0
}

// errorCode returns the S3 error code of err ("AccessDenied", …), or "".
func errorCode(err error) string {
	if ae, ok := errors.AsType[smithy.APIError](err); ok {
		return ae.ErrorCode()
	}
	return ""
}

// ServerClock is the server's clock read by [Client.ServerTime]: its Date
// header and this host's clock just before the request and after its
// response.
type ServerClock struct {
	Server         time.Time // the Date header, whole seconds
	Sent, Received time.Time // local, around the request (retries included)
}

// Skew estimates server minus local time: Server against the midpoint of
// Sent and Received. Date has whole seconds, so the true skew lies in
// [Skew − RTT/2, Skew + 1 s + RTT/2].
func (s ServerClock) Skew() time.Duration {
	mid := s.Sent.Add(s.Received.Sub(s.Sent) / 2)
	return s.Server.Sub(mid)
}

// ServerTime sends HEAD on the bucket and returns the server's Date with
// the local times around it: the GC's clock at run start. It fails when
// the bucket is missing or not accessible, or when the response has no
// Date header.
func (c *Client) ServerTime(ctx context.Context) (ServerClock, error) {
	sent := time.Now()
	out, err := c.api.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(c.bucket)})
	received := time.Now()
	if err != nil {
		return ServerClock{}, fmt.Errorf("s3 %s: head bucket: %w", c.name, err)
	}
	t, ok := awsmiddleware.GetServerTime(out.ResultMetadata)
	if !ok || t.IsZero() {
		return ServerClock{}, fmt.Errorf("s3 %s: head bucket: the response has no Date header", c.name)
	}
	return ServerClock{Server: t, Sent: sent, Received: received}, nil
}

// ListOptions narrow a [Client.List].
type ListOptions struct {
	// StartAfter lists only keys after it (ListObjectsV2's start-after).
	StartAfter string
	// Before, when set, ends the listing at the first key ≥ Before, without
	// asking for the pages after it: with StartAfter, a key range.
	Before string
}

// List iterates over the objects whose keys start with prefix, in key
// order, one ListObjectsV2 page at a time: memory stays one page (1,000
// keys by default) whatever the bucket holds. The iteration stops at the
// first error, yielded with a zero Object; a server that lists keys out of
// order, outside the prefix, or without a continuation token on a
// truncated page is an error, since a GC cannot trust such a listing.
func (c *Client) List(ctx context.Context, prefix string, o ListOptions) iter.Seq2[Object, error] {
	return func(yield func(Object, error) bool) {
		in := &s3.ListObjectsV2Input{Bucket: aws.String(c.bucket), Prefix: aws.String(prefix)}
		if o.StartAfter != "" {
			in.StartAfter = aws.String(o.StartAfter)
		}
		if c.pageSize > 0 {
			in.MaxKeys = aws.Int32(c.pageSize)
		}
		last := o.StartAfter
		for page := 1; ; page++ {
			out, err := c.api.ListObjectsV2(ctx, in)
			if err != nil {
				yield(Object{}, fmt.Errorf("s3 %s: list %s (page %d, after %q): %w", c.name, prefix, page, last, err))
				return
			}
			for _, obj := range out.Contents {
				key := aws.ToString(obj.Key)
				if !strings.HasPrefix(key, prefix) || key <= last {
					yield(Object{}, fmt.Errorf("s3 %s: list %s (page %d): key %q out of order or outside the prefix (after %q)", c.name, prefix, page, key, last))
					return
				}
				if o.Before != "" && key >= o.Before {
					return
				}
				last = key
				ob := Object{Key: key, Size: aws.ToInt64(obj.Size), ETag: aws.ToString(obj.ETag)}
				if obj.LastModified != nil {
					ob.LastModified = *obj.LastModified
				}
				if !yield(ob, nil) {
					return
				}
			}
			if !aws.ToBool(out.IsTruncated) {
				return
			}
			next := aws.ToString(out.NextContinuationToken)
			if next == "" || next == aws.ToString(in.ContinuationToken) {
				yield(Object{}, fmt.Errorf("s3 %s: list %s (page %d): truncated page without a new continuation token", c.name, prefix, page))
				return
			}
			in.ContinuationToken = aws.String(next)
			in.StartAfter = nil
		}
	}
}

// Head returns the object at key; a missing key is an error matching
// [ErrNotFound].
func (c *Client) Head(ctx context.Context, key string) (Object, error) {
	out, err := c.api.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)})
	if err != nil {
		if statusCode(err) == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return Object{}, fmt.Errorf("s3 %s: head %s: %w", c.name, key, err)
	}
	ob := Object{Key: key, Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag)}
	if out.LastModified != nil {
		ob.LastModified = *out.LastModified
	}
	return ob, nil
}

// MaxGetSize bounds what [Client.Get] reads: a PBS chunk is at most 16 MiB
// plus its header, an index file of a 10 TiB image about 20 MiB.
const MaxGetSize = 64 << 20

// Get returns the content of the object at key; a missing key is an error
// matching [ErrNotFound], one larger than [MaxGetSize] an error.
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	out, err := c.api.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(key)})
	if err != nil {
		if statusCode(err) == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, fmt.Errorf("s3 %s: get %s: %w", c.name, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, MaxGetSize+1))
	if err != nil {
		return nil, fmt.Errorf("s3 %s: get %s: %w", c.name, key, err)
	}
	if len(b) > MaxGetSize {
		return nil, fmt.Errorf("s3 %s: get %s: larger than %d bytes", c.name, key, MaxGetSize)
	}
	return b, nil
}

// putConflictAttempts bounds the PUTs of [Client.PutIfAbsent] answered 409
// (a concurrent conditional write): PBS tries an upload 3 times.
const putConflictAttempts = 3

// putInput is the PUT of data to key with its Content-MD5, as PBS sends
// every request with a body.
func (c *Client) putInput(key string, data []byte) *s3.PutObjectInput {
	sum := md5.Sum(data)
	return &s3.PutObjectInput{
		Bucket:        aws.String(c.bucket),
		Key:           aws.String(key),
		Body:          newRequestBody(data),
		ContentLength: aws.Int64(int64(len(data))),
		ContentMD5:    aws.String(base64.StdEncoding.EncodeToString(sum[:])),
	}
}

// Put uploads data to key, replacing any object there: an unconditional
// PUT with Content-MD5, as PBS uploads what it replaces (the in-use
// marker, index files, manifests). A 409 is tried again like
// [Client.PutIfAbsent]'s.
//
// An error means the outcome is unknown: the object may have been
// replaced.
func (c *Client) Put(ctx context.Context, key string, data []byte) error {
	for attempt := 1; ; attempt++ {
		_, err := c.api.PutObject(ctx, c.putInput(key, data))
		switch st := statusCode(err); {
		case err == nil:
			return nil
		case st == http.StatusConflict && attempt < putConflictAttempts:
			continue
		default:
			return fmt.Errorf("s3 %s: put %s: %w", c.name, key, err)
		}
	}
}

// PutIfAbsent uploads data to key unless an object is there: a PUT with
// If-None-Match: * and Content-MD5, as PBS uploads a chunk. It returns
// created false, and no error, when the server answers 412 (the object
// exists: a duplicate, which is success; also the answer to a retry of a
// PUT whose first response was lost). A 409 is tried again. Under the
// provider quirk skip-if-none-match-header the PUT is unconditional and
// created is always true.
//
// An error means the outcome is unknown: the object may exist.
func (c *Client) PutIfAbsent(ctx context.Context, key string, data []byte) (created bool, err error) {
	for attempt := 1; ; attempt++ {
		in := c.putInput(key, data)
		if !c.skipIfNoneMatch {
			in.IfNoneMatch = aws.String("*")
		}
		_, err := c.api.PutObject(ctx, in)
		switch st := statusCode(err); {
		case err == nil:
			return true, nil
		case st == http.StatusPreconditionFailed && !c.skipIfNoneMatch:
			return false, nil
		case st == http.StatusConflict && attempt < putConflictAttempts:
			continue
		default:
			return false, fmt.Errorf("s3 %s: put %s: %w", c.name, key, err)
		}
	}
}

// MaxDeleteBatch is the number of keys one DeleteObjects request carries at
// most, as in PBS (S3 allows 1,000; PBS holds a chunk lock per queued key).
const MaxDeleteBatch = 100

// KeyError is the server's refusal to delete one key.
type KeyError struct {
	Key, Code, Message string
}

// DeleteError is the error of [Client.Delete]: what is known of the keys
// that were not confirmed deleted.
type DeleteError struct {
	Endpoint string
	// Failed are the keys the server refused, with its reasons: they
	// still exist.
	Failed []KeyError
	// Unknown are the keys whose outcome is unknown (the request failed
	// without a definite answer, or the answer did not mention them):
	// they may or may not exist.
	Unknown []string
	// NotAttempted are the keys of the batches after the failed one.
	NotAttempted []string
	// Err is the request's error, when the request itself failed.
	Err error
}

func (e *DeleteError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "s3 %s: delete", e.Endpoint)
	if len(e.Failed) > 0 {
		fmt.Fprintf(&b, ": %d keys refused:", len(e.Failed))
		for i, f := range e.Failed {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, " %s (%s: %s)", f.Key, f.Code, f.Message)
		}
	}
	if len(e.Unknown) > 0 {
		fmt.Fprintf(&b, ": %d keys with unknown outcome: %s", len(e.Unknown), strings.Join(e.Unknown, ", "))
	}
	if len(e.NotAttempted) > 0 {
		fmt.Fprintf(&b, ": %d keys not attempted", len(e.NotAttempted))
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns e.Err.
func (e *DeleteError) Unwrap() error { return e.Err }

// Delete deletes keys, in DeleteObjects requests of at most
// [MaxDeleteBatch] keys, each with Content-MD5 (which S3 requires; no
// other checksum header is sent, as from PBS), or under the provider quirk
// delete-objects-via-delete-object one DELETE per key. A key is deleted
// only when the server confirms it (a missing key is confirmed too). At the
// first key not confirmed Delete stops and returns a [*DeleteError] that
// names the refused keys, the keys with an unknown outcome and the keys
// not attempted.
func (c *Client) Delete(ctx context.Context, keys []string) error {
	for i := 0; i < len(keys); i += MaxDeleteBatch {
		batch := keys[i:min(i+MaxDeleteBatch, len(keys))]
		var de *DeleteError
		if c.deleteOneByOne {
			de = c.deleteEach(ctx, batch)
		} else {
			de = c.deleteBatch(ctx, batch)
		}
		if de != nil {
			de.NotAttempted = append(de.NotAttempted, keys[i+len(batch):]...)
			return de
		}
	}
	return nil
}

// deleteBatch sends one DeleteObjects request for keys.
func (c *Client) deleteBatch(ctx context.Context, keys []string) *DeleteError {
	objs := make([]types.ObjectIdentifier, len(keys))
	for i, k := range keys {
		objs[i] = types.ObjectIdentifier{Key: aws.String(k)}
	}
	out, err := c.api.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(c.bucket),
		Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(false)},
	}, append([]func(*s3.Options){func(o *s3.Options) { o.APIOptions = append(o.APIOptions, addContentMD5) }}, c.deleteOptions...)...)
	if err != nil {
		return c.requestFailed(keys, err)
	}
	pending := make(map[string]bool, len(keys))
	for _, k := range keys {
		pending[k] = true
	}
	for _, d := range out.Deleted {
		delete(pending, aws.ToString(d.Key))
	}
	de := &DeleteError{Endpoint: c.name}
	for _, e := range out.Errors {
		k := aws.ToString(e.Key)
		if pending[k] {
			delete(pending, k)
			de.Failed = append(de.Failed, KeyError{Key: k, Code: aws.ToString(e.Code), Message: aws.ToString(e.Message)})
		}
	}
	for _, k := range keys {
		if pending[k] {
			de.Unknown = append(de.Unknown, k)
		}
	}
	if len(de.Failed) == 0 && len(de.Unknown) == 0 {
		return nil
	}
	return de
}

// deleteEach deletes keys one DELETE at a time, stopping at the first
// failure.
func (c *Client) deleteEach(ctx context.Context, keys []string) *DeleteError {
	for i, k := range keys {
		_, err := c.api.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(k)})
		if err != nil {
			de := c.requestFailed(keys[i:i+1], err)
			de.NotAttempted = append(de.NotAttempted, keys[i+1:]...)
			return de
		}
	}
	return nil
}

// requestFailed is the DeleteError of a delete request that failed as a
// whole: a 4xx answer refused every key (nothing was deleted); anything
// else (a 5xx after the retries, a lost connection, a cancel) leaves the
// outcome unknown.
func (c *Client) requestFailed(keys []string, err error) *DeleteError {
	de := &DeleteError{Endpoint: c.name, Err: err}
	if st := statusCode(err); st >= 400 && st < 500 {
		for _, k := range keys {
			de.Failed = append(de.Failed, KeyError{Key: k, Code: errorCode(err), Message: http.StatusText(st)})
		}
		return de
	}
	de.Unknown = append(de.Unknown, keys...)
	return de
}

// addContentMD5 sets Content-MD5 on a request right before it is signed,
// and drops the flexible checksum headers the SDK adds to DeleteObjects
// whatever RequestChecksumCalculation says: S3 and many S3-compatible
// servers require Content-MD5 there (aws-sdk-go-v2#3258), and PBS sends
// only that.
func addContentMD5(stack *middleware.Stack) error {
	return stack.Finalize.Insert(middleware.FinalizeMiddlewareFunc("chunkgcContentMD5",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			req, ok := in.Request.(*smithyhttp.Request)
			if !ok {
				return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("content-md5: unknown request type %T", in.Request)
			}
			var body []byte
			if s := req.GetStream(); s != nil {
				b, err := io.ReadAll(s)
				if err != nil {
					return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("content-md5: read body: %w", err)
				}
				body = b
				r, err := req.SetStream(newRequestBody(b))
				if err != nil {
					return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("content-md5: %w", err)
				}
				req = r
				in.Request = req
			}
			sum := md5.Sum(body)
			for h := range req.Header {
				if l := strings.ToLower(h); strings.HasPrefix(l, "x-amz-checksum-") || l == "x-amz-sdk-checksum-algorithm" {
					req.Header.Del(h)
				}
			}
			req.Header.Set("Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
			return next.HandleFinalize(ctx, in)
		}), "Signing", middleware.Before)
}

// requestBody is a request body that reads and seeks (the SDK rewinds it
// for a retry) but has no WriteTo. smithy-go wraps a body that has one in
// a closer whose WriteTo returns io.EOF once the SDK closed it, which it
// does as soon as the response headers are in; net/http's transport, still
// checking for bytes beyond Content-Length, takes that io.EOF for a write
// error and closes the connection under the response body being read
// ("use of closed network connection"): a request the server carried out
// is sent again (io.WriterTo must not return io.EOF, golang/go#44411). A
// Read's io.EOF is the end the check expects.
type requestBody struct{ r *bytes.Reader }

func newRequestBody(b []byte) *requestBody { return &requestBody{bytes.NewReader(b)} }

func (b *requestBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *requestBody) Seek(off int64, whence int) (int64, error) { return b.r.Seek(off, whence) }
