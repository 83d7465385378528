package datastore

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
	"chunkgc/index"
	"chunkgc/locking"
)

// fileChunks cuts the file at p into chunks of size cs.
func fileChunks(t testing.TB, p string, cs int) [][]byte {
	t.Helper()
	data, err := os.ReadFile(p)
	ok(t, err)
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
	ok(t, err)
	defer r.Close()
	var ds []blob.Digest
	ok(t, r.Each(func(d *blob.Digest) error {
		ds = append(ds, *d)
		return nil
	}))
	return r.Header(), ds
}

func readManifest(t testing.TB, p string) manifest {
	t.Helper()
	b, err := os.ReadFile(p)
	ok(t, err)
	js, err := blob.Decode(b)
	ok(t, err)
	var m manifest
	ok(t, json.Unmarshal(js, &m))
	return m
}

func TestIngest(t *testing.T) {
	s := newTestStore(t)
	const cs = MinChunkSize
	src := writeSource(t, "drive-scsi0", 5*cs/2, 1) // 3 chunks, the last short
	other := writeSource(t, "drive-scsi1", 4*cs, 2)
	g := Group{Type: "vm", ID: "100"}
	snap := s.ingest(t, g, t1, src, other)

	dir := filepath.Join(s.base, snap.RelPath())
	owner, err := os.ReadFile(filepath.Join(s.base, "vm/100/owner"))
	ok(t, err)
	equal(t, "owner file", DefaultOwner+"\n", string(owner))

	names, err := IndexFiles(s.base, snap)
	ok(t, err)
	equalLists(t, "index files", []string{"drive-scsi0.img.fidx", "drive-scsi1.img.fidx"}, names)

	m := readManifest(t, filepath.Join(dir, manifestName))
	equal(t, "manifest type", "vm", m.BackupType)
	equal(t, "manifest id", "100", m.BackupID)
	equal(t, "manifest time", snap.Time.Unix(), m.BackupTime)
	equal(t, "manifest signature", (*string)(nil), m.Signature)
	equal(t, "manifest files", 2, len(m.Files))

	for i, p := range []string{src, other} {
		name := filepath.Base(p) + imageSuffix
		hdr, ds := readIndex(t, filepath.Join(dir, name))
		chunks := fileChunks(t, p, cs)
		fi, err := os.Stat(p)
		ok(t, err)
		equal(t, name+" size", uint64(fi.Size()), hdr.Size)
		equal(t, name+" chunk size", uint64(cs), hdr.ChunkSize)
		equal(t, name+" digests", len(chunks), len(ds))
		for j, c := range chunks {
			if j >= len(ds) {
				break
			}
			if want := blob.Sum(c); ds[j] != want {
				t.Errorf("%s digest %d: want %s, got %s", name, j, want, ds[j])
			}
			b, err := os.ReadFile(s.store.ChunkPath(ds[j]))
			ok(t, err)
			data, err := blob.Decode(b)
			ok(t, err)
			if !slices.Equal(c, data) {
				t.Errorf("%s chunk %d: stored data differs", name, j)
			}
		}
		if i < len(m.Files) {
			f := m.Files[i]
			equal(t, "manifest filename", name, f.Filename)
			equal(t, "manifest size", hdr.Size, f.Size)
			equal(t, "manifest csum", hex.EncodeToString(hdr.Csum[:]), f.Csum)
			equal(t, "manifest crypt-mode", "none", f.CryptMode)
		}
		equal(t, "in scheme", true, InScheme(snap.RelPath()+"/"+name))
	}

	// The writer registered for the run is gone, and so are the locks.
	_, live, found, err := s.lk.OldestWriter(s.log)
	ok(t, err)
	equal(t, "live writers", 0, live)
	equal(t, "writer found", false, found)
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
		ok(t, lock())
	}
}

