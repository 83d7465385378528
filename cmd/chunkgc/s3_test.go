package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/s3server"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/objstore"
)

// s3Store is a PBS 4.2 S3 datastore for the CLI: versitygw over TLS, its
// certificate pinned in an s3.cfg beside the test's datastore.cfg, which
// registers st1 with backend type=s3 and the local cache at base; every
// chunk of the cache (referenced and garbage, 72 h old) uploaded as an
// object aged as old.
type s3Store struct {
	*testStore
	srv    *s3server.Server
	client *objstore.Client
}

func newS3Store(t *testing.T, c *cli, referenced, garbage int) *s3Store {
	t.Helper()
	srv := s3server.Start(t, s3server.Options{TLS: true})
	client, err := objstore.New(srv.Endpoint(), srv.Bucket, objstore.Options{})
	rtest.OK(t, err)
	base := filepath.Join(testfs.Tmpfs(t, ""), "cache")
	s := &s3Store{testStore: makeStore(t, base, referenced, garbage), srv: srv, client: client}
	for _, p := range append(append([]string{}, s.refs...), s.garbage...) {
		k := s.key(p)
		_, err := client.PutIfAbsent(context.Background(), k, []byte(k))
		rtest.OK(t, err)
		srv.Age(k, time.Now().Add(-72*time.Hour))
	}
	writeS3Config(t, c, srv)
	cfg := fmt.Sprintf("datastore: st1\n\tbackend %s\n\tpath %s\n\ttuning gc-atime-safety-check=false\n", s3Backend(srv), base)
	rtest.OK(t, os.WriteFile(c.config, []byte(cfg), 0o644))
	return s
}

// writeS3Config writes the s3.cfg beside c's datastore.cfg: srv's
// endpoint, its certificate pinned.
func writeS3Config(t *testing.T, c *cli, srv *s3server.Server) {
	t.Helper()
	ep := srv.Endpoint()
	s3cfg := fmt.Sprintf("s3-endpoint: %s\n\taccess-key %s\n\tendpoint %s\n\tfingerprint %s\n\tpath-style true\n\tport %d\n\tregion %s\n\tsecret-key %s\n",
		ep.ID, ep.AccessKey, ep.Endpoint, ep.Fingerprint, ep.Port, ep.Region, ep.SecretKey)
	rtest.OK(t, os.WriteFile(filepath.Join(filepath.Dir(c.config), "s3.cfg"), []byte(s3cfg), 0o600))
}

// s3Backend is the backend property of a datastore in srv's bucket.
func s3Backend(srv *s3server.Server) string {
	return fmt.Sprintf("type=s3,client=%s,bucket=%s", srv.Endpoint().ID, srv.Bucket)
}

// key is the object key of the chunk file at p.
func (s *s3Store) key(p string) string {
	return "st1/.chunks/" + filepath.Base(filepath.Dir(p)) + "/" + filepath.Base(p)
}

func (s *s3Store) hasObject(p string) bool {
	_, err := os.Stat(s.srv.ObjectPath(s.key(p)))
	return err == nil
}

// TestGCS3Datastore: chunkgc gc of a configured S3 datastore collects the
// bucket: the referenced objects stay, the old garbage objects and their
// cache files go, the JSON status carries the S3 figures, status reads
// .gc-status back, and the commands that do not support S3 yet refuse the
// store naming it and the backend.
func TestGCS3Datastore(t *testing.T) {
	c := newCLI(t)
	s := newS3Store(t, c, 20, 30)
	r := c.run("gc", "--output", "json", "st1")
	wantCode(t, r, 0, `"s3":`, `"removed":30`)
	for _, p := range s.refs {
		if !s.hasObject(p) {
			t.Errorf("referenced object of %s deleted", p)
		}
	}
	for _, p := range s.garbage {
		if s.hasObject(p) {
			t.Errorf("garbage object of %s kept", p)
		}
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("cache file %s left without its object", p)
		}
	}
	wantCode(t, c.run("status", "st1"), 0, "Removed garbage")
	for _, cmd := range []string{"usage", "restore", "journal"} {
		wantCode(t, c.run(cmd, "st1"), exitError, "st1", "type=s3", "does not collect S3 datastores yet")
	}
}

