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

	"chunkgc/blob"
	"chunkgc/index"
	"chunkgc/internal/testkit/rtest"
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

// digest is the digest of a chunk no store holds.
func digest(s string) blob.Digest { return blob.Sum([]byte(s)) }

// fixed writes the fixed index rel (a path below base) referencing ds.
func fixed(s *Store, rel string, ds ...blob.Digest) string {
	s.t.Helper()
	return s.Snapshot(filepath.Dir(rel), filepath.Base(rel), ds...)
}

// populate builds a store whose indexes reference the chunks a..e (a twice
// in one index, b from two) and returns their digests.
func populate(t *testing.T) (s *Store, a, b, c, d, e blob.Digest) {
	t.Helper()
	s = Build(t, Sparse(),
		Chunk("a"), Chunk("b"), Chunk("c"), Chunk("d"), Chunk("e"),
		Snapshot("vm/100/2025-04-04T15:02:49Z", "drive-scsi0.img.fidx", "a", "b", "a"),
		Snapshot("ns/x/ns/y/ct/101/2025-04-04T15:02:49Z", "root.pxar.didx", "b", "c"),
		Snapshot(".hidden", "stray.fidx", "d"),
		Snapshot("host/h/.2025-04-04T15:02:49Z.tmp", "catalog.pcat1.didx", "e"))
	return s, s.Digest("a"), s.Digest("b"), s.Digest("c"), s.Digest("d"), s.Digest("e")
}

func TestCheckReferencedPasses(t *testing.T) {
	s, _, _, _, _, _ := populate(t)
	// An index inside .chunks is not part of the store and is not read.
	rtest.OK(t, os.WriteFile(filepath.Join(s.base, ".chunks", "not-an-index.fidx"), []byte("garbage"), 0o644))
	fixed(s, ".chunks/0000/x.fidx", digest("nowhere"))

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
	rtest.OK(t, os.Symlink(s.base, link))
	indexes, refs = CheckReferenced(f, link)
	if len(f.errors) != 0 || indexes != 4 || refs != 7 {
		t.Errorf("through a symlink: %d indexes, %d refs, errors %q", indexes, refs, f.errors)
	}
}

