package chunkstore

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
)

const zeroHex = "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"

func TestClassify(t *testing.T) {
	zero, err := blob.ParseDigest(zeroHex)
	rtest.OK(t, err)
	tests := []struct {
		name       string
		give       string
		want       Kind
		wantDigest blob.Digest
	}{
		{"chunk", zeroHex, KindChunk, zero},
		{"bad 0", zeroHex + ".0.bad", KindBad, zero},
		{"bad 9", zeroHex + ".9.bad", KindBad, zero},
		{"bad 10", zeroHex + ".10.bad", KindOther, blob.Digest{}},
		{"bad letter", zeroHex + ".a.bad", KindOther, blob.Digest{}},
		{"bad without dot", zeroHex + "_0.bad", KindOther, blob.Digest{}},
		{"bad wrong suffix", zeroHex + ".0.bak", KindOther, blob.Digest{}},
		{"tmp", zeroHex + ".tmp_0123456789abcdef", KindOther, blob.Digest{}},
		{"uppercase", strings.ToUpper(zeroHex), KindOther, blob.Digest{}},
		{"one uppercase digit", zeroHex[:63] + "F", KindOther, blob.Digest{}},
		{"non-hex", "g" + zeroHex[1:], KindOther, blob.Digest{}},
		{"too short", zeroHex[:63], KindOther, blob.Digest{}},
		{"too long", zeroHex + "0", KindOther, blob.Digest{}},
		{"empty", "", KindOther, blob.Digest{}},
		{"dot", ".", KindOther, blob.Digest{}},
		{"all zero", strings.Repeat("0", 64), KindChunk, blob.Digest{}},
		{"all f", strings.Repeat("f", 64), KindChunk, blob.Digest(slices.Repeat([]byte{0xff}, 32))},
		{"space", zeroHex[:63] + " ", KindOther, blob.Digest{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, d := Classify([]byte(tt.give))
			rtest.Equal(t, "kind", tt.want, k)
			rtest.Equal(t, "digest", tt.wantDigest, d)
		})
	}
}

func TestClassifyDoesNotAllocate(t *testing.T) {
	names := [][]byte{[]byte(zeroHex), []byte(zeroHex + ".3.bad"), []byte(zeroHex + ".tmp_x")}
	allocs := testing.AllocsPerRun(100, func() {
		for _, n := range names {
			Classify(n)
		}
	})
	rtest.Equal(t, "allocations", 0.0, allocs)
}

func TestKindString(t *testing.T) {
	rtest.Equal(t, "chunk", "chunk", KindChunk.String())
	rtest.Equal(t, "bad", "bad chunk", KindBad.String())
	rtest.Equal(t, "other", "not a chunk", KindOther.String())
}