// TestGCS3DatastoreMisconfigured: a backend client missing from s3.cfg, or
// a pinned fingerprint that is not the server's, fails the run with exit 1
// and an error naming it, and nothing is deleted.
func TestGCS3DatastoreMisconfigured(t *testing.T) {
	for _, tt := range []struct {
		name   string
		spoil  func(t *testing.T, c *cli, s *s3Store)
		naming string
	}{
		{"unknown client", func(t *testing.T, c *cli, s *s3Store) {
			b, err := os.ReadFile(c.config)
			rtest.OK(t, err)
			rtest.OK(t, os.WriteFile(c.config, []byte(strings.Replace(string(b), "client=versitygw", "client=elsewhere", 1)), 0o644))
		}, `is not an s3-endpoint`},
		{"wrong fingerprint", func(t *testing.T, c *cli, s *s3Store) {
			p := filepath.Join(filepath.Dir(c.config), "s3.cfg")
			b, err := os.ReadFile(p)
			rtest.OK(t, err)
			fp := s.srv.Endpoint().Fingerprint
			wrong := strings.Repeat("00:", 31) + "00"
			rtest.OK(t, os.WriteFile(p, []byte(strings.Replace(string(b), fp, wrong, 1)), 0o600))
		}, "fingerprint"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t)
			s := newS3Store(t, c, 5, 5)
			tt.spoil(t, c, s)
			wantCode(t, c.run("gc", "st1"), exitError, tt.naming)
			for _, p := range s.garbage {
				if !s.hasObject(p) {
					t.Errorf("object of %s deleted by a failed run", p)
				}
			}
		})
	}
}

// ageObjects sets the LastModified of every object of st1's chunks to when.
func (s *s3Store) ageObjects(t *testing.T, when time.Time) {
	t.Helper()
	err := filepath.WalkDir(s.srv.ObjectPath("st1/.chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			return os.Chtimes(p, time.Time{}, when)
		}
		return nil
	})
	rtest.OK(t, err)
}

// invariant: every chunk of every finished index of the cache exists as an
// object, and every cache file has its object.
func (s *s3Store) invariant(t *testing.T) {
	t.Helper()
	checkS3Store(t, s.srv, "st1", s.base)
}

// checkS3Store is the S3 store invariant of datastore store in srv's
// bucket with its cache at base: every chunk of every finished index of the
// cache exists as an object, and every cache file has its object.
func checkS3Store(t *testing.T, srv *s3server.Server, store, base string) {
	t.Helper()
	has := func(p string) bool {
		_, err := os.Stat(srv.ObjectPath(store + "/.chunks/" + filepath.Base(filepath.Dir(p)) + "/" + filepath.Base(p)))
		return err == nil
	}
	storetest.CheckObjects(t, base, func(d blob.Digest) bool { return has(base + "/.chunks/" + d.String()[:4] + "/" + d.String()) })
	err := filepath.WalkDir(filepath.Join(base, ".chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if kind, _ := chunkstore.Classify([]byte(d.Name())); kind == chunkstore.KindChunk && !has(p) {
			t.Errorf("cache file %s has no object", p)
		}
		return nil
	})
	rtest.OK(t, err)
}