func TestCheckReferencedReportsMissing(t *testing.T) {
	tests := []struct {
		name       string
		remove     func(s *Store, a, b, c, d, e blob.Digest) blob.Digest // returns the lost digest
		wantIndex  []string                                              // indexes named in the report
		wantReason string
	}{
		{
			name: "chunk of two indexes",
			remove: func(s *Store, a, b, c, d, e blob.Digest) blob.Digest {
				rtest.OK(s.t, os.Remove(s.ChunkPath(b)))
				return b
			},
			wantIndex:  []string{"drive-scsi0.img.fidx", "root.pxar.didx"},
			wantReason: "is missing",
		},
		{
			name: "chunk of an index in a hidden dir",
			remove: func(s *Store, a, b, c, d, e blob.Digest) blob.Digest {
				rtest.OK(s.t, os.Remove(s.ChunkPath(d)))
				return d
			},
			wantIndex:  []string{".hidden/stray.fidx"},
			wantReason: "is missing",
		},
		{
			name: "chunk replaced by a directory",
			remove: func(s *Store, a, b, c, d, e blob.Digest) blob.Digest {
				rtest.OK(s.t, os.Remove(s.ChunkPath(e)))
				rtest.OK(s.t, os.Mkdir(s.ChunkPath(e), 0o755))
				return e
			},
			wantIndex:  []string{"catalog.pcat1.didx"},
			wantReason: "not a regular file",
		},
		{
			name: "chunk replaced by a symlink",
			remove: func(s *Store, a, b, c, d, e blob.Digest) blob.Digest {
				rtest.OK(s.t, os.Rename(s.ChunkPath(a), s.ChunkPath(a)+".elsewhere"))
				rtest.OK(s.t, os.Symlink(s.ChunkPath(a)+".elsewhere", s.ChunkPath(a)))
				return a
			},
			wantIndex:  []string{"drive-scsi0.img.fidx"},
			wantReason: "not a regular file",
		},
		{
			name: "whole prefix dir",
			remove: func(s *Store, a, b, c, d, e blob.Digest) blob.Digest {
				rtest.OK(s.t, os.RemoveAll(filepath.Dir(s.ChunkPath(c))))
				return c
			},
			wantIndex:  []string{"root.pxar.didx"},
			wantReason: "is missing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, a, b, c, d, e := populate(t)
			lost := tt.remove(s, a, b, c, d, e)
			s.Except(lost)
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
	s, _, _, _, _, _ := populate(t)
	bad := filepath.Join(s.base, "vm/100/2025-04-04T15:02:49Z/broken.fidx")
	rtest.OK(t, os.WriteFile(bad, []byte("not an index"), 0o644))
	// A corrupt body (checksum mismatch) that references a missing chunk:
	// skipped, not reported as missing.
	p := fixed(s, "vm/100/2025-04-05T00:00:00Z/drive-scsi0.img.fidx", digest("gone"))
	b, err := os.ReadFile(p)
	rtest.OK(t, err)
	b[40] ^= 1
	rtest.OK(t, os.WriteFile(p, b, 0o644))

	f := &fakeTB{TB: t}
	indexes, _ := CheckReferenced(f, s.base)
	if len(f.errors) != 0 {
		t.Errorf("corrupt indexes should be logged, not failed: %q", f.errors)
	}
	if indexes != 4 {
		t.Errorf("checked %d indexes, want the 4 good ones", indexes)
	}
	logs := strings.Join(f.logs, "\n")
	rtest.Contains(t, "logs", logs, bad, "bad magic", p, "checksum mismatch")
}

func TestCheckReferencedFollowsIndexSymlink(t *testing.T) {
	s, _, _, _, _, _ := populate(t)
	outside := filepath.Join(t.TempDir(), "outside.fidx")
	rtest.OK(t, index.WriteFixedFile(outside, 4096, 4096, []blob.Digest{digest("missing")}))
	s.Except(digest("missing"))
	rtest.OK(t, os.Symlink(outside, filepath.Join(s.base, "vm/100/link.fidx")))
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
	s := Build(t, Sparse())
	rtest.OK(t, os.Mkdir(filepath.Join(s.base, ".chunks", "0000"), 0o750))
	f := &fakeTB{TB: t}
	indexes, refs := CheckReferenced(f, s.base)
	if len(f.errors) != 0 || indexes != 0 || refs != 0 {
		t.Errorf("empty store: %d indexes, %d refs, errors %q", indexes, refs, f.errors)
	}
}

func TestCheckReferencedManyMissing(t *testing.T) {
	s := Build(t, Sparse())
	ds := make([]blob.Digest, 3*maxReports)
	for i := range ds {
		ds[i] = digest(fmt.Sprint(i))
	}
	fixed(s, "vm/1/2025-04-04T15:02:49Z/a.fidx", ds...)
	s.Except(ds...)
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
	f := &fakeTB{TB: t}
	CheckNoTmp(f, filepath.Join(t.TempDir(), "none")) // no store at all: nothing left behind
	if len(f.errors) != 0 {
		t.Errorf("store without .chunks: %q", f.errors)
	}

	s, _, _, _, _, _ := populate(t)
	rtest.OK(t, os.MkdirAll(filepath.Join(s.base, ".chunks", "ffff"), 0o750))
	CheckNoTmp(f, s.base)
	if len(f.errors) != 0 {
		t.Errorf("clean store: %q", f.errors)
	}
	CheckNoTmp(t, s.base)

	tmp := s.Path("a") + ".tmp_123456"
	rtest.OK(t, os.WriteFile(tmp, nil, 0o644))
	top := filepath.Join(s.base, ".chunks", "x.tmp_1")
	rtest.OK(t, os.WriteFile(top, nil, 0o644))
	CheckNoTmp(f, s.base)
	if len(f.errors) != 2 {
		t.Fatalf("want 2 errors, got %q", f.errors)
	}
	all := strings.Join(f.errors, "\n")
	rtest.Contains(t, "errors", all, tmp, top)
	rtest.OK(t, os.Remove(tmp)) // for the check at cleanup
	rtest.OK(t, os.Remove(top))
}

func TestCheckReferencedExcept(t *testing.T) {
	s, a, _, _, _, _ := populate(t)
	never, lost := digest("never stored"), a
	fixed(s, "vm/200/2025-04-04T15:02:49Z/drive-scsi0.img.fidx", never, never)
	s.Except(never, lost)
	f := &fakeTB{TB: t}
	CheckReferencedExcept(f, s.base, never)
	if len(f.errors) != 0 || !strings.Contains(strings.Join(f.logs, "\n"), never.String()) {
		t.Errorf("a known-missing chunk must be logged, not failed: errors %q, logs %q", f.errors, f.logs)
	}

	rtest.OK(t, os.Remove(s.ChunkPath(lost)))
	f = &fakeTB{TB: t}
	CheckReferencedExcept(f, s.base, never)
	if len(f.errors) != 2 || !strings.Contains(f.errors[0], lost.String()) || strings.Contains(strings.Join(f.errors, "\n"), never.String()) {
		t.Errorf("want only the lost chunk %s reported, got %q", lost, f.errors)
	}
}

func TestVictimNoticesChanges(t *testing.T) {
	rtest.RequireRoot(t)
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
	rtest.RequireRoot(t)
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
