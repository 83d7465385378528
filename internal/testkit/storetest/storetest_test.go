package storetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/testfs"

	"chunkgc/blob"
	"chunkgc/index"
)

// fakeTB records what a check reports instead of failing the real test; the
// embedded testing.TB serves everything else.
type fakeTB struct {
	testing.TB
	errors []string
	logs   []string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Error(args ...any) { f.errors = append(f.errors, fmt.Sprint(args...)) }

func (f *fakeTB) Logf(format string, args ...any) {
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Log(args ...any) { f.logs = append(f.logs, fmt.Sprint(args...)) }

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.TB.Fatalf("storetest called Fatalf, which must not run in t.Cleanup of other goroutines: "+format, args...)
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// store is a small datastore fixture.
type store struct {
	t    *testing.T
	base string
}

func newStore(t *testing.T) *store {
	return &store{t: t, base: filepath.Join(t.TempDir(), "store")}
}

func digest(s string) blob.Digest { return blob.Sum([]byte(s)) }

func (s *store) chunkPath(d blob.Digest) string {
	h := d.String()
	return filepath.Join(s.base, ".chunks", h[:4], h)
}

func (s *store) chunk(ds ...blob.Digest) {
	s.t.Helper()
	for _, d := range ds {
		p := s.chunkPath(d)
		ok(s.t, os.MkdirAll(filepath.Dir(p), 0o750))
		ok(s.t, os.WriteFile(p, []byte("blob"), 0o644))
	}
}

func (s *store) fixed(rel string, ds ...blob.Digest) string {
	s.t.Helper()
	p := filepath.Join(s.base, rel)
	ok(s.t, os.MkdirAll(filepath.Dir(p), 0o755))
	ok(s.t, index.WriteFixedFile(p, uint64(len(ds))*4096, 4096, ds))
	return p
}

func (s *store) dynamic(rel string, ds ...blob.Digest) string {
	s.t.Helper()
	p := filepath.Join(s.base, rel)
	ok(s.t, os.MkdirAll(filepath.Dir(p), 0o755))
	ends := make([]uint64, len(ds))
	for i := range ends {
		ends[i] = uint64(i+1) * 1000
	}
	ok(s.t, index.WriteDynamicFile(p, ends, ds))
	return p
}

// populate builds a store whose indexes reference a..e and returns them.
func populate(s *store) (a, b, c, d, e blob.Digest) {
	a, b, c, d, e = digest("a"), digest("b"), digest("c"), digest("d"), digest("e")
	s.chunk(a, b, c, d, e)
	s.fixed("vm/100/2025-04-04T15:02:49Z/drive-scsi0.img.fidx", a, b, a)
	s.dynamic("ns/x/ns/y/ct/101/2025-04-04T15:02:49Z/root.pxar.didx", b, c)
	s.fixed(".hidden/stray.fidx", d)
	s.dynamic("host/h/.2025-04-04T15:02:49Z.tmp/catalog.pcat1.didx", e)
	return
}

func TestCheckReferencedPasses(t *testing.T) {
	s := newStore(t)
	populate(s)
	// An index inside .chunks is not part of the store and is not read.
	ok(t, os.WriteFile(filepath.Join(s.base, ".chunks", "not-an-index.fidx"), []byte("garbage"), 0o644))
	s.fixed(".chunks/0000/x.fidx", digest("nowhere"))

	f := &fakeTB{TB: t}
	indexes, refs := CheckReferenced(f, s.base)
	if len(f.errors) != 0 {
		t.Errorf("CheckReferenced failed a complete store: %q", f.errors)
	}
	if indexes != 4 || refs != 7 {
		t.Errorf("CheckReferenced checked %d indexes and %d references, want 4 and 7", indexes, refs)
	}
	CheckReferenced(t, s.base) // and the real thing agrees

	// A store reached through a symlink is walked too.
	link := filepath.Join(t.TempDir(), "link")
	ok(t, os.Symlink(s.base, link))
	indexes, refs = CheckReferenced(f, link)
	if len(f.errors) != 0 || indexes != 4 || refs != 7 {
		t.Errorf("through a symlink: %d indexes, %d refs, errors %q", indexes, refs, f.errors)
	}
}

func TestCheckReferencedReportsMissing(t *testing.T) {
	tests := []struct {
		name       string
		remove     func(s *store, a, b, c, d, e blob.Digest) blob.Digest // returns the lost digest
		wantIndex  []string                                              // indexes named in the report
		wantReason string
	}{
		{
			name: "chunk of two indexes",
			remove: func(s *store, a, b, c, d, e blob.Digest) blob.Digest {
				ok(s.t, os.Remove(s.chunkPath(b)))
				return b
			},
			wantIndex:  []string{"drive-scsi0.img.fidx", "root.pxar.didx"},
			wantReason: "is missing",
		},
		{
			name: "chunk of an index in a hidden dir",
			remove: func(s *store, a, b, c, d, e blob.Digest) blob.Digest {
				ok(s.t, os.Remove(s.chunkPath(d)))
				return d
			},
			wantIndex:  []string{".hidden/stray.fidx"},
			wantReason: "is missing",
		},
		{
			name: "chunk replaced by a directory",
			remove: func(s *store, a, b, c, d, e blob.Digest) blob.Digest {
				ok(s.t, os.Remove(s.chunkPath(e)))
				ok(s.t, os.Mkdir(s.chunkPath(e), 0o755))
				return e
			},
			wantIndex:  []string{"catalog.pcat1.didx"},
			wantReason: "not a regular file",
		},
		{
			name: "chunk replaced by a symlink",
			remove: func(s *store, a, b, c, d, e blob.Digest) blob.Digest {
				ok(s.t, os.Rename(s.chunkPath(a), s.chunkPath(a)+".elsewhere"))
				ok(s.t, os.Symlink(s.chunkPath(a)+".elsewhere", s.chunkPath(a)))
				return a
			},
			wantIndex:  []string{"drive-scsi0.img.fidx"},
			wantReason: "not a regular file",
		},
		{
			name: "whole prefix dir",
			remove: func(s *store, a, b, c, d, e blob.Digest) blob.Digest {
				ok(s.t, os.RemoveAll(filepath.Dir(s.chunkPath(c))))
				return c
			},
			wantIndex:  []string{"root.pxar.didx"},
			wantReason: "is missing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			a, b, c, d, e := populate(s)
			lost := tt.remove(s, a, b, c, d, e)
			f := &fakeTB{TB: t}
			indexes, refs := CheckReferenced(f, s.base)
			if indexes != 4 || refs != 7 {
				t.Errorf("checked %d indexes and %d references, want 4 and 7", indexes, refs)
			}
			// One line for the chunk, one summary line.
			if len(f.errors) != 2 {
				t.Fatalf("want 2 errors (the chunk and a summary), got %q", f.errors)
			}
			msg := f.errors[0]
			for _, want := range append([]string{lost.String(), tt.wantReason}, tt.wantIndex...) {
				if !strings.Contains(msg, want) {
					t.Errorf("report %q does not contain %q", msg, want)
				}
			}
			if !strings.Contains(f.errors[1], "1 referenced chunks missing") {
				t.Errorf("summary %q does not count 1 missing chunk", f.errors[1])
			}
		})
	}
}

func TestCheckReferencedSkipsCorrupt(t *testing.T) {
	s := newStore(t)
	populate(s)
	bad := filepath.Join(s.base, "vm/100/2025-04-04T15:02:49Z/broken.fidx")
	ok(t, os.WriteFile(bad, []byte("not an index"), 0o644))
	// A corrupt body (checksum mismatch) that references a missing chunk:
	// skipped, not reported as missing.
	p := s.fixed("vm/100/2025-04-05T00:00:00Z/drive-scsi0.img.fidx", digest("gone"))
	b, err := os.ReadFile(p)
	ok(t, err)
	b[40] ^= 1
	ok(t, os.WriteFile(p, b, 0o644))

	f := &fakeTB{TB: t}
	indexes, _ := CheckReferenced(f, s.base)
	if len(f.errors) != 0 {
		t.Errorf("corrupt indexes should be logged, not failed: %q", f.errors)
	}
	if indexes != 4 {
		t.Errorf("checked %d indexes, want the 4 good ones", indexes)
	}
	logs := strings.Join(f.logs, "\n")
	for _, want := range []string{bad, "bad magic", p, "checksum mismatch"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs %q do not mention %q", logs, want)
		}
	}
}

