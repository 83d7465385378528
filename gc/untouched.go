package gc

import (
	"sync"

	"chunkgc/blob"
)

// maxUntouched bounds the digests phase 1 remembers as referenced but not
// touchable (ENOENT): 262,144 digests are about 20 MiB. A run that finds
// more stops before phase 2 ([errTooManyUntouched]).
const maxUntouched = 1 << 18

// untouchedSet holds the digests of referenced chunks whose touch reported
// ENOENT in phase 1 (SPEC §6.3, issue "a chunk that phase 1 could not touch
// is never swept"): on a flaky network filesystem ENOENT can be a lie, and a
// chunk that exists with an old atime would otherwise be swept although an
// index references it. Phase 2 keeps any chunk (and any bad copy) whose
// digest is in the set. Safe for concurrent use during phase 1; read-only
// (no lock needed) once phase 1 has finished.
type untouchedSet struct {
	limit    int // maxUntouched when 0
	mu       sync.Mutex
	m        map[blob.Digest]struct{}
	overflow bool
}

// add records d; it reports false once the set is full (d is then not
// recorded, and the run must not sweep).
func (s *untouchedSet) add(d blob.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[blob.Digest]struct{})
	}
	if _, ok := s.m[d]; ok {
		return true
	}
	limit := s.limit
	if limit <= 0 {
		limit = maxUntouched
	}
	if len(s.m) >= limit {
		s.overflow = true
		return false
	}
	s.m[d] = struct{}{}
	return true
}

// has reports whether d is in the set. Only after phase 1.
func (s *untouchedSet) has(d *blob.Digest) bool {
	if len(s.m) == 0 {
		return false
	}
	_, ok := s.m[*d]
	return ok
}

// satAdd adds b to a, saturating at the largest uint64 instead of wrapping:
// byte counters add sizes that a corrupt index header or a planted sparse
// file can make huge.
func satAdd(a, b uint64) uint64 {
	if s := a + b; s >= a {
		return s
	}
	return ^uint64(0)
}