// TestS3BackupsRacingGC: backups (cached and --no-cache, real processes)
// ingest a file whose chunks are old garbage on both proofs — their cache
// files and objects 72 h old — while GC runs again and again. Every chunk
// of every finished index exists as an object afterwards, and no cache
// file claims an object that is gone.
func TestS3BackupsRacingGC(t *testing.T) {
	rounds := 3
	if os.Getenv("CHUNKGC_LONG") != "" {
		rounds = 30
	}
	c := newCLI(t)
	s := newS3Store(t, c, 0, 0)
	src := t.TempDir()
	for round := range rounds {
		file := forgottenBackup(t, c, "st1", s.base, src, round, 128)
		old := time.Now().Add(-72 * time.Hour)
		ageAll(t, s.base, old)
		s.ageObjects(t, old)

		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, extra := range [][]string{nil, {"--no-cache"}} {
			wg.Go(func() {
				args := append(append([]string{"ingest", "--chunk-size", "65536"}, extra...), "st1", fmt.Sprintf("vm/%d", 901+i), file)
				out, err := c.cmd(args...).CombinedOutput()
				if err != nil {
					errs[i] = fmt.Errorf("%v: %w\n%s", args, err, out)
				}
			})
		}
		wg.Go(func() { gcLoop(t, c, 3, "--tuning", "gc-concurrency=2", "st1") })
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("round %d: ingest: %v", round, err)
			}
		}
		s.invariant(t)
		if t.Failed() {
			t.Fatalf("round %d lost chunks", round)
		}
	}
}

// TestS3IngestUploadsContent: chunkgc ingest into an S3 datastore on
// versitygw leaves, for every file it wrote below the cache (group owner,
// index, manifest), an object <store>/.cnt/<relative path> with the same
// bytes, and the namespace's .namespace markers; a GC afterwards keeps
// them and every chunk, and the store invariant holds; forget of a
// snapshot deletes its objects and its emptied group's owner object.
func TestS3IngestUploadsContent(t *testing.T) {
	c := newCLI(t)
	s := newS3Store(t, c, 0, 0)
	src := filepath.Join(t.TempDir(), "disk")
	data := make([]byte, 5*64<<10+1000)
	for i := range data {
		data[i] = byte(i/3 + i>>12)
	}
	rtest.OK(t, os.WriteFile(src, data, 0o644))
	first := c.run("ingest", "--chunk-size", "65536", "st1", "vm/100", src)
	wantCode(t, first, exitOK)
	wantCode(t, c.run("ingest", "--chunk-size", "65536", "--ns", "a/b", "st1", "ct/7", src), exitOK)
	wantCode(t, c.run("gc", "st1"), exitOK)

	for _, k := range []string{"st1/.cnt/ns/a/.namespace", "st1/.cnt/ns/a/ns/b/.namespace"} {
		if fi, err := os.Stat(s.srv.ObjectPath(k)); err != nil || fi.Size() != 0 {
			t.Errorf("namespace marker %s: %v", k, err)
		}
	}
	var n int
	for _, g := range []string{"vm/100", "ns/a/ns/b/ct/7"} {
		rtest.OK(t, filepath.WalkDir(filepath.Join(s.base, g), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			rel, err := filepath.Rel(s.base, p)
			rtest.OK(t, err)
			local, err := os.ReadFile(p)
			rtest.OK(t, err)
			obj, err := os.ReadFile(s.srv.ObjectPath(objstore.ContentKey("st1", rel)))
			if err != nil || string(obj) != string(local) {
				t.Errorf("object of %s: %v, %d bytes, local %d bytes", rel, err, len(obj), len(local))
			}
			n++
			return nil
		}))
	}
	rtest.Equal(t, "files checked (owner, index and manifest of two groups)", 6, n)

	// forget deletes the snapshot's objects and, with the emptied group,
	// its owner object; the other group's stay.
	rel, err := filepath.Rel(s.base, strings.TrimSpace(first.stdout))
	rtest.OK(t, err)
	wantCode(t, c.run("forget", "st1", rel), exitOK)
	for _, k := range []string{rel + "/disk.img.fidx", rel + "/index.json.blob", "vm/100/owner"} {
		if _, err := os.Stat(s.srv.ObjectPath(objstore.ContentKey("st1", k))); err == nil {
			t.Errorf("object of %s left after forget", k)
		}
	}
	if _, err := os.Stat(s.srv.ObjectPath(objstore.ContentKey("st1", "ns/a/ns/b/ct/7/owner"))); err != nil {
		t.Errorf("the other group's owner object: %v", err)
	}
	wantCode(t, c.run("gc", "st1"), exitOK)
	s.invariant(t)
}