func TestIngestPreExisting(t *testing.T) {
	s := newTestStore(t)
	src := writeSource(t, "disk", 3*MinChunkSize, 3) // chunk 1 is zeros, half of chunk 0 too
	g := Group{Type: "ct", ID: "7"}
	s.ingest(t, g, t1, src)
	s.ingest(t, g, t2, src)

	created := s.logs.FilterMessage("snapshot created").All()
	equal(t, "snapshot created lines", 2, len(created))
	if len(created) != 2 {
		return
	}
	first, second := created[0].ContextMap(), created[1].ContextMap()
	equal[any](t, "first: chunks", int64(3), first["chunks"])
	equal[any](t, "first: pre-existing", int64(0), first["pre-existing-chunks"])
	equal[any](t, "second: chunks", int64(3), second["chunks"])
	equal[any](t, "second: new", int64(0), second["new-chunks"])
	equal[any](t, "second: pre-existing", int64(3), second["pre-existing-chunks"])

	snaps, err := ListSnapshots(s.base, g)
	ok(t, err)
	equal(t, "snapshots", 2, len(snaps))
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
			g := Group{Type: "host", ID: "h" + string(rune('a'+i))}
			snap, err := Ingest(t.Context(), s.store, s.lk, g, []string{src}, IngestOptions{ChunkSize: tt.give, Now: at(t, t1)}, s.log)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("chunk size %d accepted", tt.give)
				}
				if !strings.Contains(err.Error(), "chunk size") {
					t.Errorf("error %q does not mention the chunk size", err)
				}
				equal(t, "group created", false, exists(t, filepath.Join(s.base, g.RelPath())))
				return
			}
			ok(t, err)
			hdr, _ := readIndex(t, filepath.Join(s.base, snap.RelPath(), "d"+imageSuffix))
			equal(t, "chunk size", tt.want, hdr.ChunkSize)
		})
	}
}

func TestIngestBadArguments(t *testing.T) {
	s := newTestStore(t)
	src := writeSource(t, "disk", 1000, 5)
	twin := filepath.Join(t.TempDir(), "disk")
	ok(t, os.WriteFile(twin, []byte("x"), 0o644))
	hidden := filepath.Join(t.TempDir(), ".disk")
	ok(t, os.WriteFile(hidden, []byte("x"), 0o644))
	a, err := ParseNamespace("a")
	ok(t, err)
	tests := []struct {
		name  string
		group Group
		files []string
		opts  IngestOptions
	}{
		{name: "no files", group: Group{Type: "vm", ID: "1"}},
		{name: "missing file", group: Group{Type: "vm", ID: "1"}, files: []string{src + ".nope"}},
		{name: "same base name", group: Group{Type: "vm", ID: "1"}, files: []string{src, twin}},
		{name: "hidden base name", group: Group{Type: "vm", ID: "1"}, files: []string{hidden}},
		{name: "directory", group: Group{Type: "vm", ID: "1"}, files: []string{t.TempDir()}},
		{name: "bad type", group: Group{Type: "qemu", ID: "1"}, files: []string{src}},
		{name: "bad id", group: Group{Type: "vm", ID: "-1"}, files: []string{src}},
		{name: "namespace mismatch", group: Group{NS: Namespace{"b"}, Type: "vm", ID: "1"}, files: []string{src}, opts: IngestOptions{NS: a}},
		{name: "bad namespace", group: Group{NS: Namespace{"..", "x"}, Type: "vm", ID: "1"}, files: []string{src}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Now = at(t, t1)
			_, err := Ingest(t.Context(), s.store, s.lk, tt.group, tt.files, tt.opts, s.log)
			if err == nil {
				t.Fatal("Ingest accepted it")
			}
			snaps, lerr := ListAllSnapshots(s.base)
			ok(t, lerr)
			equal(t, "snapshots", 0, len(snaps))
		})
	}
}