func TestCheckReferencedFollowsIndexSymlink(t *testing.T) {
	s := newStore(t)
	populate(s)
	outside := filepath.Join(t.TempDir(), "outside.fidx")
	ok(t, index.WriteFixedFile(outside, 4096, 4096, []blob.Digest{digest("missing")}))
	ok(t, os.Symlink(outside, filepath.Join(s.base, "vm/100/link.fidx")))
	f := &fakeTB{TB: t}
	CheckReferenced(f, s.base)
	if len(f.errors) == 0 || !strings.Contains(f.errors[0], "link.fidx") {
		t.Errorf("a chunk missing for a symlinked index was not reported: %q", f.errors)
	}
}

func TestCheckReferencedStoreMissing(t *testing.T) {
	f := &fakeTB{TB: t}
	base := filepath.Join(t.TempDir(), "nope")
	CheckReferenced(f, base)
	if len(f.errors) != 1 || !strings.Contains(f.errors[0], base) {
		t.Errorf("a missing store must fail the check naming it, got %q", f.errors)
	}
}

func TestCheckReferencedEmptyStore(t *testing.T) {
	s := newStore(t)
	ok(t, os.MkdirAll(filepath.Join(s.base, ".chunks", "0000"), 0o750))
	f := &fakeTB{TB: t}
	indexes, refs := CheckReferenced(f, s.base)
	if len(f.errors) != 0 || indexes != 0 || refs != 0 {
		t.Errorf("empty store: %d indexes, %d refs, errors %q", indexes, refs, f.errors)
	}
}