// TestCheckAtimeS3Datastore: check-atime of an S3 datastore uploads the
// probe's zero chunk before the probe caches it, as gc and create do: a
// cache file without its object would make every uploader skip the zero
// chunk. The cache file and the object both exist afterwards.
func TestCheckAtimeS3Datastore(t *testing.T) {
	c := newCLI(t)
	s := newS3Store(t, c, 2, 0)
	_, zero, err := blob.ZeroChunk(blob.ZeroChunkSize)
	rtest.OK(t, err)
	local := filepath.Join(s.base, ".chunks", zero.String()[:4], zero.String())
	wantCode(t, c.run("check-atime", "--tuning", "gc-atime-safety-check=1", "st1"), exitOK, "atime probe passed")
	if _, err := os.Stat(local); err != nil {
		t.Fatalf("the probe's chunk is not cached: %v", err)
	}
	rtest.Equal(t, "zero chunk object exists", true, s.hasObject(local))
	s.invariant(t)
}

// TestGCS3LostCache: the cache of an S3 datastore loses its snapshots (a
// cache disk replaced and re-created empty) while the bucket keeps their
// indexes under st1/.cnt/ and every object and cache file is old. chunkgc
// gc refuses the run (exit 1) naming an index key and deletes no object:
// both proofs of the sweep would hold for every chunk of the lost
// snapshots. With the cache's indexes restored from the bucket, the run
// collects and every referenced object stays.
func TestGCS3LostCache(t *testing.T) {
	c := newCLI(t)
	s := newS3Store(t, c, 0, 0)
	src := filepath.Join(t.TempDir(), "disk")
	data := make([]byte, 3*64<<10)
	for i := range data {
		data[i] = byte(i/5 + i>>10)
	}
	rtest.OK(t, os.WriteFile(src, data, 0o644))
	wantCode(t, c.run("ingest", "--chunk-size", "65536", "st1", "vm/100", src), exitOK)
	wantCode(t, c.run("ingest", "--chunk-size", "65536", "--ns", "a", "st1", "ct/7", src), exitOK)
	old := time.Now().Add(-72 * time.Hour)
	s.ageObjects(t, old)
	chunkObjects := func() []string {
		var keys []string
		rtest.OK(t, filepath.WalkDir(s.srv.ObjectPath("st1/.chunks"), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				keys = append(keys, filepath.Base(p))
			}
			return err
		}))
		return keys
	}
	ageAll(t, s.base, old)
	before := chunkObjects()
	if len(before) < 3 {
		t.Fatalf("%d chunk objects after the ingests, want at least 3", len(before))
	}

	for _, g := range []string{"vm", "ns"} {
		rtest.OK(t, os.RemoveAll(filepath.Join(s.base, g)))
	}
	r := c.run("gc", "st1")
	wantCode(t, r, exitError, "lacks index files the bucket holds", "st1/.cnt/", "st1")
	rtest.Equal(t, "chunk objects after the refused run", before, chunkObjects())

	// The cache's metadata restored from the bucket, as PBS's reuse of a
	// datastore does.
	cnt := s.srv.ObjectPath("st1/.cnt")
	rtest.OK(t, filepath.WalkDir(cnt, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || d.Name() == ".namespace" {
			return err
		}
		rel, err := filepath.Rel(cnt, p)
		rtest.OK(t, err)
		b, err := os.ReadFile(p)
		rtest.OK(t, err)
		rtest.OK(t, os.MkdirAll(filepath.Dir(filepath.Join(s.base, rel)), 0o755))
		return os.WriteFile(filepath.Join(s.base, rel), b, 0o644)
	}))
	wantCode(t, c.run("gc", "st1"), exitOK)
	rtest.Equal(t, "chunk objects after the run with the cache restored", before, chunkObjects())
	s.invariant(t)
}
