package backup

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"chunkgc/blob"
	"chunkgc/datastore"
	"chunkgc/index"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/locking"
)

// fileChunks cuts the file at p into chunks of size cs.
func fileChunks(t testing.TB, p string, cs int) [][]byte {
	t.Helper()
	data, err := os.ReadFile(p)
	rtest.OK(t, err)
	var chunks [][]byte
	for len(data) > 0 {
		n := min(cs, len(data))
		chunks = append(chunks, data[:n])
		data = data[n:]
	}
	return chunks
}

// readIndex returns the header and digests of the index at p.
func readIndex(t testing.TB, p string) (index.Header, []blob.Digest) {
	t.Helper()
	r, err := index.Open(p)
	rtest.OK(t, err)
	defer r.Close()
	var ds []blob.Digest
	rtest.OK(t, r.Each(func(d *blob.Digest) error {
		ds = append(ds, *d)
		return nil
	}))
	return r.Header(), ds
}

func readManifest(t testing.TB, p string) manifest {
	t.Helper()
	b, err := os.ReadFile(p)
	rtest.OK(t, err)
	js, err := blob.Decode(b)
	rtest.OK(t, err)
	var m manifest
	rtest.OK(t, json.Unmarshal(js, &m))
	return m
}

func TestIngest(t *testing.T) {
	s := newTestStore(t)
	const cs = MinChunkSize
	src := writeSource(t, "drive-scsi0", 5*cs/2, 1) // 3 chunks, the last short
	other := writeSource(t, "drive-scsi1", 4*cs, 2)
	g := datastore.Group{Type: "vm", ID: "100"}
	snap := s.ingest(t, g, t1, src, other)

	dir := filepath.Join(s.base, snap.RelPath())
	owner, err := os.ReadFile(filepath.Join(s.base, "vm/100/owner"))
	rtest.OK(t, err)
	rtest.Equal(t, "owner file", DefaultOwner+"\n", string(owner))

	names, err := datastore.IndexFiles(s.base, snap)
	rtest.OK(t, err)
	rtest.Equal(t, "index files", []string{"drive-scsi0.img.fidx", "drive-scsi1.img.fidx"}, names)

	m := readManifest(t, filepath.Join(dir, manifestName))
	rtest.Equal(t, "manifest type", "vm", m.BackupType)
	rtest.Equal(t, "manifest id", "100", m.BackupID)
	rtest.Equal(t, "manifest time", snap.Time.Unix(), m.BackupTime)
	rtest.Equal(t, "manifest signature", (*string)(nil), m.Signature)
	rtest.Equal(t, "manifest files", 2, len(m.Files))

	for i, p := range []string{src, other} {
		name := filepath.Base(p) + imageSuffix
		hdr, ds := readIndex(t, filepath.Join(dir, name))
		chunks := fileChunks(t, p, cs)
		fi, err := os.Stat(p)
		rtest.OK(t, err)
		rtest.Equal(t, name+" size", uint64(fi.Size()), hdr.Size)
		rtest.Equal(t, name+" chunk size", uint64(cs), hdr.ChunkSize)
		rtest.Equal(t, name+" digests", len(chunks), len(ds))
		for j, c := range chunks {
			if j >= len(ds) {
				break
			}
			if want := blob.Sum(c); ds[j] != want {
				t.Errorf("%s digest %d: want %s, got %s", name, j, want, ds[j])
			}
			b, err := os.ReadFile(s.store.ChunkPath(ds[j]))
			rtest.OK(t, err)
			data, err := blob.Decode(b)
			rtest.OK(t, err)
			if !slices.Equal(c, data) {
				t.Errorf("%s chunk %d: stored data differs", name, j)
			}
		}
		if i < len(m.Files) {
			f := m.Files[i]
			rtest.Equal(t, "manifest filename", name, f.Filename)
			rtest.Equal(t, "manifest size", hdr.Size, f.Size)
			rtest.Equal(t, "manifest csum", hex.EncodeToString(hdr.Csum[:]), f.Csum)
			rtest.Equal(t, "manifest crypt-mode", "none", f.CryptMode)
		}
		rtest.Equal(t, "in scheme", true, datastore.InScheme(snap.RelPath()+"/"+name))
	}

	// The writer registered for the run is gone, and so are the locks.
	_, live, found, err := s.lk.OldestWriter(s.log)
	rtest.OK(t, err)
	rtest.Equal(t, "live writers", 0, live)
	rtest.Equal(t, "writer found", false, found)
	for _, lock := range []func() error{
		func() error {
			l, err := s.lk.LockGroup(t.Context(), nil, "vm", "100", locking.Exclusive, 0)
			if err == nil {
				err = l.Unlock()
			}
			return err
		},
		func() error {
			l, err := s.lk.LockSnapshot(t.Context(), nil, "vm", "100", t1, locking.Exclusive, 0)
			if err == nil {
				err = l.Unlock()
			}
			return err
		},
	} {
		rtest.OK(t, lock())
	}
}

