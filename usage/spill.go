package usage

import (
	"bufio"
	"bytes"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"chunkgc/blob"
)

// ref is one reference: a digest and the index (into the report's
// snapshot table) of a snapshot that references it.
type ref struct {
	d    blob.Digest
	snap uint32
}

// refSize is a ref's size in memory and in a run file.
const refSize = blob.DigestSize + 4

func compareRefs(a, b ref) int {
	if c := bytes.Compare(a.d[:], b.d[:]); c != 0 {
		return c
	}
	return cmp.Compare(a.snap, b.snap)
}

// sorter collects refs into a buffer of at most max refs; a full buffer is
// sorted, freed of duplicates and written to a run file in dir, and the
// runs are merged at the end. Below the budget nothing touches the disk.
type sorter struct {
	buf  []ref
	max  int
	dir  string
	runs []*os.File
	// spilled counts the refs written to run files.
	spilled int64
}

func newSorter(budget int64, dir string) *sorter {
	return &sorter{max: int(max(1024, budget/refSize)), dir: dir}
}

func (s *sorter) add(r ref) error {
	if s.buf == nil {
		// All at once, so that growing never holds two buffers; pages
		// not yet written are not resident.
		s.buf = make([]ref, 0, s.max)
	}
	if len(s.buf) == s.max {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.buf = append(s.buf, r)
	return nil
}

// sortBuf sorts the buffer and drops duplicates (an index may list a
// digest many times: a disk's zero chunk).
func (s *sorter) sortBuf() {
	slices.SortFunc(s.buf, compareRefs)
	s.buf = slices.Compact(s.buf)
}

// spill writes the sorted buffer to a new run file, unlinked at once so
// that a crash leaves nothing behind.
func (s *sorter) spill() error {
	s.sortBuf()
	f, err := os.CreateTemp(s.dir, "chunkgc-usage-*.run")
	if err != nil {
		return fmt.Errorf("spill: %w", err)
	}
	os.Remove(f.Name())
	w := bufio.NewWriterSize(f, 1<<20)
	var rec [refSize]byte
	for _, r := range s.buf {
		copy(rec[:], r.d[:])
		binary.LittleEndian.PutUint32(rec[blob.DigestSize:], r.snap)
		if _, err := w.Write(rec[:]); err != nil {
			f.Close()
			return fmt.Errorf("spill %s: %w", f.Name(), err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("spill %s: %w", f.Name(), err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return fmt.Errorf("spill %s: %w", f.Name(), err)
	}
	s.runs = append(s.runs, f)
	s.spilled += int64(len(s.buf))
	s.buf = s.buf[:0]
	return nil
}

func (s *sorter) close() {
	for _, f := range s.runs {
		f.Close()
	}
	s.runs = nil
}

// each calls fn with every ref in order (digest, then snapshot), each
// once: from the buffer when nothing spilled, else by merging the runs
// (the buffer spilled as the last).
func (s *sorter) each(fn func(r ref) error) error {
	if len(s.runs) == 0 {
		s.sortBuf()
		for _, r := range s.buf {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	if len(s.buf) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.buf = nil // the merge needs only a reader per run
	h := make(mergeHeap, 0, len(s.runs))
	for _, f := range s.runs {
		m := &runReader{r: bufio.NewReaderSize(f, 256<<10), name: f.Name()}
		ok, err := m.next()
		if err != nil {
			return err
		}
		if ok {
			h = append(h, m)
		}
	}
	heap.Init(&h)
	var last ref
	first := true
	for h.Len() > 0 {
		m := h[0]
		r := m.cur
		if first || r != last {
			if err := fn(r); err != nil {
				return err
			}
			last, first = r, false
		}
		ok, err := m.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return nil
}

// runReader reads one run file's refs.
type runReader struct {
	r    *bufio.Reader
	name string
	cur  ref
	rec  [refSize]byte
}

func (m *runReader) next() (bool, error) {
	if _, err := io.ReadFull(m.r, m.rec[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read spill %s: %w", m.name, err)
	}
	copy(m.cur.d[:], m.rec[:blob.DigestSize])
	m.cur.snap = binary.LittleEndian.Uint32(m.rec[blob.DigestSize:])
	return true, nil
}

type mergeHeap []*runReader

func (h mergeHeap) Len() int           { return len(h) }
func (h mergeHeap) Less(i, j int) bool { return compareRefs(h[i].cur, h[j].cur) < 0 }
func (h mergeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)        { *h = append(*h, x.(*runReader)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
