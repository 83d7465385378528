package chunkstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/adapt"
	"chunkgc/internal/nofollow"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
)

// TestToucher touches several chunks with one Toucher, whose name buffer
// is reused from touch to touch.
func TestToucher(t *testing.T) {
	s := miniStore(t, t.TempDir(), testOpts(t))
	tc := s.NewToucher()
	for _, data := range []string{"toucher 1", "toucher 2", "toucher 3"} {
		b, d := testChunk(t, data)
		rtest.OK(t, os.MkdirAll(filepath.Join(s.chunks, prefixName(d.Prefix())), 0o750))
		_, _, err := s.Insert(b, d)
		rtest.OK(t, err)
		setTimes(t, s.ChunkPath(d), old, old)
		rtest.OK(t, os.WriteFile(s.ChunkPath(d)+".4.bad", nil, 0o644))
		setTimes(t, s.ChunkPath(d)+".4.bad", old, old)

		_, missing := testChunk(t, data+" never inserted")
		rtest.OK(t, os.MkdirAll(filepath.Join(s.chunks, prefixName(missing.Prefix())), 0o750))
		errMissing := tc.Touch(missing)
		rtest.OK(t, tc.Touch(d))
		n, err := tc.TouchBad(d)
		rtest.OK(t, err)
		rtest.Equal(t, "bad copies touched", 1, n)

		for _, p := range []string{s.ChunkPath(d), s.ChunkPath(d) + ".4.bad"} {
			st := lstat(t, p)
			if !ts(st.Atim).After(old) {
				t.Errorf("%s not touched", p)
			}
			rtest.Equal(t, p+" mtime", old, ts(st.Mtim).UTC())
		}
		// The error of the earlier touch still names its own chunk,
		// although the buffer has held other names since.
		pe, isPE := errors.AsType[*fs.PathError](errMissing)
		if !isPE || !errors.Is(errMissing, fs.ErrNotExist) {
			t.Fatalf("touch of a missing chunk: want *fs.PathError matching fs.ErrNotExist, got %v", errMissing)
		}
		rtest.Equal(t, "path", s.ChunkPath(missing), pe.Path)
	}
}

// TestToucherFault: the Toucher goes through the seam.
func TestToucherFault(t *testing.T) {
	s, set, d := faultChunk(t, "toucher eio")
	f := set.Add(faultfs.Fault{Op: faultfs.UtimesNanoAt, Nth: 2, Err: unix.EIO})
	tc := s.NewToucher()
	rtest.OK(t, tc.Touch(d))
	err := tc.Touch(d)
	rtest.Equal(t, "fault fired", 1, f.Fired())
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("Touch: want EIO, got %v", err)
	}
	if pe, isPE := errors.AsType[*fs.PathError](err); !isPE || pe.Path != s.ChunkPath(d) {
		t.Errorf("Touch: want *fs.PathError naming %s, got %v", s.ChunkPath(d), err)
	}
	rtest.OK(t, tc.Touch(d))
}

func TestStatBytes(t *testing.T) {
	s, set, d := faultChunk(t, "stat bytes")
	dir, err := s.OpenPrefix(d.Prefix())
	rtest.OK(t, err)
	defer dir.Close()

	name := d.AppendHex(nil)
	var got, want unix.Stat_t
	rtest.OK(t, dir.StatBytes(name, &got))
	rtest.OK(t, dir.Stat(d.String(), &want))
	rtest.Equal(t, "stat", want, got)

	missing := []byte(strings.Repeat("0", len(name)))
	err = dir.StatBytes(missing, &got)
	copy(missing, "ffff") // the caller may reuse its buffer at once
	pe, isPE := errors.AsType[*fs.PathError](err)
	if !isPE || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("StatBytes of a missing entry: want *fs.PathError matching fs.ErrNotExist, got %v", err)
	}
	rtest.Equal(t, "path", filepath.Join(s.chunks, prefixName(d.Prefix()), strings.Repeat("0", len(name))), pe.Path)
	rtest.Equal(t, "op", "fstatat", pe.Op)

	f := set.Add(faultfs.Fault{Op: faultfs.Fstatat, Nth: 1, Err: unix.EIO})
	err = dir.StatBytes(name, &got)
	rtest.Equal(t, "fault fired", 1, f.Fired())
	if !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), s.ChunkPath(d)) {
		t.Fatalf("StatBytes: want EIO naming %s, got %v", s.ChunkPath(d), err)
	}
}

