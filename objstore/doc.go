// Package objstore is chunkgc's S3 client: one bucket of one s3-endpoint of
// PBS's s3.cfg (package config reads it), on aws-sdk-go-v2, set up to talk
// to an S3 API the way PBS 4.2 does and to fail closed.
//
// # Connection
//
// Requests go to https://<endpoint>[:port], the endpoint's {{bucket}} and
// {{region}} templates substituted, with the key as the path, or
// /<bucket>/<key> under path-style: exactly the URL PBS builds (the SDK's
// own endpoint rules are bypassed, they would add the bucket to the host a
// second time). Requests are signed with SigV4 for the endpoint's region
// (default us-west-1). Without a fingerprint the server's certificate chain
// is verified against the system's CAs; with one, the leaf certificate's
// SHA-256 fingerprint must equal it and no CA is consulted (a mismatch is a
// [*FingerprintError] naming the endpoint and both fingerprints). Plain
// HTTP exists only behind [Options.TestOnlyPlainHTTP], for tests.
//
// # Retries
//
// Each request is tried at most 3 times ([Options.MaxAttempts]) with a
// jittered exponential back-off of at most 3 s, on 5xx answers, throttling
// codes and connection errors; certificate, fingerprint and TLS protocol
// errors are never retried ([IsTLSError]). The SDK's client-side retry
// quota (a token bucket that turns a burst of 503s into "retry quota
// exceeded") is off. Every retry is logged as a warning with the operation
// and the previous attempt's error. Checksums are computed and validated
// only where the API requires them (RequestChecksumCalculation and
// ResponseChecksumValidation WhenRequired).
//
// # Operations
//
//   - [Client.List]: a streaming ListObjectsV2 iterator over a prefix, one
//     page in memory at a time, optionally over a key range (StartAfter,
//     Before); an unsorted listing is an error.
//   - [Client.Delete]: DeleteObjects in batches of at most 100 keys
//     ([MaxDeleteBatch]) with Content-MD5; every key the server did not
//     confirm, refused or left unknown, is named by a [*DeleteError].
//     Provider quirk delete-objects-via-delete-object: one DELETE per key.
//   - [Client.PutIfAbsent]: PUT with If-None-Match: * and Content-MD5; 412
//     is a duplicate, not an error. Provider quirk skip-if-none-match-header:
//     a plain PUT.
//   - [Client.Put]: an unconditional PUT with Content-MD5, which replaces
//     the object (PBS's in-use marker and its .cnt/ copies of index files,
//     manifests and owners).
//   - [Client.Head], [Client.Get]: one object; 404 matches [ErrNotFound].
//   - [Client.ServerTime]: the Date of a HEAD on the bucket, with the local
//     clock around it ([ServerClock]), for the GC's clock-skew bound and its
//     cutoff in the server's clock.
//
// [Client.Requests] counts the HTTP requests sent, by method and retries
// included (PBS counts s3-get, -put, -post, -head, -delete the same way),
// so tests can assert a GC's request budget.
package objstore
