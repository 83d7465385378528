package backup

import (
	"context"
	"errors"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"chunkgc/blob"
	"chunkgc/datastore"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/objstore"
)

// recBucket is an in-memory bucket that records every request in order;
// a Put of a key ending in failPut fails.
type recBucket struct {
	mu      sync.Mutex
	objs    map[string][]byte
	log     []string // "put-if-absent KEY", "put KEY", "delete KEY"
	failPut string
}

func newRecBucket() *recBucket { return &recBucket{objs: map[string][]byte{}} }

func (b *recBucket) PutIfAbsent(_ context.Context, key string, data []byte) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = append(b.log, "put-if-absent "+key)
	if _, ok := b.objs[key]; ok {
		return false, nil
	}
	b.objs[key] = slices.Clone(data)
	return true, nil
}

func (b *recBucket) Put(_ context.Context, key string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log = append(b.log, "put "+key)
	if b.failPut != "" && strings.HasSuffix(key, b.failPut) {
		return errors.New("injected put failure of " + key)
	}
	b.objs[key] = slices.Clone(data)
	return nil
}

func (b *recBucket) Delete(_ context.Context, keys []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range keys {
		b.log = append(b.log, "delete "+k)
		delete(b.objs, k)
	}
	return nil
}

func (b *recBucket) List(_ context.Context, prefix string, _ objstore.ListOptions) iter.Seq2[objstore.Object, error] {
	b.mu.Lock()
	b.log = append(b.log, "list "+prefix)
	var keys []string
	for k := range b.objs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	b.mu.Unlock()
	slices.Sort(keys)
	return func(yield func(objstore.Object, error) bool) {
		for _, k := range keys {
			if !yield(objstore.Object{Key: k}, nil) {
				return
			}
		}
	}
}

func (b *recBucket) has(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.objs[key]
	return ok
}

// ingestS3 ingests files into group g of the S3 datastore st1 over b.
func (s *testStore) ingestS3(t *testing.T, b *recBucket, g datastore.Group, ts string, files ...string) (datastore.Snapshot, error) {
	t.Helper()
	return Ingest(t.Context(), s.store, s.lk, g, files, IngestOptions{ChunkSize: MinChunkSize, Now: at(t, ts),
		S3: &S3Target{Bucket: b, Store: "st1"}}, s.log)
}

// checkS3Objects is the S3 store invariant over b: every chunk of every
// index of the cache exists as an object.
func (s *testStore) checkS3Objects(t *testing.T, b *recBucket) {
	t.Helper()
	storetest.CheckObjects(t, s.base, func(d blob.Digest) bool {
		return b.has("st1/.chunks/" + d.String()[:4] + "/" + d.String())
	})
}

// TestIngestS3Content: an ingest into an S3 datastore uploads what PBS
// uploads to <store>/.cnt/: an empty .namespace marker for every level of
// the namespace, the new group's owner file, each index file and the
// manifest, each object byte for byte the local file. Every chunk is
// uploaded before the first index, the manifest last; a second snapshot
// of the group does not upload the owner again.
func TestIngestS3Content(t *testing.T) {
	s := newTestStore(t)
	b := newRecBucket()
	ns, err := datastore.ParseNamespace("a/b")
	rtest.OK(t, err)
	g := datastore.Group{NS: ns, Type: "vm", ID: "1"}
	snap, err := s.ingestS3(t, b, g, t1, writeSource(t, "disk", 300<<10, 1), writeSource(t, "data", 200<<10, 2))
	rtest.OK(t, err)

	for _, k := range []string{"st1/.cnt/ns/a/.namespace", "st1/.cnt/ns/a/ns/b/.namespace"} {
		got, ok := b.objs[k]
		if !ok || len(got) != 0 {
			t.Errorf("namespace marker %s: present %v, %d bytes", k, ok, len(got))
		}
	}
	var files []string
	gdir := filepath.Join(s.base, g.RelPath())
	rtest.OK(t, filepath.WalkDir(gdir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(s.base, p)
			files = append(files, rel)
		}
		return err
	}))
	slices.Sort(files)
	want := []string{snap.RelPath() + "/data.img.fidx", snap.RelPath() + "/disk.img.fidx", snap.RelPath() + "/index.json.blob", g.RelPath() + "/owner"}
	rtest.Equal(t, "local files", want, files)
	for _, rel := range files {
		local, err := os.ReadFile(filepath.Join(s.base, rel))
		rtest.OK(t, err)
		obj, ok := b.objs[objstore.ContentKey("st1", rel)]
		if !ok || string(obj) != string(local) {
			t.Errorf("object of %s: present %v, %d bytes, local %d bytes", rel, ok, len(obj), len(local))
		}
	}

	firstIndex, lastChunk, manifest := -1, -1, -1
	for i, l := range b.log {
		switch {
		case strings.Contains(l, "/.chunks/"):
			lastChunk = i
		case strings.HasSuffix(l, ".fidx") && firstIndex < 0:
			firstIndex = i
		case strings.HasSuffix(l, "/index.json.blob"):
			manifest = i
		}
	}
	if firstIndex < 0 || lastChunk > firstIndex {
		t.Errorf("chunk upload at %d after the first index upload at %d:\n%s", lastChunk, firstIndex, strings.Join(b.log, "\n"))
	}
	rtest.Equal(t, "manifest upload is the last request", len(b.log)-1, manifest)
	s.checkS3Objects(t, b)

	n := len(b.log)
	_, err = s.ingestS3(t, b, g, t2, writeSource(t, "disk", 100<<10, 3))
	rtest.OK(t, err)
	for _, l := range b.log[n:] {
		if strings.HasSuffix(l, "/owner") {
			t.Errorf("the second snapshot uploaded the owner again: %s", l)
		}
	}
	s.checkS3Objects(t, b)
}

