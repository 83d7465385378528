package gc

import (
	"sync"

	"chunkgc/chunkstore"
	"chunkgc/datastore"
)

// markCounts are the phase 1 counters a checkpoint carries, for a group or
// a sum of groups.
type markCounts struct {
	indexFiles, newIndexes int64
	indexBytes             uint64
	missing, hits, lookups int64
	touched                int64
}

func (c *markCounts) add(o *markCounts) {
	c.indexFiles += o.indexFiles
	c.newIndexes += o.newIndexes
	c.indexBytes = satAdd(c.indexBytes, o.indexBytes)
	c.missing += o.missing
	c.hits += o.hits
	c.lookups += o.lookups
	c.touched += o.touched
}

// groupProgress is one group of the walk that is not yet committed.
type groupProgress struct {
	group   datastore.Group
	pending int  // batches sent and not yet fully touched
	walked  bool // the walker finished the group
	c       markCounts
}

// markTracker is phase 1's low-water mark. The walker numbers the groups
// in walk order; each batch carries its group's number, and a group is
// committed once the walker finished it, every batch of it was touched to
// the end, and every group before it is committed. A batch dropped by a
// cancellation never finishes, so its group and all after it stay
// uncommitted: the checkpoint never claims a touch that did not happen.
type markTracker struct {
	mu        sync.Mutex
	next      int // number of the next group begin hands out
	low       int // groups below low are committed
	open      map[int]*groupProgress
	committed markCounts
	done      []uint64            // groupHash of every committed group
	inDone    map[uint64]struct{} // the same, as a set
	onCommit  func(n int)         // test hook: hooks.afterCommitted
}

func newMarkTracker(base markCounts, done []uint64) *markTracker {
	t := &markTracker{open: make(map[int]*groupProgress), committed: base, inDone: make(map[uint64]struct{})}
	for _, h := range done {
		t.commit(h)
	}
	return t
}

// begin numbers the next group of the walk.
func (t *markTracker) begin(g datastore.Group) int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.next
	t.next++
	t.open[n] = &groupProgress{group: g}
	return n
}

// sent counts a batch of group n handed to a touch worker.
func (t *markTracker) sent(n int) {
	if t == nil || n < 0 {
		return
	}
	t.mu.Lock()
	t.open[n].pending++
	t.mu.Unlock()
}

// finished counts a batch of group n touched to its end, with its counters.
func (t *markTracker) finished(n int, c *markCounts) {
	if t == nil || n < 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.open[n]
	g.pending--
	g.c.add(c)
	t.advance()
}

// walked records that the walker finished group n with the walker-side
// counters c (index files, their bytes, new index files).
func (t *markTracker) walked(n int, c markCounts) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.open[n]
	g.walked = true
	g.c.add(&c)
	t.advance()
}

// commit adds h to the set of committed groups (a resumed run commits
// again the groups its checkpoint had).
func (t *markTracker) commit(h uint64) {
	if _, ok := t.inDone[h]; !ok {
		t.inDone[h] = struct{}{}
		t.done = append(t.done, h)
	}
}

func (t *markTracker) advance() {
	for {
		g, ok := t.open[t.low]
		if !ok || !g.walked || g.pending > 0 {
			return
		}
		t.committed.add(&g.c)
		t.commit(groupHash(g.group))
		delete(t.open, t.low)
		if t.onCommit != nil {
			t.onCommit(t.low)
		}
		t.low++
	}
}

// snapshot returns the committed counters, the committed groups' set and
// the first uncommitted group ("" when none is open).
func (t *markTracker) snapshot() (markCounts, string, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := ""
	if g, ok := t.open[t.low]; ok {
		next = g.group.RelPath()
	}
	return t.committed, encodeGroups(t.done), next
}

// sweepTracker is phase 2's low-water mark: prefix dirs are taken in order
// but finish in any order; low is the first dir not finished, and the
// counters of the dirs below it are committed.
type sweepTracker struct {
	mu        sync.Mutex
	low       int
	finished  map[int]sweepCounts // dirs at or above low that finished
	committed sweepCounts
}

func newSweepTracker(start int, base sweepCounts) *sweepTracker {
	return &sweepTracker{low: start, finished: make(map[int]sweepCounts), committed: base}
}

// finish records that prefix dir p was swept to its end with counters c.
func (t *sweepTracker) finish(p int, c *sweepCounts) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.finished[p] = *c
	for {
		fc, ok := t.finished[t.low]
		if !ok {
			return
		}
		t.committed.add(&fc)
		delete(t.finished, t.low)
		t.low++
	}
}

// snapshot returns the low-water mark and the counters below it.
func (t *sweepTracker) snapshot() (int, sweepCounts) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return min(t.low, chunkstore.PrefixCount), t.committed
}