// TestHotPathsDoNotAllocate: what GC's mark and sweep call per chunk makes no
// heap allocation; opening a prefix dir makes one (the PrefixDir).
func TestHotPathsDoNotAllocate(t *testing.T) {
	s, d := oneChunk(t, "no allocs", testOpts(t))
	dir, err := s.OpenPrefix(d.Prefix())
	rtest.OK(t, err)
	defer dir.Close()
	tc := s.NewToucher()
	name := d.AppendHex(nil)
	var st unix.Stat_t
	var stx unix.Statx_t
	tests := []struct {
		name string
		give func()
		want float64
	}{
		{"Toucher.Touch", func() { rtest.OK(t, tc.Touch(d)) }, 0},
		// No bad copies: ten ENOENT errors, each a PathError and its name.
		{"Toucher.TouchBad", func() { _, err := tc.TouchBad(d); rtest.OK(t, err) }, 2 * maxBad},
		{"PrefixDir.StatBytes", func() { rtest.OK(t, dir.StatBytes(name, &st)) }, 0},
		{"PrefixDir.StatCached", func() { rtest.OK(t, dir.StatCached(name, &stx)) }, 0},
		{"OpenPrefix", func() { dir, err := s.OpenPrefix(d.Prefix()); rtest.OK(t, err); rtest.OK(t, dir.Close()) }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, tt.give); got > tt.want {
				t.Errorf("%v allocs per call, want at most %v", got, tt.want)
			}
		})
	}
}

// TestCheckPrefixDirsIsTheSweepsOpen: the prefix dir check opens every
// prefix dir (through the seam, O_NOFOLLOW) and leaves the fd for
// TakePrefix, which then opens nothing; a dir the check found missing stays
// missing for TakePrefix, even if it appears after the check.
func TestCheckPrefixDirsIsTheSweepsOpen(t *testing.T) {
	set := faultfs.New(t, nil)
	opts := testOpts(t)
	opts.Syscalls = set
	base := t.TempDir()
	all := make([]uint16, 0, PrefixCount-1)
	for p := range PrefixCount {
		if p != 0x0a0a {
			all = append(all, uint16(p))
		}
	}
	s := miniStore(t, base, opts, all...)
	missing, err := s.CheckPrefixDirs(t.Context(), fixedPool(t, 2), nil)
	rtest.OK(t, err)
	rtest.Equal(t, "missing", []uint16{0x0a0a}, missing)
	rtest.OK(t, os.Mkdir(filepath.Join(base, chunksName, "0a0a"), 0o750))

	// Every later open of a prefix dir fails: TakePrefix of a dir the
	// check cached must not make one.
	f := set.Add(faultfs.Fault{Op: faultfs.Openat, Name: "????", Err: unix.EIO})
	dir, err := s.TakePrefix(0x0001)
	if errors.Is(err, unix.EIO) {
		t.Skip("the fd budget (RLIMIT_NOFILE) is used up by other stores of this process")
	}
	rtest.OK(t, err)
	rtest.OK(t, dir.ReadNames(func([]byte, uint8) error { return nil }))
	unlock, err := dir.Lock(true)
	rtest.OK(t, err)
	rtest.OK(t, unlock())
	rtest.OK(t, dir.Close())
	_, err = s.TakePrefix(0x0a0a)
	rtest.ErrorIs(t, err, fs.ErrNotExist)
	rtest.Equal(t, "opens after the check", 0, f.Fired())
	// The fault was armed all along: a real open fails.
	_, err = s.OpenPrefix(0x0002)
	rtest.ErrorIs(t, err, unix.EIO)
}