func TestIngestPreExisting(t *testing.T) {
	s := newTestStore(t)
	src := writeSource(t, "disk", 3*MinChunkSize, 3) // chunk 1 is zeros, half of chunk 0 too
	g := datastore.Group{Type: "ct", ID: "7"}
	s.ingest(t, g, t1, src)
	s.ingest(t, g, t2, src)

	created := s.logs.FilterMessage("snapshot created").All()
	rtest.Equal(t, "snapshot created lines", 2, len(created))
	if len(created) != 2 {
		return
	}
	first, second := created[0].ContextMap(), created[1].ContextMap()
	rtest.Equal[any](t, "first: chunks", int64(3), first["chunks"])
	rtest.Equal[any](t, "first: pre-existing", int64(0), first["pre-existing-chunks"])
	rtest.Equal[any](t, "second: chunks", int64(3), second["chunks"])
	rtest.Equal[any](t, "second: new", int64(0), second["new-chunks"])
	rtest.Equal[any](t, "second: pre-existing", int64(3), second["pre-existing-chunks"])

	snaps, err := datastore.ListSnapshots(s.base, g)
	rtest.OK(t, err)
	rtest.Equal(t, "snapshots", 2, len(snaps))
}

func TestIngestChunkSize(t *testing.T) {
	tests := []struct {
		name    string
		give    int
		want    uint64 // chunk size in the index
		wantErr bool
	}{
		{name: "default", give: 0, want: DefaultChunkSize},
		{name: "min", give: 64 << 10, want: 64 << 10},
		{name: "max", give: 16 << 20, want: 16 << 20},
		{name: "1 MiB", give: 1 << 20, want: 1 << 20},
		{name: "too small", give: 32 << 10, wantErr: true},
		{name: "too large", give: 32 << 20, wantErr: true},
		{name: "not a power of two", give: 96 << 10, wantErr: true},
		{name: "negative", give: -1, wantErr: true},
		{name: "odd", give: 1000, wantErr: true},
	}
	s := newTestStore(t)
	src := writeSource(t, "d", 100<<10, 4)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := datastore.Group{Type: "host", ID: "h" + string(rune('a'+i))}
			snap, err := Ingest(t.Context(), s.store, s.lk, g, []string{src}, IngestOptions{ChunkSize: tt.give, Now: at(t, t1)}, s.log)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("chunk size %d accepted", tt.give)
				}
				if !strings.Contains(err.Error(), "chunk size") {
					t.Errorf("error %q does not mention the chunk size", err)
				}
				rtest.Equal(t, "group created", false, exists(t, filepath.Join(s.base, g.RelPath())))
				return
			}
			rtest.OK(t, err)
			hdr, _ := readIndex(t, filepath.Join(s.base, snap.RelPath(), "d"+imageSuffix))
			rtest.Equal(t, "chunk size", tt.want, hdr.ChunkSize)
		})
	}
}

func TestIngestBadArguments(t *testing.T) {
	s := newTestStore(t)
	src := writeSource(t, "disk", 1000, 5)
	twin := filepath.Join(t.TempDir(), "disk")
	rtest.OK(t, os.WriteFile(twin, []byte("x"), 0o644))
	hidden := filepath.Join(t.TempDir(), ".disk")
	rtest.OK(t, os.WriteFile(hidden, []byte("x"), 0o644))
	a, err := datastore.ParseNamespace("a")
	rtest.OK(t, err)
	tests := []struct {
		name  string
		group datastore.Group
		files []string
		opts  IngestOptions
	}{
		{name: "no files", group: datastore.Group{Type: "vm", ID: "1"}},
		{name: "missing file", group: datastore.Group{Type: "vm", ID: "1"}, files: []string{src + ".nope"}},
		{name: "same base name", group: datastore.Group{Type: "vm", ID: "1"}, files: []string{src, twin}},
		{name: "hidden base name", group: datastore.Group{Type: "vm", ID: "1"}, files: []string{hidden}},
		{name: "directory", group: datastore.Group{Type: "vm", ID: "1"}, files: []string{t.TempDir()}},
		{name: "bad type", group: datastore.Group{Type: "qemu", ID: "1"}, files: []string{src}},
		{name: "bad id", group: datastore.Group{Type: "vm", ID: "-1"}, files: []string{src}},
		{name: "namespace mismatch", group: datastore.Group{NS: datastore.Namespace{"b"}, Type: "vm", ID: "1"}, files: []string{src}, opts: IngestOptions{NS: a}},
		{name: "bad namespace", group: datastore.Group{NS: datastore.Namespace{"..", "x"}, Type: "vm", ID: "1"}, files: []string{src}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Now = at(t, t1)
			_, err := Ingest(t.Context(), s.store, s.lk, tt.group, tt.files, tt.opts, s.log)
			if err == nil {
				t.Fatal("Ingest accepted it")
			}
			snaps, lerr := datastore.ListAllSnapshots(s.base)
			rtest.OK(t, lerr)
			rtest.Equal(t, "snapshots", 0, len(snaps))
		})
	}
}