func TestCheckReferencedManyMissing(t *testing.T) {
	s := newStore(t)
	ds := make([]blob.Digest, 3*maxReports)
	for i := range ds {
		ds[i] = digest(fmt.Sprint(i))
	}
	s.fixed("vm/1/2025-04-04T15:02:49Z/a.fidx", ds...)
	f := &fakeTB{TB: t}
	_, refs := CheckReferenced(f, s.base)
	if refs != len(ds) {
		t.Errorf("checked %d references, want %d", refs, len(ds))
	}
	// maxReports chunk lines, "more problems", the summary.
	if len(f.errors) != maxReports+2 {
		t.Fatalf("want %d errors, got %d", maxReports+2, len(f.errors))
	}
	if !strings.Contains(f.errors[maxReports], "200 more problems") ||
		!strings.Contains(f.errors[maxReports+1], "300 referenced chunks missing") {
		t.Errorf("summary lines: %q", f.errors[maxReports:])
	}
}

func TestCheckNoTmp(t *testing.T) {
	s := newStore(t)
	f := &fakeTB{TB: t}
	CheckNoTmp(f, s.base) // no store at all: nothing left behind
	if len(f.errors) != 0 {
		t.Errorf("store without .chunks: %q", f.errors)
	}

	populate(s)
	ok(t, os.MkdirAll(filepath.Join(s.base, ".chunks", "ffff"), 0o750))
	CheckNoTmp(f, s.base)
	if len(f.errors) != 0 {
		t.Errorf("clean store: %q", f.errors)
	}
	CheckNoTmp(t, s.base)

	tmp := s.chunkPath(digest("a")) + ".tmp_123456"
	ok(t, os.WriteFile(tmp, nil, 0o644))
	top := filepath.Join(s.base, ".chunks", "x.tmp_1")
	ok(t, os.WriteFile(top, nil, 0o644))
	CheckNoTmp(f, s.base)
	if len(f.errors) != 2 {
		t.Fatalf("want 2 errors, got %q", f.errors)
	}
	all := strings.Join(f.errors, "\n")
	for _, want := range []string{tmp, top} {
		if !strings.Contains(all, want) {
			t.Errorf("errors %q do not name %s", all, want)
		}
	}
}

func TestCheckReferencedExcept(t *testing.T) {
	s := newStore(t)
	a, _, _, _, _ := populate(s)
	never, lost := digest("never stored"), a
	s.fixed("vm/200/2025-04-04T15:02:49Z/drive-scsi0.img.fidx", never, never)
	f := &fakeTB{TB: t}
	CheckReferencedExcept(f, s.base, never)
	if len(f.errors) != 0 || !strings.Contains(strings.Join(f.logs, "\n"), never.String()) {
		t.Errorf("a known-missing chunk must be logged, not failed: errors %q, logs %q", f.errors, f.logs)
	}

	ok(t, os.Remove(s.chunkPath(lost)))
	f = &fakeTB{TB: t}
	CheckReferencedExcept(f, s.base, never)
	if len(f.errors) != 2 || !strings.Contains(f.errors[0], lost.String()) || strings.Contains(strings.Join(f.errors, "\n"), never.String()) {
		t.Errorf("want only the lost chunk %s reported, got %q", lost, f.errors)
	}
}

func TestVictimNoticesChanges(t *testing.T) {
	testfs.RequireRoot(t)
	for _, c := range []struct {
		name   string
		change func(dir string) error
	}{
		{"touch", func(d string) error {
			return unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(d, "bb9f", VictimDigest), []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}, 0)
		}},
		{"remove", func(d string) error { return os.Remove(filepath.Join(d, "gc")) }},
		{"create", func(d string) error { return os.WriteFile(filepath.Join(d, "new"), nil, 0o644) }},
		{"chown", func(d string) error { return os.Lchown(filepath.Join(d, "vm-100"), BackupUID, BackupGID) }},
		{"list", func(d string) error { _, err := os.ReadDir(filepath.Join(d, "writers")); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := NewVictim(t)
			v.Check(t) // unchanged: no error
			if err := c.change(v.Dir); err != nil {
				t.Fatal(err)
			}
			ft := &fakeTB{TB: t}
			v.Check(ft)
			if len(ft.errors) == 0 {
				t.Errorf("Check missed a %s in the victim tree", c.name)
			}
		})
	}
}

func TestAsBackupIsUnprivileged(t *testing.T) {
	testfs.RequireRoot(t)
	v := NewVictim(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	AsBackup(t, dir, `test "$(id -u)" = 34 && ln -s `+v.Dir+` link && ! rm -f `+v.Dir+`/gc 2>/dev/null && ! touch `+v.Dir+`/gc 2>/dev/null`)
	if fi, err := os.Lstat(filepath.Join(dir, "link")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != BackupUID {
		t.Fatalf("planted link: %v", err)
	}
	stop := StartAsBackup(t, dir, `while :; do sleep 0.01; done`, time.Minute)
	stop()
	v.Check(t)
}