// fillPrefixDir creates n chunk files in prefix dir p, plus bad copies and
// tmp files for some, and returns every name it made.
func fillPrefixDir(t testing.TB, s *Store, p uint16, n int) map[string]Kind {
	t.Helper()
	dir := filepath.Join(s.chunks, prefixName(p))
	want := map[string]Kind{}
	for i := range n {
		d := blob.Sum(fmt.Appendf(nil, "chunk %d", i))
		d[0], d[1] = byte(p>>8), byte(p)
		name := d.String()
		switch {
		case i%10 == 1:
			name += fmt.Sprintf(".%d.bad", i%7)
		case i%10 == 2:
			name += ".tmp_" + fmt.Sprintf("%016x", i)
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		rtest.OK(t, err)
		rtest.OK(t, f.Close())
		want[name], _ = Classify([]byte(name))
	}
	return want
}

// removeTmpNames removes the deliberate tmp files fillPrefixDir made, which
// the store invariant check would flag.
func removeTmpNames(t testing.TB, s *Store, p uint16, names map[string]Kind) {
	for name := range names {
		if strings.Contains(name, ".tmp_") {
			if err := os.Remove(filepath.Join(s.chunks, prefixName(p), name)); err != nil {
				t.Error(err)
			}
		}
	}
}

func TestReadNames(t *testing.T) {
	const p = 0x0a0b
	s := miniStore(t, t.TempDir(), testOpts(t), p)
	want := fillPrefixDir(t, s, p, 10000)
	rtest.OK(t, os.Mkdir(filepath.Join(s.chunks, prefixName(p), "subdir"), 0o755))
	want["subdir"] = KindOther
	t.Cleanup(func() { removeTmpNames(t, s, p, want) })

	dir, err := s.OpenPrefix(p)
	rtest.OK(t, err)
	defer dir.Close()
	rtest.Equal(t, "Name", "0a0b", dir.Name())
	for round := range 2 { // ReadNames starts from the top every time
		got := map[string]Kind{}
		var counts [3]int
		err := dir.ReadNames(func(name []byte, dtype uint8) error {
			n := string(name)
			if _, dup := got[n]; dup {
				t.Errorf("round %d: %s listed twice", round, n)
			}
			k, _ := Classify(name)
			got[n] = k
			counts[k]++
			wantType := uint8(unix.DT_REG)
			if n == "subdir" {
				wantType = unix.DT_DIR
			}
			if dtype != wantType && dtype != unix.DT_UNKNOWN {
				t.Errorf("%s: d_type %d, want %d", n, dtype, wantType)
			}
			return nil
		})
		rtest.OK(t, err)
		if !maps.Equal(want, got) {
			t.Fatalf("round %d: ReadNames listed %d names, want %d", round, len(got), len(want))
		}
		rtest.Equal(t, "chunks", 8000, counts[KindChunk])
		rtest.Equal(t, "bad", 1000, counts[KindBad])
		rtest.Equal(t, "other", 1001, counts[KindOther])
	}

	stop := errors.New("stop")
	calls := 0
	err = dir.ReadNames(func([]byte, uint8) error { calls++; return stop })
	if !errors.Is(err, stop) || err.Error() != stop.Error() {
		t.Fatalf("ReadNames: want the callback's error as is, got %v", err)
	}
	rtest.Equal(t, "calls after an error", 1, calls)

	allocs := testing.AllocsPerRun(5, func() {
		rtest.OK(t, dir.ReadNames(func([]byte, uint8) error { return nil }))
	})
	// The pooled buffer may be dropped by the race detector's pool; never
	// anything per entry.
	if allocs > 5 {
		t.Errorf("ReadNames of 10,001 entries allocates %v times per call", allocs)
	}
}

// TestReadDirentsSmallBuffer: records never straddle getdents calls, however
// small the buffer.
func TestReadDirentsSmallBuffer(t *testing.T) {
	const p = 0x0001
	s := miniStore(t, t.TempDir(), testOpts(t), p)
	want := map[string]Kind{}
	for i := range 300 {
		d := blob.Sum(fmt.Appendf(nil, "%d", i))
		rtest.OK(t, os.WriteFile(filepath.Join(s.chunks, prefixName(p), d.String()), nil, 0o644))
		want[d.String()] = KindChunk
	}
	fd, err := unix.Open(filepath.Join(s.chunks, prefixName(p)), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(fd)
	got := map[string]Kind{}
	rtest.OK(t, readDirents(fsys.Real{}, fd, "dir", make([]byte, 100), func(name []byte, _ uint8) error {
		got[string(name)] = KindChunk
		return nil
	}))
	if !maps.Equal(want, got) {
		t.Fatalf("listed %d names, want %d", len(got), len(want))
	}
	// A buffer too small for one record is EINVAL from the kernel.
	fd2, err := unix.Open(filepath.Join(s.chunks, prefixName(p)), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(fd2)
	err = readDirents(fsys.Real{}, fd2, "dir", make([]byte, 8), func([]byte, uint8) error { return nil })
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "dir") {
		t.Fatalf("tiny buffer: want EINVAL naming the dir, got %v", err)
	}
}

// TestReadNamesMalformedRecord: a getdents reply with a corrupt record is
// EIO naming the dir.
func TestReadNamesMalformedRecord(t *testing.T) {
	set := faultfs.New(t, nil)
	set.Add(faultfs.Fault{Op: faultfs.Getdents, Err: faultfs.ErrMalformed})
	opts := testOpts(t)
	opts.Syscalls = set
	s := miniStore(t, t.TempDir(), opts, 7)
	dir, err := s.OpenPrefix(7)
	rtest.OK(t, err)
	defer dir.Close()
	err = dir.ReadNames(func([]byte, uint8) error { return nil })
	if !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), "/.chunks/0007") {
		t.Fatalf("malformed dirent: want EIO naming the dir, got %v", err)
	}
}