func TestIngestNamespace(t *testing.T) {
	s := newTestStore(t)
	ns, err := ParseNamespace("a/b")
	ok(t, err)
	src := writeSource(t, "disk", 1000, 6)
	snap, err := Ingest(t.Context(), s.store, s.lk, Group{Type: "vm", ID: "1"}, []string{src},
		IngestOptions{NS: ns, Now: at(t, t1)}, s.log)
	ok(t, err)
	equal(t, "path", "ns/a/ns/b/vm/1/"+t1, snap.RelPath())
	nss, err := ListNamespaces(s.base)
	ok(t, err)
	equal(t, "namespaces", 3, len(nss))
	all, err := ListAllSnapshots(s.base)
	ok(t, err)
	if len(all) != 1 || all[0].RelPath() != snap.RelPath() {
		t.Errorf("snapshots: want [%s], got %v", snap.RelPath(), all)
	}
	// The same namespace in the group and in the options is fine.
	snap, err = Ingest(t.Context(), s.store, s.lk, Group{NS: ns, Type: "vm", ID: "1"}, []string{src},
		IngestOptions{NS: ns, Now: at(t, t2)}, s.log)
	ok(t, err)
	equal(t, "path", "ns/a/ns/b/vm/1/"+t2, snap.RelPath())
}

func TestIngestEmptyFile(t *testing.T) {
	s := newTestStore(t)
	p := filepath.Join(t.TempDir(), "empty")
	ok(t, os.WriteFile(p, nil, 0o644))
	snap := s.ingest(t, Group{Type: "vm", ID: "1"}, t1, p)
	hdr, ds := readIndex(t, filepath.Join(s.base, snap.RelPath(), "empty"+imageSuffix))
	equal(t, "size", uint64(0), hdr.Size)
	equal(t, "digests", 0, len(ds))
}

func TestIngestSnapshotTimeTaken(t *testing.T) {
	s := newTestStore(t)
	src := writeSource(t, "disk", 1000, 7)
	g := Group{Type: "vm", ID: "1"}
	s.ingest(t, g, t1, src)

	// A fixed clock cannot move on: an error.
	_, err := Ingest(t.Context(), s.store, s.lk, g, []string{src}, IngestOptions{Now: at(t, t1)}, s.log)
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("snapshot time taken: want fs.ErrExist, got %v", err)
	}

	// The real clock: the second ingest waits for the next second if the
	// first took the current one.
	a, err := Ingest(t.Context(), s.store, s.lk, g, []string{src}, IngestOptions{}, s.log)
	ok(t, err)
	b, err := Ingest(t.Context(), s.store, s.lk, g, []string{src}, IngestOptions{}, s.log)
	ok(t, err)
	if !b.Time.After(a.Time) {
		t.Errorf("second snapshot %s not after the first %s", b.TimeString(), a.TimeString())
	}
	if a.Time.Nanosecond() != 0 || a.Time.Location() != time.UTC {
		t.Errorf("snapshot time %v not whole seconds in UTC", a.Time)
	}
	snaps, err := ListSnapshots(s.base, g)
	ok(t, err)
	equal(t, "snapshots", 3, len(snaps))
}

// TestIngestCancelled cancels an ingest half-way: the partial snapshot and
// its lock file are removed, the group and the chunks stored so far stay.
func TestIngestCancelled(t *testing.T) {
	s := newTestStore(t)
	src := writeSource(t, "disk", 4*MinChunkSize, 8)
	g := Group{Type: "vm", ID: "1"}
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
	equal(t, "hook fired", 1, fired)
	equal(t, "partial snapshot left", false, exists(t, filepath.Join(s.base, g.RelPath(), t1)))
	equal(t, "group kept", true, exists(t, filepath.Join(s.base, g.RelPath(), ownerName)))
	lockFile := filepath.Join(s.lk.Path(), "vm-1-2025\\x2d04\\x2d04T15\\x3a02\\x3a49Z")
	equal(t, "snapshot lock file left", false, exists(t, lockFile))

	// The time is free again.
	s.ingest(t, g, t1, src)
}
