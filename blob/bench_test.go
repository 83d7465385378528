package blob

import (
	"crypto/sha256"
	"testing"
)

// BenchmarkSum compares sha256-simd (behind Sum) with crypto/sha256, which
// has used SHA-NI on amd64 since Go 1.21, on one 4 MiB chunk. Compare with
// benchstat over at least 10 runs:
//
//	go test -run '^$' -bench Sum -count 10 -cpu 2 ./blob
func BenchmarkSum(b *testing.B) {
	data := randomBytes(ZeroChunkSize, 1)
	b.Run("sha256-simd", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			Sum(data)
		}
	})
	b.Run("crypto-sha256", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			sha256.Sum256(data)
		}
	})
}

// benchChunks are 4 MiB chunks of zeros (the probe chunk), text (compresses
// about 3:1) and random bytes (incompressible: Encode compresses, then falls
// back to an uncompressed blob).
var benchChunks = []struct {
	name string
	make func() []byte
}{
	{"zeros", func() []byte { return make([]byte, ZeroChunkSize) }},
	{"text", func() []byte { return text(ZeroChunkSize, 1) }},
	{"random", func() []byte { return randomBytes(ZeroChunkSize, 1) }},
}

// go test -run '^$' -bench Encode -count 10 -cpu 2 ./blob
func BenchmarkEncode(b *testing.B) {
	for _, c := range benchChunks {
		data := c.make()
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Encode(data, true); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "chunks/s")
		})
	}
}

// go test -run '^$' -bench Decode -count 10 -cpu 2 ./blob
func BenchmarkDecode(b *testing.B) {
	for _, c := range benchChunks {
		data := c.make()
		blob, err := Encode(data, true)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(blob); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "chunks/s")
		})
	}
}