func TestPrefixDirOps(t *testing.T) {
	b, d := testChunk(t, "prefix ops")
	s := miniStore(t, t.TempDir(), testOpts(t), d.Prefix())
	_, _, err := s.Insert(b, d)
	rtest.OK(t, err)

	_, err = s.OpenPrefix(d.Prefix() + 1)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenPrefix of a missing dir: want fs.ErrNotExist, got %v", err)
	}
	dir, err := s.OpenPrefix(d.Prefix())
	rtest.OK(t, err)
	defer dir.Close()

	var st unix.Stat_t
	rtest.OK(t, dir.Stat(d.String(), &st))
	rtest.Equal(t, "size", int64(len(b)), st.Size)
	setTimes(t, s.ChunkPath(d), old, old)
	rtest.OK(t, dir.Touch(d.String()))
	rtest.OK(t, dir.Stat(d.String(), &st))
	if !ts(st.Atim).After(old) {
		t.Error("PrefixDir.Touch did not move the atime")
	}
	rtest.Equal(t, "mtime", old, ts(st.Mtim).UTC())

	rtest.OK(t, dir.Unlink(d.String()))
	for name, err := range map[string]error{
		"Stat":   dir.Stat(d.String(), &st),
		"Touch":  dir.Touch(d.String()),
		"Unlink": dir.Unlink(d.String()),
	} {
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s of a missing chunk: want fs.ErrNotExist, got %v", name, err)
		}
		if pe, isPE := errors.AsType[*fs.PathError](err); !isPE || pe.Path != s.ChunkPath(d) {
			t.Errorf("%s of a missing chunk: want *fs.PathError naming %s, got %#v", name, s.ChunkPath(d), err)
		}
	}
	rtest.OK(t, dir.Close())
	rtest.OK(t, dir.Close()) // idempotent
}

func TestOpenPrefixRefusesSymlink(t *testing.T) {
	s := miniStore(t, t.TempDir(), testOpts(t), 1)
	rtest.OK(t, os.Symlink("0001", filepath.Join(s.chunks, "0002")))
	if dir, err := s.OpenPrefix(2); err == nil {
		dir.Close()
		t.Fatal("OpenPrefix followed a symlink")
	}
}

func TestPrefixDirLock(t *testing.T) {
	s := miniStore(t, t.TempDir(), testOpts(t), 5)
	dir, err := s.OpenPrefix(5)
	rtest.OK(t, err)
	defer dir.Close()
	other, err := unix.Open(filepath.Join(s.chunks, "0005"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	defer unix.Close(other)

	unlock, err := dir.Lock(true)
	rtest.OK(t, err)
	if err := unix.Flock(other, unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("shared try-lock under LOCK_EX: want EWOULDBLOCK, got %v", err)
	}
	rtest.OK(t, unlock())

	unlock, err = dir.Lock(false)
	rtest.OK(t, err)
	if err := unix.Flock(other, unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("exclusive try-lock under LOCK_SH: want EWOULDBLOCK, got %v", err)
	}
	rtest.OK(t, unix.Flock(other, unix.LOCK_SH|unix.LOCK_NB))
	rtest.OK(t, unix.Flock(other, unix.LOCK_UN))
	rtest.OK(t, unlock())
	rtest.OK(t, unix.Flock(other, unix.LOCK_EX|unix.LOCK_NB))
}