func TestIngestNamespace(t *testing.T) {
	s := newTestStore(t)
	ns, err := datastore.ParseNamespace("a/b")
	rtest.OK(t, err)
	src := writeSource(t, "disk", 1000, 6)
	snap, err := Ingest(t.Context(), s.store, s.lk, datastore.Group{Type: "vm", ID: "1"}, []string{src},
		IngestOptions{NS: ns, Now: at(t, t1)}, s.log)
	rtest.OK(t, err)
	rtest.Equal(t, "path", "ns/a/ns/b/vm/1/"+t1, snap.RelPath())
	nss, err := datastore.ListNamespaces(s.base)
	rtest.OK(t, err)
	rtest.Equal(t, "namespaces", 3, len(nss))
	all, err := datastore.ListAllSnapshots(s.base)
	rtest.OK(t, err)
	if len(all) != 1 || all[0].RelPath() != snap.RelPath() {
		t.Errorf("snapshots: want [%s], got %v", snap.RelPath(), all)
	}
	// The same namespace in the group and in the options is fine.
	snap, err = Ingest(t.Context(), s.store, s.lk, datastore.Group{NS: ns, Type: "vm", ID: "1"}, []string{src},
		IngestOptions{NS: ns, Now: at(t, t2)}, s.log)
	rtest.OK(t, err)
	rtest.Equal(t, "path", "ns/a/ns/b/vm/1/"+t2, snap.RelPath())
}

func TestIngestEmptyFile(t *testing.T) {
	s := newTestStore(t)
	p := filepath.Join(t.TempDir(), "empty")
	rtest.OK(t, os.WriteFile(p, nil, 0o644))
	snap := s.ingest(t, datastore.Group{Type: "vm", ID: "1"}, t1, p)
	hdr, ds := readIndex(t, filepath.Join(s.base, snap.RelPath(), "empty"+imageSuffix))
	rtest.Equal(t, "size", uint64(0), hdr.Size)
	rtest.Equal(t, "digests", 0, len(ds))
}

func TestIngestSnapshotTimeTaken(t *testing.T) {
	s := newTestStore(t)
	src := writeSource(t, "disk", 1000, 7)
	g := datastore.Group{Type: "vm", ID: "1"}
	s.ingest(t, g, t1, src)

	// A fixed clock cannot move on: an error.
	_, err := Ingest(t.Context(), s.store, s.lk, g, []string{src}, IngestOptions{Now: at(t, t1)}, s.log)
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("snapshot time taken: want fs.ErrExist, got %v", err)
	}

	// The real clock: the second ingest waits for the next second if the
	// first took the current one.
	a, err := Ingest(t.Context(), s.store, s.lk, g, []string{src}, IngestOptions{}, s.log)
	rtest.OK(t, err)
	b, err := Ingest(t.Context(), s.store, s.lk, g, []string{src}, IngestOptions{}, s.log)
	rtest.OK(t, err)
	if !b.Time.After(a.Time) {
		t.Errorf("second snapshot %s not after the first %s", b.TimeString(), a.TimeString())
	}
	if a.Time.Nanosecond() != 0 || a.Time.Location() != time.UTC {
		t.Errorf("snapshot time %v not whole seconds in UTC", a.Time)
	}
	snaps, err := datastore.ListSnapshots(s.base, g)
	rtest.OK(t, err)
	rtest.Equal(t, "snapshots", 3, len(snaps))
}

// TestIngestCancelled cancels an ingest half-way: the partial snapshot and
// its lock file are removed, the group and the chunks stored so far stay.
func TestIngestCancelled(t *testing.T) {
	s := newTestStore(t)
	src := writeSource(t, "disk", 4*MinChunkSize, 8)
	g := datastore.Group{Type: "vm", ID: "1"}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	opts := IngestOptions{ChunkSize: MinChunkSize, Now: at(t, t1)}
	fired := 0
	opts.hooks.afterChunk = func(n int) {
		if n == 2 {
			fired++
			cancel()
		}
	}
	_, err := Ingest(ctx, s.store, s.lk, g, []string{src}, opts, s.log)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	rtest.Equal(t, "hook fired", 1, fired)
	rtest.Equal(t, "partial snapshot left", false, exists(t, filepath.Join(s.base, g.RelPath(), t1)))
	rtest.Equal(t, "group kept", true, exists(t, filepath.Join(s.base, g.RelPath(), ownerName)))
	lockFile := filepath.Join(s.lk.Path(), "vm-1-2025\\x2d04\\x2d04T15\\x3a02\\x3a49Z")
	rtest.Equal(t, "snapshot lock file left", false, exists(t, lockFile))

	// The time is free again.
	s.ingest(t, g, t1, src)
}
