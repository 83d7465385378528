package gc

import (
	"encoding/binary"
	"math/bits"
	"sync"

	"chunkgc/blob"
)

// digestCache remembers digests already touched in this run so phase 1 does
// not touch a deduplicated chunk once per reference. It is bounded: at most
// capacity digests are kept, in two generations per shard; when the current
// generation fills up it becomes the old one and the previous old one is
// dropped, so recently seen digests survive (an approximation of LRU without
// per-entry links). Safe for concurrent use; shards keep workers apart.
//
// The cache only ever saves work: a digest evicted early is touched again.
type digestCache struct {
	shards []cacheShard
	mask   uint64
}

type cacheShard struct {
	mu       sync.Mutex
	cur, old digestTable
	genCap   int
	_        [40]byte // keep hot shard locks on separate cache lines
}

// newDigestCache returns a cache of at most capacity digests; capacity 0
// returns nil, which disables caching (every lookup misses).
func newDigestCache(capacity int) *digestCache {
	if capacity <= 0 {
		return nil
	}
	n := 64
	for n > 1 && capacity/n < 512 {
		n /= 2
	}
	genCap := max(capacity/n/2, 1)
	c := &digestCache{shards: make([]cacheShard, n), mask: uint64(n - 1)}
	for i := range c.shards {
		c.shards[i].genCap = genCap
		c.shards[i].cur.init(genCap)
	}
	return c
}

// seenOrAdd reports whether d was already in the cache, adding it if not.
func (c *digestCache) seenOrAdd(d *blob.Digest) bool {
	if c == nil {
		return false
	}
	h := binary.LittleEndian.Uint64(d[8:16])
	s := &c.shards[binary.LittleEndian.Uint64(d[:8])&c.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.contains(d, h) {
		return true
	}
	hit := s.old.contains(d, h)
	if s.cur.n >= s.genCap {
		s.old, s.cur = s.cur, s.old
		if s.cur.slots == nil {
			s.cur.init(s.genCap)
		} else {
			s.cur.clear() // keeps the grown table: the next generation fills it too
		}
	}
	s.cur.add(d, h)
	return hit
}

// len returns the number of digests held (both generations); for tests.
func (c *digestCache) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += s.cur.n + s.old.n
		s.mu.Unlock()
	}
	return n
}

// digestTable is an open-addressing set of digests with linear probing,
// 32 bytes a slot. It starts small and grows up to maxSlots, sized so the
// load stays <= 3/4 at the generation's capacity: a full 1M-digest cache
// costs ~43 MiB, a small store's cache only what it holds. Slots are found by
// fast range reduction (hash * size >> 64), so sizes need not be powers of
// two. The all-zero digest marks an empty slot; the real all-zero digest
// (never seen in practice) is tracked by hasZero.
type digestTable struct {
	slots    []blob.Digest
	maxSlots int
	n        int
	hasZero  bool
}

const minSlots = 256

func (t *digestTable) init(capacity int) {
	t.maxSlots = capacity*4/3 + 1
	t.slots = make([]blob.Digest, min(minSlots, t.maxSlots))
	t.n = 0
	t.hasZero = false
}

func (t *digestTable) clear() {
	clear(t.slots)
	t.n = 0
	t.hasZero = false
}

func (t *digestTable) slot(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(t.slots)))
	return int(hi)
}

func (t *digestTable) contains(d *blob.Digest, h uint64) bool {
	if t.slots == nil {
		return false
	}
	if *d == (blob.Digest{}) {
		return t.hasZero
	}
	for i := t.slot(h); ; {
		switch t.slots[i] {
		case *d:
			return true
		case blob.Digest{}:
			return false
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

func (t *digestTable) add(d *blob.Digest, h uint64) {
	if *d == (blob.Digest{}) {
		if !t.hasZero {
			t.hasZero = true
			t.n++
		}
		return
	}
	if (t.n+1)*4 > len(t.slots)*3 && len(t.slots) < t.maxSlots {
		t.grow()
	}
	t.insert(d, h)
}

func (t *digestTable) insert(d *blob.Digest, h uint64) {
	for i := t.slot(h); ; {
		switch t.slots[i] {
		case *d:
			return
		case blob.Digest{}:
			t.slots[i] = *d
			t.n++
			return
		}
		if i++; i == len(t.slots) {
			i = 0
		}
	}
}

// grow rehashes into a table twice the size (at most maxSlots).
func (t *digestTable) grow() {
	old := t.slots
	t.slots = make([]blob.Digest, min(2*len(old), t.maxSlots))
	n := t.n
	for i := range old {
		if old[i] != (blob.Digest{}) {
			t.insert(&old[i], binary.LittleEndian.Uint64(old[i][8:16]))
		}
	}
	t.n = n // insert counted the re-inserted digests again
}
