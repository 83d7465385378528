package gc

import (
	"encoding/binary"
	"testing"

	"chunkgc/blob"
)

func digestN(i int) blob.Digest {
	var d blob.Digest
	binary.LittleEndian.PutUint64(d[:8], uint64(i)*0x9e3779b97f4a7c15)
	binary.LittleEndian.PutUint64(d[8:16], uint64(i)*0xc2b2ae3d27d4eb4f+1)
	binary.LittleEndian.PutUint64(d[16:], uint64(i))
	return d
}

func TestDigestCacheBounded(t *testing.T) {
	tests := []struct {
		name     string
		capacity int
		inserts  int
	}{
		{"tiny", 1, 100},
		{"small", 100, 10_000},
		{"sharded", 100_000, 1_000_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newDigestCache(tt.capacity)
			for i := range tt.inserts {
				d := digestN(i)
				if c.seenOrAdd(&d) {
					t.Fatalf("digest %d reported seen on first insert", i)
				}
				if n := c.len(); n > tt.capacity+len(c.shards) {
					t.Fatalf("cache holds %d digests, capacity %d", n, tt.capacity)
				}
			}
			// The most recent digests are still there.
			d := digestN(tt.inserts - 1)
			if !c.seenOrAdd(&d) {
				t.Error("most recent digest evicted")
			}
		})
	}
}

func TestDigestCacheHitsAndZero(t *testing.T) {
	c := newDigestCache(1000)
	var zero blob.Digest
	if c.seenOrAdd(&zero) {
		t.Fatal("zero digest seen before insert")
	}
	if !c.seenOrAdd(&zero) {
		t.Fatal("zero digest not remembered")
	}
	for i := range 300 {
		d := digestN(i)
		c.seenOrAdd(&d)
	}
	for i := range 300 {
		d := digestN(i)
		if !c.seenOrAdd(&d) {
			t.Fatalf("digest %d forgotten in a cache that is not full", i)
		}
	}
	disabled := newDigestCache(0)
	d := digestN(1)
	first := disabled.seenOrAdd(&d)
	second := disabled.seenOrAdd(&d)
	if first || second {
		t.Fatal("a disabled cache remembered a digest")
	}
}

// go test -run '^$' -bench DigestCache -benchmem ./gc
func BenchmarkDigestCache(b *testing.B) {
	c := newDigestCache(1 << 20)
	ds := make([]blob.Digest, 1<<16)
	for i := range ds {
		ds[i] = digestN(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.seenOrAdd(&ds[i&(len(ds)-1)])
		i++
	}
}
