package index

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/index")

// goldenDir holds small index files checked byte for byte, so that a change
// of the on-disk format cannot pass unnoticed. Regenerate with
//
//	go test -run Golden -update ./index
const goldenDir = "../testdata/index"

// zeroChunk is the digest of 4 MiB of zero bytes (SPEC §2).
const zeroChunk = "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"

func goldenDigests(t *testing.T) []blob.Digest {
	t.Helper()
	z, err := blob.ParseDigest(zeroChunk)
	rtest.OK(t, err)
	return []blob.Digest{z, blob.Sum([]byte("chunkgc golden 1")), blob.Sum([]byte("chunkgc golden 2")), z}
}

func TestGolden(t *testing.T) {
	ds := goldenDigests(t)
	const chunk = 4 << 20
	fixedSize := uint64(3*chunk + 12345)
	ends := []uint64{1000, 5000, 5000, 70000}
	tests := []struct {
		name      string
		write     func(m *memFile) error
		ref       []byte
		wantHdr   Header
		wantBytes uint64
	}{
		{
			name: "small.fidx",
			write: func(m *memFile) error {
				w := NewFixedWriter(m, fixedSize, chunk, testUUID, testCTime)
				for _, d := range ds {
					if err := w.Add(d); err != nil {
						return err
					}
				}
				return w.Close()
			},
			ref:       refFixed(testUUID, testCTime, fixedSize, chunk, ds),
			wantHdr:   Header{Kind: Fixed, UUID: testUUID, CTime: testCTime, Size: fixedSize, ChunkSize: chunk},
			wantBytes: fixedSize,
		},
		{
			name: "small.didx",
			write: func(m *memFile) error {
				w := NewDynamicWriter(m, testUUID, testCTime)
				for i, d := range ds {
					if err := w.Add(ends[i], d); err != nil {
						return err
					}
				}
				return w.Close()
			},
			ref:       refDynamic(testUUID, testCTime, ends, ds),
			wantHdr:   Header{Kind: Dynamic, UUID: testUUID, CTime: testCTime},
			wantBytes: 70000,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &memFile{}
			rtest.OK(t, tt.write(m))
			if !bytes.Equal(tt.ref, m.b) {
				t.Fatalf("writer output differs from the reference encoding at byte %d", firstDiff(tt.ref, m.b))
			}
			path := filepath.Join(goldenDir, tt.name)
			if *update {
				rtest.OK(t, os.MkdirAll(goldenDir, 0o755))
				rtest.OK(t, os.WriteFile(path, m.b, 0o644))
			}
			golden, err := os.ReadFile(path)
			rtest.OK(t, err)
			if !bytes.Equal(golden, m.b) {
				t.Errorf("%s (%d bytes) differs from the writer's output (%d bytes) at byte %d; "+
					"if the change is intended, run go test -run Golden -update ./index", path, len(golden), len(m.b), firstDiff(golden, m.b))
				reportDigestDiff(t, path, golden, ds)
			}

			r, err := Open(path)
			rtest.OK(t, err)
			defer r.Close()
			want := tt.wantHdr
			want.Csum = [32]byte(tt.ref[32:64])
			rtest.Equal(t, "header", want, r.Header())
			rtest.Equal(t, "DataBytes", tt.wantBytes, r.DataBytes())
			got, err := collect(r)
			rtest.OK(t, err)
			if !slices.Equal(ds, got) {
				reportDigestDiff(t, path, golden, ds)
			}
		})
	}
}

// reportDigestDiff lists the digests missing from and extra in the golden
// file, when it can be read at all.
func reportDigestDiff(t *testing.T, path string, golden []byte, want []blob.Digest) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(golden), int64(len(golden)), path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	var got []blob.Digest
	err = r.Each(func(d *blob.Digest) error { got = append(got, *d); return nil })
	if err != nil {
		t.Errorf("%s: %v", path, err)
	}
	for _, d := range want {
		if !slices.Contains(got, d) {
			t.Errorf("%s: missing digest %s", path, d)
		}
	}
	for _, d := range got {
		if !slices.Contains(want, d) {
			t.Errorf("%s: extra digest %s", path, d)
		}
	}
	if !slices.Equal(want, got) {
		t.Errorf("%s: digests in order %v, want %v", path, got, want)
	}
}
