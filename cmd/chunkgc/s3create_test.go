package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"chunkgc/config"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/s3server"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/objstore"
)

// s3CreateEnv is a versitygw over TLS and a fresh CLI config with the
// server's s3.cfg beside it, for chunkgc create of the S3 datastore st1.
type s3CreateEnv struct {
	srv    *s3server.Server
	client *objstore.Client
	tmp    string // a tmpfs for the caches
	node   string // this host's node name
}

func newS3CreateEnv(t *testing.T) *s3CreateEnv {
	t.Helper()
	srv := s3server.Start(t, s3server.Options{TLS: true})
	client, err := objstore.New(srv.Endpoint(), srv.Bucket, objstore.Options{})
	rtest.OK(t, err)
	node, err := objstore.Nodename()
	rtest.OK(t, err)
	return &s3CreateEnv{srv: srv, client: client, tmp: testfs.Tmpfs(t, ""), node: node}
}

// cli is a new CLI whose s3.cfg names the server.
func (e *s3CreateEnv) cli(t *testing.T) *cli {
	t.Helper()
	c := newCLI(t)
	writeS3Config(t, c, e.srv)
	return c
}

// create runs chunkgc create of st1 in the bucket with its cache at
// <tmpfs>/cache, the atime probe on.
func (e *s3CreateEnv) create(c *cli, cache string, extra ...string) result {
	args := append([]string{"create", "--backend", s3Backend(e.srv)}, extra...)
	return c.run(append(args, "st1", filepath.Join(e.tmp, cache))...)
}

// marker is the content of st1's in-use marker object, "" when absent.
func (e *s3CreateEnv) marker(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(e.srv.ObjectPath("st1/.in-use"))
	if os.IsNotExist(err) {
		return ""
	}
	rtest.OK(t, err)
	return string(b)
}

func (e *s3CreateEnv) putMarker(t *testing.T, content string) {
	t.Helper()
	rtest.OK(t, e.client.Put(context.Background(), "st1/.in-use", []byte(content)))
}

// TestCreateS3Datastore: chunkgc create --backend type=s3,… of a fresh
// bucket makes the local cache as for a local store (every prefix dir,
// the atime probe run, its zero chunk uploaded before it is cached),
// writes <store>/.in-use exactly as PBS does ({"hostname":"<node>"}) and
// registers the backend; a second create on this host (another config and
// cache, the marker naming this host) succeeds and leaves the marker as it
// was; ingest and gc then work on the created store, and the store
// invariant holds.
func TestCreateS3Datastore(t *testing.T) {
	e := newS3CreateEnv(t)
	c := e.cli(t)
	rtest.Equal(t, "marker before create", "", e.marker(t))
	wantCode(t, e.create(c, "cache"), exitOK, "atime probe passed", "s3 in-use marker written", "datastore st1 created")
	want := `{"hostname":"` + e.node + `"}`
	rtest.Equal(t, "in-use marker", want, e.marker(t))
	base := filepath.Join(e.tmp, "cache")
	for _, p := range []string{".lock", ".chunks/0000", ".chunks/bb9f", ".chunks/ffff"} {
		if _, err := os.Stat(filepath.Join(base, p)); err != nil {
			t.Errorf("cache layout: %v", err)
		}
	}
	zero := "st1/.chunks/bb9f/bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"
	if _, err := os.Stat(e.srv.ObjectPath(zero)); err != nil {
		t.Errorf("the probe's zero chunk has no object: %v", err)
	}
	cfg, err := config.Read(c.config)
	rtest.OK(t, err)
	ds, ok := cfg.Datastore("st1")
	if !ok {
		t.Fatalf("st1 not registered: %s", cfg.Bytes())
	}
	rtest.Equal(t, "registered backend", s3Backend(e.srv), ds.Backend)
	rtest.Equal(t, "registered path", base, ds.Path)

	// Run again on this host: the marker names it, so it is kept as it
	// was (its mtime, which versitygw reports as LastModified, too).
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.srv.Age("st1/.in-use", old)
	wantCode(t, e.create(e.cli(t), "cache2"), exitOK, "s3 in-use marker names this host")
	rtest.Equal(t, "in-use marker after a second create", want, e.marker(t))
	if fi, err := os.Stat(e.srv.ObjectPath("st1/.in-use")); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("the second create rewrote the marker: %v %v", fi.ModTime(), err)
	}

	// The created store takes backups and collects.
	src := filepath.Join(t.TempDir(), "disk")
	data := make([]byte, 8*64<<10)
	for i := range data {
		data[i] = byte(i / 5)
	}
	rtest.OK(t, os.WriteFile(src, data, 0o644))
	wantCode(t, c.run("ingest", "--chunk-size", "65536", "st1", "vm/100", src), exitOK)
	wantCode(t, c.run("gc", "--output", "json", "st1"), exitOK, `"s3":`, `"removed-chunks":0`)
	checkS3Store(t, e.srv, "st1", base)
}

// TestCreateS3InUseElsewhere: an in-use marker of another host, one without
// a hostname and one that is no marker are refused with exit 1 and an
// error naming the store, the key and the host; nothing is written (the
// marker, the cache directory, the config); --overwrite-in-use replaces
// the marker with this host's. --overwrite-in-use without an S3 backend,
// and a bad --backend, are usage errors.
func TestCreateS3InUseElsewhere(t *testing.T) {
	e := newS3CreateEnv(t)
	for i, tt := range []struct {
		marker string
		naming string
	}{
		{`{"hostname":"pbs-elsewhere"}`, `in use by host \"pbs-elsewhere\"`},
		{`{}`, "an unknown host (no hostname)"},
		{`garbage`, "not an in-use marker"},
	} {
		t.Run(tt.marker, func(t *testing.T) {
			e.putMarker(t, tt.marker)
			c := e.cli(t)
			cache := fmt.Sprint("refused", i)
			wantCode(t, e.create(c, cache), exitError, "st1", "st1/.in-use", tt.naming, e.node, "--overwrite-in-use",
				"in use by another host")
			rtest.Equal(t, "marker after a refused create", tt.marker, e.marker(t))
			if _, err := os.Lstat(filepath.Join(e.tmp, cache)); err == nil {
				t.Errorf("a refused create made the cache %s", cache)
			}
			if _, err := os.Stat(c.config); err == nil {
				t.Errorf("a refused create wrote %s", c.config)
			}
		})
	}
	c := e.cli(t)
	wantCode(t, e.create(c, "forced", "--overwrite-in-use"), exitOK, "will be overwritten")
	rtest.Equal(t, "marker after --overwrite-in-use", `{"hostname":"`+e.node+`"}`, e.marker(t))
	checkS3Store(t, e.srv, "st1", filepath.Join(e.tmp, "forced"))

	u := newCLI(t)
	wantCode(t, u.run("create", "--overwrite-in-use", "st2", filepath.Join(e.tmp, "u1")), exitUsage, "only for an S3 datastore")
	wantCode(t, u.run("create", "--backend", "type=tape", "st2", filepath.Join(e.tmp, "u2")), exitUsage, "--backend", "tape")
	for _, p := range []string{"u1", "u2"} {
		if _, err := os.Lstat(filepath.Join(e.tmp, p)); err == nil {
			t.Errorf("a usage error made %s", p)
		}
	}
}
