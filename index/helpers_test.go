package index

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"chunkgc/blob"
	"chunkgc/internal/testkit/rtest"
)

// testDigests returns n distinct digests; seed separates sets.
func testDigests(n int, seed byte) []blob.Digest {
	ds := make([]blob.Digest, n)
	for i := range ds {
		ds[i][0] = seed
		binary.BigEndian.PutUint64(ds[i][1:], uint64(i))
		for j := 9; j < blob.DigestSize; j++ {
			ds[i][j] = byte(i*31 + j)
		}
	}
	return ds
}

// testEnds returns n non-decreasing end offsets, with a zero-length chunk in
// the middle.
func testEnds(n int) []uint64 {
	ends := make([]uint64, n)
	var end uint64
	for i := range ends {
		if i != n/2 {
			end += uint64(1000 + i*7)
		}
		ends[i] = end
	}
	return ends
}

// refFixed encodes a fixed index straight from the format description, with
// crypto/sha256 rather than the package's code, so that the writers and
// readers are checked against an independent encoder.
func refFixed(uuid [16]byte, ctime int64, size, chunkSize uint64, ds []blob.Digest) []byte {
	b := make([]byte, HeaderSize, HeaderSize+32*len(ds))
	copy(b, []byte{47, 127, 65, 237, 145, 253, 15, 205})
	copy(b[8:], uuid[:])
	binary.LittleEndian.PutUint64(b[24:], uint64(ctime))
	binary.LittleEndian.PutUint64(b[64:], size)
	binary.LittleEndian.PutUint64(b[72:], chunkSize)
	h := sha256.New()
	for _, d := range ds {
		b = append(b, d[:]...)
		h.Write(d[:])
	}
	copy(b[32:64], h.Sum(nil))
	return b
}

// refDynamic encodes a dynamic index like refFixed.
func refDynamic(uuid [16]byte, ctime int64, ends []uint64, ds []blob.Digest) []byte {
	b := make([]byte, HeaderSize, HeaderSize+40*len(ds))
	copy(b, []byte{28, 145, 78, 165, 25, 186, 179, 205})
	copy(b[8:], uuid[:])
	binary.LittleEndian.PutUint64(b[24:], uint64(ctime))
	h := sha256.New()
	for i, d := range ds {
		b = binary.LittleEndian.AppendUint64(b, ends[i])
		b = append(b, d[:]...)
		h.Write(b[len(b)-40:])
	}
	copy(b[32:64], h.Sum(nil))
	return b
}

// memFile is an in-memory io.WriterAt.
type memFile struct{ b []byte }

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if end := int(off) + len(p); end > len(m.b) {
		m.b = slices.Grow(m.b, end-len(m.b))[:end]
	}
	return copy(m.b[off:], p), nil
}

// writeTemp writes b to a file name in a new temporary directory.
func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	rtest.OK(t, os.WriteFile(p, b, 0o644))
	return p
}

// collect returns every digest r.Each yields.
func collect(r *Reader) ([]blob.Digest, error) {
	var got []blob.Digest
	err := r.Each(func(d *blob.Digest) error {
		got = append(got, *d)
		return nil
	})
	return got, err
}
