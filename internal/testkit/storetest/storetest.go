package storetest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"chunkgc/blob"
	"chunkgc/index"
)

// maxReports bounds the lines a check prints, so that a store that lost
// everything does not drown the test log; the rest is summed up.
const maxReports = 100

// maxIndexesPerDigest bounds the indexes listed for one missing chunk.
const maxIndexesPerDigest = 5

// CheckReferenced fails t (t.Errorf, listing each missing digest with the
// index that references it) unless every chunk referenced by every
// .fidx/.didx under base exists as base/.chunks/XXXX/<hex>.
//
// It walks the whole tree under base except base/.chunks, hidden dirs
// included, and opens each index with index.Open. An index that is corrupt
// or vanished is reported with t.Logf and skipped (a test about corrupt
// indexes asserts on removals itself). It returns the number of indexes and
// of references (digests, with repeats) checked.
func CheckReferenced(t testing.TB, base string) (indexes, refs int) {
	t.Helper()
	return CheckReferencedExcept(t, base)
}

// CheckObjects is the store invariant of an S3 datastore whose local cache
// is base: every chunk referenced by every index under base exists as an
// object, as exists (the test's view of the bucket) reports.
func CheckObjects(t testing.TB, base string, exists func(d blob.Digest) bool) (indexes, refs int) {
	t.Helper()
	c := newChecker(t, base)
	c.exists = exists
	return c.run()
}

// CheckReferencedExcept is CheckReferenced for a test that references chunks
// it never stored (a missing-chunk test): each of known that is missing is
// reported with t.Logf instead of failing t. Every other referenced chunk
// must exist.
func CheckReferencedExcept(t testing.TB, base string, known ...blob.Digest) (indexes, refs int) {
	t.Helper()
	c := newChecker(t, base)
	for _, d := range known {
		c.seen[d] = knownMissing
	}
	return c.run()
}

func newChecker(t testing.TB, base string) *checker {
	return &checker{t: t, base: base, chunks: filepath.Join(base, ".chunks"),
		seen: map[blob.Digest]int{}, refBy: map[blob.Digest][]string{}, why: map[blob.Digest]string{}}
}

// run walks the indexes and reports.
func (c *checker) run() (indexes, refs int) {
	t, base := c.t, c.base
	t.Helper()
	fi, err := os.Lstat(base)
	if err != nil {
		t.Errorf("storetest: store %s: %v", base, err)
		return 0, 0
	}
	root := base
	if fi.Mode()&fs.ModeSymlink != 0 {
		root += string(filepath.Separator) // walk the dir the link points to
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != root && errors.Is(err, fs.ErrNotExist) {
				t.Logf("storetest: %s vanished during the check", p)
				return nil
			}
			t.Errorf("storetest: walk %s: %v", p, err)
			return nil
		}
		if p == c.chunks && d.IsDir() {
			return filepath.SkipDir
		}
		if _, ok := index.KindOf(d.Name()); ok {
			c.index(p)
		}
		return nil
	})
	if err != nil {
		t.Errorf("storetest: walk %s: %v", base, err)
	}
	c.report()
	return c.indexes, c.refs
}

// chunkState is what checker.seen knows of a digest.
const (
	present = iota + 1
	missing
	unknown      // stat failed, already reported
	knownMissing // passed to CheckReferencedExcept, not yet looked at
	excused      // passed to CheckReferencedExcept and missing
)

type checker struct {
	t       testing.TB
	base    string
	chunks  string
	indexes int
	refs    int
	buf     []blob.Digest
	seen    map[blob.Digest]int
	// exists, when set, decides instead of a stat of the chunk file.
	exists func(d blob.Digest) bool
	// missing digests in the order found, with the indexes that reference
	// them and why each is missing.
	missing []blob.Digest
	refBy   map[blob.Digest][]string
	why     map[blob.Digest]string
	errs    int
}

// stopped reports whether err, of what, ends the check of an index: a
// corrupt index is skipped, any other error counts as a failure.
func (c *checker) stopped(err error, what string) bool {
	c.t.Helper()
	switch {
	case err == nil:
		return false
	case errors.Is(err, index.ErrCorrupt):
		c.t.Logf("storetest: skipping corrupt index: %v", err)
	default:
		c.errorf("storetest: %s: %v", what, err)
	}
	return true
}