// TestIngestS3UploadFails: a failed manifest upload fails the ingest,
// leaves no local snapshot and deletes the index objects it had uploaded,
// so that no .cnt/ snapshot is left without its local one.
func TestIngestS3UploadFails(t *testing.T) {
	s := newTestStore(t)
	b := newRecBucket()
	b.failPut = "/index.json.blob"
	g := datastore.Group{Type: "vm", ID: "2"}
	_, err := s.ingestS3(t, b, g, t1, writeSource(t, "disk", 200<<10, 4))
	if err == nil || !strings.Contains(err.Error(), "index.json.blob") {
		t.Fatalf("ingest: %v, want the manifest upload's error", err)
	}
	snapRel := g.RelPath() + "/" + t1
	if exists(t, filepath.Join(s.base, snapRel)) {
		t.Errorf("partial snapshot %s left", snapRel)
	}
	for k := range b.objs {
		if strings.HasPrefix(k, objstore.ContentKey("st1", snapRel)) {
			t.Errorf("object %s of the failed snapshot left", k)
		}
	}
	if !slices.Contains(b.log, "delete "+objstore.ContentKey("st1", snapRel+"/disk.img.fidx")) {
		t.Errorf("the uploaded index was not deleted:\n%s", strings.Join(b.log, "\n"))
	}
	s.checkS3Objects(t, b)
}

// TestForgetS3: forgetting a snapshot of an S3 datastore deletes every
// object below <store>/.cnt/<snapshot>/ (also one ingest did not upload)
// before the local directory, keeps the other snapshot's, and removing the
// emptied group deletes its owner object; a protected snapshot keeps its
// objects. A failed delete keeps the local snapshot.
func TestForgetS3(t *testing.T) {
	s := newTestStore(t)
	b := newRecBucket()
	g := datastore.Group{Type: "vm", ID: "3"}
	s1, err := s.ingestS3(t, b, g, t1, writeSource(t, "disk", 100<<10, 5))
	rtest.OK(t, err)
	s2, err := s.ingestS3(t, b, g, t2, writeSource(t, "disk", 100<<10, 6))
	rtest.OK(t, err)
	b.objs[objstore.ContentKey("st1", s1.RelPath()+"/client.log.blob")] = []byte("from PBS")
	target := &S3Target{Bucket: b, Store: "st1"}
	below := func(snap datastore.Snapshot) (n int) {
		for k := range b.objs {
			if strings.HasPrefix(k, objstore.ContentKey("st1", snap.RelPath()+"/")) {
				n++
			}
		}
		return n
	}
	rtest.Equal(t, "objects of the first snapshot", 3, below(s1))

	rtest.OK(t, ForgetS3(t.Context(), s.tree, s.lk, s1, target, s.log))
	rtest.Equal(t, "objects of the forgotten snapshot", 0, below(s1))
	rtest.Equal(t, "objects of the other snapshot", 2, below(s2))
	owner := objstore.ContentKey("st1", g.RelPath()+"/owner")
	if !b.has(owner) {
		t.Error("owner object deleted while the group has a snapshot")
	}
	if exists(t, filepath.Join(s.base, s1.RelPath())) {
		t.Error("local snapshot kept")
	}
	rtest.OK(t, os.WriteFile(filepath.Join(s.base, s2.RelPath(), ".protected"), nil, 0o644))
	if err := ForgetS3(t.Context(), s.tree, s.lk, s2, target, s.log); !errors.Is(err, ErrProtected) {
		t.Fatalf("forget a protected snapshot: %v", err)
	}
	rtest.Equal(t, "objects of the protected snapshot", 2, below(s2))
	rtest.OK(t, os.Remove(filepath.Join(s.base, s2.RelPath(), ".protected")))

	rtest.OK(t, ForgetS3(t.Context(), s.tree, s.lk, s2, target, s.log))
	rtest.Equal(t, "objects of the last snapshot", 0, below(s2))
	if b.has(owner) {
		t.Error("owner object of the removed group kept")
	}
	if exists(t, filepath.Join(s.base, g.RelPath())) {
		t.Error("empty group kept")
	}
	s.checkS3Objects(t, b)
}
