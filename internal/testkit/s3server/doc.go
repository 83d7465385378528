// Package s3server runs a real S3 server for tests: versitygw (v1.8.0,
// Apache-2.0) with its posix backend, started by the test on 127.0.0.1 and
// stopped at cleanup.
//
// # The server
//
// [Start] runs
//
//	ROOT_ACCESS_KEY=… ROOT_SECRET_KEY=… versitygw --port 127.0.0.1:PORT --quiet --region us-west-1 [--cert C --key K] posix DIR
//
// (never versitygw's default, all interfaces), waits until it answers, and
// creates the bucket. Buckets are directories of DIR and an object is the
// file DIR/<bucket>/<key>, whose mtime is the object's LastModified: [Server.Age]
// makes an object old with a plain mtime change. [Server.Kill] (SIGKILL),
// [Server.Stop] (SIGTERM) and [Server.Restart] (again on the same
// directory and port) let tests stop the server in the middle of a run.
// With [Options.TLS] the server speaks HTTPS with a freshly generated
// self-signed certificate for 127.0.0.1, whose fingerprint
// [Server.Endpoint] puts in the endpoint as s3.cfg would.
//
// # Installing versitygw
//
// .ci/run installs it with GOBIN=/var/cache/chunkgc/gobin go install
// github.com/versity/versitygw/cmd/versitygw@v1.8.0 (skipped when that
// binary is there and `go version -m` says v1.8.0: versitygw --version
// prints "git" for a go-installed binary) and puts the directory on PATH.
// Start looks on PATH, then in that directory. A missing binary skips the
// test with the reason outside CI and fails it under CI=true
// (rtest.SkipOrFail).
package s3server