// TestCheckPrefixDirsBeyondBudget: once the fd budget is spent, the check
// stats a prefix dir (one statx, no open and close) and still refuses a
// symlink and a non-directory, and reports a missing dir. Not parallel: it
// empties the process-wide budget, and parallel tests wait for it.
func TestCheckPrefixDirsBeyondBudget(t *testing.T) {
	budget := fdBudget()
	spent := budget.Swap(0)
	t.Cleanup(func() { budget.Add(spent) })
	set := faultfs.New(t, nil)
	opts := testOpts(t)
	opts.Syscalls = set
	var all []uint16
	for p := range PrefixCount {
		if p != 0x0a0a && p != 0x0b0b {
			all = append(all, uint16(p))
		}
	}
	// One store for every row (65,535 mkdirs are slow); each row plants
	// what stands at .chunks/0b0b.
	s := miniStore(t, t.TempDir(), opts, all...)
	planted := filepath.Join(s.chunks, "0b0b")
	tests := []struct {
		name    string
		plant   func(t *testing.T)
		want    error // nil: the check passes
		missing []uint16
	}{
		{"missing", func(*testing.T) {}, nil, []uint16{0x0a0a, 0x0b0b}},
		{"dir", func(t *testing.T) { rtest.OK(t, os.Mkdir(planted, 0o750)) }, nil, []uint16{0x0a0a}},
		{"symlink", func(t *testing.T) { rtest.OK(t, os.Symlink(t.TempDir(), planted)) }, nofollow.ErrSymlink, nil},
		{"file", func(t *testing.T) { rtest.OK(t, os.WriteFile(planted, nil, 0o640)) }, nofollow.ErrNotDir, nil},
	}
	for _, listed := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/listed=%v", tt.name, listed), func(t *testing.T) {
				rtest.OK(t, os.RemoveAll(planted))
				tt.plant(t)
				var l *PrefixListing
				wantStats := int64(PrefixCount)
				if listed {
					// Every dir the listing shows as a directory
					// needs no statx: only the missing ones (and
					// what is planted, if not a dir) are asked.
					var err error
					l, err = s.ListPrefixDirs(t.Context())
					rtest.OK(t, err)
					wantStats = int64(PrefixCount - l.Dirs())
				}
				opens, stats := set.Calls(faultfs.Openat), set.Calls(faultfs.Statx)
				missing, err := s.CheckPrefixDirs(t.Context(), fixedPool(t, 2), l)
				rtest.Equal(t, "opens", int64(0), set.Calls(faultfs.Openat)-opens)
				if tt.want != nil {
					rtest.ErrorIs(t, err, ErrUnexpectedPrefix)
					rtest.ErrorIs(t, err, tt.want)
					rtest.Contains(t, "error", err.Error(), planted)
					return
				}
				rtest.OK(t, err)
				rtest.Equal(t, "stats", wantStats, set.Calls(faultfs.Statx)-stats)
				rtest.Equal(t, "missing", tt.missing, missing)
				// Nothing cached: the sweep opens the dir itself, and a
				// dir missing at an earlier check is there again.
				dir, err := s.TakePrefix(0x0b0b)
				if tt.missing[len(tt.missing)-1] == 0x0b0b {
					rtest.ErrorIs(t, err, fs.ErrNotExist)
					return
				}
				rtest.OK(t, err)
				rtest.OK(t, dir.Close())
			})
		}
	}

	// A dir the listing showed as a directory and that is a symlink by
	// the check passes it (the check takes the listing's word), and the
	// sweep's O_NOFOLLOW open refuses it: nothing is reached through it.
	rtest.OK(t, os.RemoveAll(planted))
	rtest.OK(t, os.Mkdir(planted, 0o750))
	l, err := s.ListPrefixDirs(t.Context())
	rtest.OK(t, err)
	rtest.Equal(t, "listed as dir", true, l.IsDir(0x0b0b))
	rtest.Equal(t, "listed as dir", false, l.IsDir(0x0a0a))
	rtest.OK(t, os.Remove(planted))
	rtest.OK(t, os.Symlink(t.TempDir(), planted))
	_, err = s.CheckPrefixDirs(t.Context(), fixedPool(t, 2), l)
	rtest.OK(t, err)
	_, err = s.TakePrefix(0x0b0b)
	rtest.ErrorIs(t, err, nofollow.ErrSymlink)
	rtest.OK(t, os.Remove(planted))

	// A statx error other than ENOENT stops the check, naming the dir.
	set.Add(faultfs.Fault{Op: faultfs.Statx, Name: "0c0c", Err: unix.EIO})
	_, err = s.CheckPrefixDirs(t.Context(), fixedPool(t, 2), nil)
	rtest.ErrorIs(t, err, unix.EIO)
	if !strings.Contains(err.Error(), filepath.Join(s.chunks, "0c0c")) {
		t.Errorf("error %v does not name the dir", err)
	}
}

// TestStatCachedAndFresh: both stat without following a symlink, through
// the seam, and name the full path in their errors.
func TestStatCachedAndFresh(t *testing.T) {
	b, d := testChunk(t, "statx")
	set := faultfs.New(t, nil)
	opts := testOpts(t)
	opts.Syscalls = set
	s := miniStore(t, t.TempDir(), opts, d.Prefix())
	_, _, err := s.Insert(b, d)
	rtest.OK(t, err)
	dir, err := s.OpenPrefix(d.Prefix())
	rtest.OK(t, err)
	defer dir.Close()
	var stx unix.Statx_t
	rtest.OK(t, dir.StatCached(d.AppendHex(nil), &stx))
	rtest.Equal(t, "size", uint64(len(b)), stx.Size)
	rtest.Equal(t, "regular", uint16(unix.S_IFREG), stx.Mode&unix.S_IFMT)
	rtest.OK(t, os.Symlink(s.ChunkPath(d), filepath.Join(s.chunks, prefixName(d.Prefix()), "link")))
	rtest.OK(t, dir.StatFresh("link", &stx))
	rtest.Equal(t, "symlink not followed", uint16(unix.S_IFLNK), stx.Mode&unix.S_IFMT)
	set.Add(faultfs.Fault{Op: faultfs.Statx, Name: d.String(), Nth: 1, Err: unix.EIO})
	err = dir.StatFresh(d.String(), &stx)
	if !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), s.ChunkPath(d)) {
		t.Fatalf("StatFresh: want EIO naming %s, got %v", s.ChunkPath(d), err)
	}
}

// fixedPool is a pool of n workers, stopped when the test ends.
func fixedPool(t *testing.T, n int) *adapt.Pool {
	p := adapt.Start(t.Context(), adapt.Config{Fixed: n})
	t.Cleanup(func() { p.Stop() })
	return p
}
