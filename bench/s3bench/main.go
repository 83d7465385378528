// Command s3bench is the fixture and the latency proxy of bench/s3.sh, the
// S3 datastore benchmark (README "S3 performance"). Never linked into
// cmd/chunkgc.
//
//	s3bench gen -objects 100000 -garbage 0.2 -store bench CACHE BUCKETDIR
//
// writes an S3 datastore the fast way: each object as the file
// BUCKETDIR/<store>/.chunks/<p>/<hex> (versitygw's posix backend stores an
// object so and lists it, LastModified being the file's mtime), and its
// local cache CACHE, a chunk store with an empty "evicted, on S3" marker
// per object and indexes referencing all but the garbage share. Objects and
// markers are aged by -age. Run again with the same flags it restores the
// same datastore: what a GC removed is written again and everything is
// aged again.
//
//	s3bench proxy -delay 50ms -cert C -key K UPSTREAM
//
// runs internal/testkit/s3proxy over HTTPS in front of UPSTREAM
// (https://127.0.0.1:PORT, certificate not checked: a loopback test
// server), delaying every request; it prints its address on stdout and,
// on SIGTERM or SIGINT, the requests it forwarded by operation on stderr.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/bench/fixture"
	"chunkgc/blob"
	"chunkgc/internal/testkit/s3proxy"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: s3bench gen|proxy [flags] ARGS")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "proxy":
		err = proxy(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want gen or proxy)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "s3bench:", err)
		os.Exit(1)
	}
}

func gen(args []string) error {
	fl := flag.NewFlagSet("gen", flag.ContinueOnError)
	objects := fl.Int("objects", 100000, "number of chunk objects")
	garbage := fl.Float64("garbage", 0.2, "share of objects no index references")
	indexes := fl.Int("indexes", 100, "fixed indexes the referenced chunks are spread over")
	store := fl.String("store", "bench", "datastore name, the key prefix")
	age := fl.Duration("age", 48*time.Hour, "age of every object's LastModified and every marker's atime")
	workers := fl.Int("workers", 8, "parallel file creation")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 2 || *garbage < 0 || *garbage > 1 || *indexes < 1 {
		return errors.New("usage: s3bench gen [-objects N] [-garbage F] [-indexes M] [-store S] [-age D] CACHE BUCKETDIR")
	}
	cache, bucket := fl.Arg(0), fl.Arg(1)
	cacheChunks, err := fixture.Layout(cache)
	if err != nil {
		return err
	}
	objChunks := filepath.Join(bucket, *store, ".chunks")
	if err := os.MkdirAll(objChunks, 0o750); err != nil {
		return err
	}
	old := unix.NsecToTimespec(time.Now().Add(-*age).UnixNano())
	times := []unix.Timespec{old, old}
	n := *objects
	digests, err := fixture.Chunks(n, 64, *workers, 0x733362656e6368 /* "s3bench" */, func(d blob.Digest, data []byte) error {
		return writeObject(d, data, cacheChunks, objChunks, times)
	})
	if err != nil {
		return err
	}
	refs := digests[:n-int(float64(n)**garbage)]
	if err := fixture.Indexes(cache, refs, *indexes); err != nil {
		return err
	}
	fmt.Printf("s3bench gen: %d objects (%d referenced, %d garbage) in %s, cache %s\n", n, len(refs), n-len(refs), objChunks, cache)
	return nil
}

// writeObject writes chunk d (plain data) as an object file under
// objChunks and as an empty marker in the cache, both aged to times.
func writeObject(d blob.Digest, data []byte, cacheChunks, objChunks string, times []unix.Timespec) error {
	h := d.String()
	obj := filepath.Join(objChunks, h[:4], h)
	if _, err := os.Stat(obj); errors.Is(err, fs.ErrNotExist) {
		b, err := blob.Encode(data, false)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(obj), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(obj, b, 0o644); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	marker := filepath.Join(cacheChunks, h[:4], h)
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return err
	}
	for _, p := range []string{obj, marker} {
		if err := unix.UtimesNano(p, times); err != nil {
			return &fs.PathError{Op: "utimensat", Path: p, Err: err}
		}
	}
	return nil
}

func proxy(args []string) error {
	fl := flag.NewFlagSet("proxy", flag.ContinueOnError)
	delay := fl.Duration("delay", 50*time.Millisecond, "added to every request")
	certFile := fl.String("cert", "", "TLS certificate (PEM)")
	keyFile := fl.String("key", "", "TLS key (PEM)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 1 || *certFile == "" || *keyFile == "" {
		return errors.New("usage: s3bench proxy [-delay D] -cert C -key K UPSTREAM")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	p, err := s3proxy.Listen(fl.Arg(0), s3proxy.ListenOptions{TLS: &cert, UpstreamTLS: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		return err
	}
	defer p.Close()
	p.SetRule(func(op s3proxy.Op, n int, r *http.Request) s3proxy.Fault { return s3proxy.Fault{Delay: *delay} })
	fmt.Println(p.Addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGTERM, unix.SIGINT)
	<-sig
	fmt.Fprintln(os.Stderr, "s3bench proxy: requests", s3proxy.String(p.Counts()))
	return nil
}