// index checks one index file.
func (c *checker) index(p string) {
	c.t.Helper()
	r, err := index.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		c.t.Logf("storetest: index %s vanished during the check, skipped", p)
		return
	}
	if c.stopped(err, "index "+p) {
		return
	}
	c.buf = c.buf[:0]
	err = r.Each(func(d *blob.Digest) error {
		c.buf = append(c.buf, *d)
		return nil
	})
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	if c.stopped(err, "read index "+p) {
		return
	}
	c.indexes++
	c.refs += len(c.buf)
	for _, d := range c.buf {
		st, ok := c.seen[d]
		if !ok || st == knownMissing {
			st = c.stat(d)
			if ok && st == missing {
				c.t.Logf("storetest: chunk %s referenced by %s is missing, as the test expects", d, p)
				st = excused
			}
			c.seen[d] = st
		}
		if st != missing {
			continue
		}
		by := c.refBy[d]
		if len(by) == 0 {
			c.missing = append(c.missing, d)
		}
		if len(by) == 0 || by[len(by)-1] != p {
			c.refBy[d] = append(by, p)
		}
	}
}

// stat decides whether the chunk of d exists.
func (c *checker) stat(d blob.Digest) int {
	c.t.Helper()
	if c.exists != nil {
		if c.exists(d) {
			return present
		}
		c.why[d] = "has no object"
		return missing
	}
	p := c.chunkPath(d)
	fi, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return missing
	case err != nil:
		c.errorf("storetest: chunk %s: %v", p, err)
		return unknown
	case !fi.Mode().IsRegular():
		c.why[d] = "exists but is not a regular file (" + fi.Mode().String() + ")"
		return missing
	}
	return present
}

func (c *checker) chunkPath(d blob.Digest) string {
	h := d.String()
	return filepath.Join(c.chunks, h[:4], h)
}

// errorf reports through t.Errorf up to maxReports times, then counts.
func (c *checker) errorf(format string, args ...any) {
	c.t.Helper()
	c.errs++
	if c.errs <= maxReports {
		c.t.Errorf(format, args...)
	}
}

// report lists the missing chunks.
func (c *checker) report() {
	c.t.Helper()
	for _, d := range c.missing {
		by := c.refBy[d]
		list := strings.Join(by[:min(len(by), maxIndexesPerDigest)], ", ")
		if len(by) > maxIndexesPerDigest {
			list += ", and " + strconv.Itoa(len(by)-maxIndexesPerDigest) + " more"
		}
		why := c.why[d]
		if why == "" {
			why = "is missing"
		}
		c.errorf("storetest: chunk %s referenced by %s %s (%s)", d, list, why, c.chunkPath(d))
	}
	if c.errs > maxReports {
		c.t.Errorf("storetest: %d more problems in store %s not listed", c.errs-maxReports, c.base)
	}
	if len(c.missing) > 0 {
		c.t.Errorf("storetest: %d referenced chunks missing from store %s (%d indexes, %d references checked)",
			len(c.missing), c.base, c.indexes, c.refs)
	}
}

// CheckNoTmp fails t if any *.tmp_* file is left in .chunks or its XXXX
// prefix dirs under base. A store without .chunks has none.
func CheckNoTmp(t testing.TB, base string) {
	t.Helper()
	chunks := filepath.Join(base, ".chunks")
	entries, err := os.ReadDir(chunks)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Errorf("storetest: %v", err)
		return
	}
	found := 0
	check := func(dir, name string) {
		if strings.Contains(name, ".tmp_") {
			found++
			if found <= maxReports {
				t.Errorf("storetest: temporary file left behind: %s", filepath.Join(dir, name))
			}
		}
	}
	for _, e := range entries {
		check(chunks, e.Name())
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(chunks, e.Name())
		names, err := readNames(dir)
		if err != nil {
			t.Errorf("storetest: %v", err)
			continue
		}
		for _, n := range names {
			check(dir, n)
		}
	}
	if found > maxReports {
		t.Errorf("storetest: %d more temporary files in %s not listed", found-maxReports, chunks)
	}
}

// readNames lists dir without sorting or stat'ing its entries.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read dir %s: %w", dir, err)
	}
	return names, nil
}
