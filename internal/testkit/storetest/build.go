package storetest

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/index"
	"chunkgc/internal/fsys"
)

// The layout Build lays out mirrors chunkstore.Create's (a test checks that
// chunkstore opens and accepts it). It is written here rather than through
// chunkstore so that chunkstore's own tests can build stores too.
const (
	prefixCount   = 1 << 16
	baseMode      = 0o755
	chunksDirMode = 0o750
	lockMode      = 0o644
	chunkMode     = 0o644
	treeMode      = 0o755
	fileMode      = 0o644

	// defaultSize is the plain size of a chunk that names no [Size].
	defaultSize = 1000
	// fixedChunkSize is the chunk size of the fixed indexes Build writes.
	fixedChunkSize = 4096
	// dynamicChunkSize is the length of each chunk of a dynamic index.
	dynamicChunkSize = 1000
)

// Option is one item or setting of a store [Build] lays out: a chunk, an
// index, a file, or a setting of the store as a whole.
type Option func(b *builder)

// FileOption sets a property of one file an [Option] writes: its size, data,
// times or owner.
type FileOption func(f *file)

// file is what the FileOptions of one item set.
type file struct {
	size       int
	data       []byte
	compress   bool
	age        time.Duration
	hasAge     bool
	atime      time.Time
	mtime      time.Time
	owner      fsys.Owner
	ownerIsSet bool
}

// builder is the state of one Build or Add call.
type builder struct {
	s *Store
	// store settings, read only by Build
	base   string
	sparse bool
	items  []func(s *Store)
}

// Store is a store laid out by [Build]: a base dir with .chunks, its prefix
// dirs and .lock, chunks that are real blobs, and real index files. It gives
// the digest, path and size of each chunk by name.
//
// Chunks are named by the test; a chunk's plain data is derived from its
// name (and [Size]), so distinct names give distinct digests.
type Store struct {
	t      testing.TB
	base   string
	now    time.Time
	owner  fsys.Owner
	sparse bool
	// digests and sizes (on disk) by chunk name; names is the reverse.
	digests map[string]blob.Digest
	sizes   map[string]int64
	names   map[blob.Digest]string
	// except are the referenced digests the invariant check at cleanup
	// allows to be missing: [Missing] chunks and those passed to Except.
	except []blob.Digest
}

// Build lays out a store under t.TempDir() (or [At]) from opts, applied in
// order (a [Snapshot] names chunks declared before it), and registers at
// t.Cleanup the store invariants: [CheckReferencedExcept] with the digests
// of [Missing] chunks and of [Store.Except], and [CheckNoTmp]. Every test
// that builds a store is thus also a data-loss test. Build fails t at once
// on any error.
func Build(t testing.TB, opts ...Option) *Store {
	t.Helper()
	s := &Store{t: t, now: time.Now(), owner: fsys.Keep,
		digests: map[string]blob.Digest{}, sizes: map[string]int64{}, names: map[blob.Digest]string{}}
	b := &builder{s: s}
	for _, o := range opts {
		o(b)
	}
	s.base = b.base
	if s.base == "" {
		s.base = filepath.Join(t.TempDir(), "store")
	}
	s.sparse = b.sparse
	s.layout()
	t.Cleanup(func() {
		CheckReferencedExcept(t, s.base, s.except...)
		CheckNoTmp(t, s.base)
	})
	for _, item := range b.items {
		item(s)
	}
	return s
}

// Add adds the items of opts to the store (store settings such as [At] are
// ignored), in order.
func (s *Store) Add(opts ...Option) {
	s.t.Helper()
	b := &builder{s: s}
	for _, o := range opts {
		o(b)
	}
	for _, item := range b.items {
		item(s)
	}
}

// At puts the store's base at base (absolute; parents are created) instead
// of t.TempDir()/store: on a loop mount or a FUSE filesystem, say.
func At(base string) Option { return func(b *builder) { b.base = base } }

// Sparse creates only the prefix dirs that the chunks need, not all 65,536
// that chunkstore.Create makes. GC warns about the missing ones and sweeps
// the others; use it where a store is not swept, or the test says why.
func Sparse() Option { return func(b *builder) { b.sparse = true } }

// Now sets the time ages count back from (default: when Build was called).
func Now(now time.Time) Option { return func(b *builder) { b.s.now = now } }

// Owner gives every directory and file Build makes to o, when o is active
// (see [fsys.Owner.Active]); a file's own [OwnedBy] wins.
func Owner(o fsys.Owner) Option { return func(b *builder) { b.s.owner = o } }

// Size makes the chunk's plain data (or a file's content) n bytes long.
func Size(n int) FileOption { return func(f *file) { f.size = n } }

// Data makes data the chunk's plain data (or a file's content).
func Data(data []byte) FileOption { return func(f *file) { f.data = data } }

// Compressed stores the chunk as a compressed blob (default: uncompressed).
func Compressed() FileOption { return func(f *file) { f.compress = true } }

// Age sets the file's atime and mtime d before the store's [Now].
func Age(d time.Duration) FileOption {
	return func(f *file) { f.age, f.hasAge = d, true }
}

// Times sets the file's atime and mtime.
func Times(atime, mtime time.Time) FileOption {
	return func(f *file) { f.atime, f.mtime, f.hasAge = atime, mtime, false }
}

// OwnedBy gives the file to o (when o is active).
func OwnedBy(o fsys.Owner) FileOption { return func(f *file) { f.owner, f.ownerIsSet = o, true } }

// item is the Option that adds do to the items laid out, in order, on the
// store.
func item(do func(s *Store)) Option {
	return func(b *builder) { b.items = append(b.items, do) }
}

// Chunk stores a chunk named name: a blob of its data at
// .chunks/XXXX/<digest>.
func Chunk(name string, opts ...FileOption) Option {
	return item(func(s *Store) {
		s.t.Helper()
		f, data := s.file(name, opts)
		d := s.declare(name, data)
		enc, err := blob.Encode(data, f.compress)
		if err != nil {
			s.t.Fatalf("storetest: encode chunk %s: %v", name, err)
		}
		p := s.ChunkPath(d)
		s.mkdirPrefix(filepath.Dir(p))
		s.write(p, enc, chunkMode, f)
		s.sizes[name] = int64(len(enc))
	})
}

// Chunks declares n chunks named "<prefix> 0" … "<prefix> n-1", each as
// [Chunk] with opts, and returns them as one Option with their names in
// that order, for a [Snapshot] to reference slices of.
func Chunks(prefix string, n int, opts ...FileOption) (Option, []string) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprint(prefix, " ", i)
	}
	return func(b *builder) {
		for _, name := range names {
			Chunk(name, opts...)(b)
		}
	}, names
}

// Missing declares a chunk named name that is never stored, for an index to
// reference on purpose: the invariant check at cleanup allows it to be
// missing.
func Missing(name string, opts ...FileOption) Option {
	return item(func(s *Store) {
		_, data := s.file(name, opts)
		s.except = append(s.except, s.declare(name, data))
	})
}

// BadCopy writes <digest>.n.bad beside the chunk named chunk (declared
// before, stored or [Missing]): a file of [Size] plain bytes, as PBS's
// verify leaves a corrupt chunk.
func BadCopy(chunk string, n int, opts ...FileOption) Option {
	return item(func(s *Store) {
		s.t.Helper()
		f, data := s.file(fmt.Sprintf("%s.%d.bad", chunk, n), opts)
		p := s.BadPath(s.Digest(chunk), n)
		s.mkdirPrefix(filepath.Dir(p))
		s.write(p, data, fileMode, f)
	})
}

// Snapshot writes the index file (fixed for *.fidx, dynamic for *.didx) in
// the dir rel below base (a snapshot dir such as
// "vm/100/2025-01-01T00:00:00Z", or any other), referencing the chunks named
// refs, declared before, in order.
func Snapshot(rel, file string, refs ...string) Option {
	return item(func(s *Store) {
		s.t.Helper()
		ds := make([]blob.Digest, len(refs))
		for i, r := range refs {
			ds[i] = s.Digest(r)
		}
		s.Snapshot(rel, file, ds...)
	})
}

// File writes a plain file at rel below base (in .chunks too: a stray file
// GC must leave alone), [Size] bytes long or with [Data].
func File(rel string, opts ...FileOption) Option {
	return item(func(s *Store) {
		s.t.Helper()
		f, data := s.file(rel, opts)
		p := filepath.Join(s.base, rel)
		s.mkdirAll(filepath.Dir(p))
		s.write(p, data, fileMode, f)
	})
}

// Dir makes the directory rel below base (and its missing parents).
func Dir(rel string) Option {
	return item(func(s *Store) {
		s.t.Helper()
		s.mkdirAll(filepath.Join(s.base, rel))
	})
}

// Symlink makes rel below base a symlink to target (used as is).
func Symlink(rel, target string) Option {
	return item(func(s *Store) {
		s.t.Helper()
		p := filepath.Join(s.base, rel)
		s.mkdirAll(filepath.Dir(p))
		if err := os.Symlink(target, p); err != nil {
			s.t.Fatalf("storetest: %v", err)
		}
		s.chown(p, s.owner)
	})
}

// Base returns the store's base directory.
func (s *Store) Base() string { return s.base }

// Now returns the time ages count back from.
func (s *Store) Now() time.Time { return s.now }

// Digest returns the digest of the chunk named name (stored or [Missing]);
// an unknown name fails the test.
func (s *Store) Digest(name string) blob.Digest {
	s.t.Helper()
	d, found := s.digests[name]
	if !found {
		s.t.Fatalf("storetest: no chunk named %q declared", name)
	}
	return d
}

// NameOf returns the name of the chunk whose digest is d, or "".
func (s *Store) NameOf(d blob.Digest) string { return s.names[d] }

// Path returns the file of the chunk named name.
func (s *Store) Path(name string) string {
	s.t.Helper()
	return s.ChunkPath(s.Digest(name))
}

// Size returns the size on disk (the blob's) of the stored chunk named name.
func (s *Store) Size(name string) int64 {
	s.t.Helper()
	n, found := s.sizes[name]
	if !found {
		s.t.Fatalf("storetest: no stored chunk named %q", name)
	}
	return n
}

// ChunkPath returns base/.chunks/XXXX/<hex> of d.
func (s *Store) ChunkPath(d blob.Digest) string {
	h := d.String()
	return filepath.Join(s.base, ".chunks", h[:4], h)
}

// BadPath returns the path of the n-th bad copy of d.
func (s *Store) BadPath(d blob.Digest, n int) string {
	return fmt.Sprintf("%s.%d.bad", s.ChunkPath(d), n)
}

// Exists reports whether path exists (not following a final symlink).
func (s *Store) Exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// Age sets the atime and mtime of path d before [Store.Now].
func (s *Store) Age(path string, d time.Duration) {
	s.t.Helper()
	ts := s.now.Add(-d)
	s.SetTimes(path, ts, ts)
}

// SetTimes sets the atime and mtime of path (not following a symlink).
func (s *Store) SetTimes(path string, atime, mtime time.Time) {
	s.t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		s.t.Fatalf("storetest: set times of %s: %v", path, err)
	}
}

// Snapshot writes the index file (fixed for *.fidx, dynamic for *.didx) in
// the dir rel below base, referencing ds (which need not be chunks of the
// store: pass the deliberately missing ones to [Store.Except]), and returns
// its path. A fixed index has 4 KiB chunks, a dynamic one 1000-byte chunks.
func (s *Store) Snapshot(rel, file string, ds ...blob.Digest) string {
	s.t.Helper()
	dir := filepath.Join(s.base, rel)
	s.mkdirAll(dir)
	p := filepath.Join(dir, file)
	var err error
	if k, _ := index.KindOf(file); k == index.Dynamic {
		ends := make([]uint64, len(ds))
		for i := range ends {
			ends[i] = uint64(i+1) * dynamicChunkSize
		}
		err = index.WriteDynamicFile(p, ends, ds)
	} else {
		err = index.WriteFixedFile(p, uint64(len(ds))*fixedChunkSize, fixedChunkSize, ds)
	}
	if err != nil {
		s.t.Fatalf("storetest: %v", err)
	}
	s.chown(p, s.owner)
	return p
}

// Except allows the referenced chunks ds to be missing at the invariant
// check: for a test that deletes a referenced chunk on purpose.
func (s *Store) Except(ds ...blob.Digest) { s.except = append(s.except, ds...) }

// layout makes base, .chunks, the prefix dirs (all unless sparse) and .lock.
func (s *Store) layout() {
	s.t.Helper()
	s.mkdirAll(s.base)
	if err := os.Chmod(s.base, baseMode); err != nil {
		s.t.Fatalf("storetest: %v", err)
	}
	chunks := filepath.Join(s.base, ".chunks")
	s.mkdir(chunks, chunksDirMode)
	s.write(filepath.Join(s.base, ".lock"), nil, lockMode, &file{})
	if s.sparse {
		return
	}
	fd, err := unix.Open(chunks, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		s.t.Fatalf("storetest: open %s: %v", chunks, err)
	}
	defer unix.Close(fd)
	active := s.owner.Active()
	var name [4]byte
	const hex = "0123456789abcdef"
	for p := range prefixCount {
		name = [4]byte{hex[p>>12], hex[p>>8&15], hex[p>>4&15], hex[p&15]}
		n := string(name[:])
		if err := unix.Mkdirat(fd, n, chunksDirMode); err != nil {
			s.t.Fatalf("storetest: mkdir %s/%s: %v", chunks, n, err)
		}
		if err := unix.Fchmodat(fd, n, chunksDirMode, 0); err != nil {
			s.t.Fatalf("storetest: chmod %s/%s: %v", chunks, n, err)
		}
		if active {
			if err := unix.Fchownat(fd, n, s.owner.UID, s.owner.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				s.t.Fatalf("storetest: chown %s/%s: %v", chunks, n, err)
			}
		}
	}
}

// file applies opts and returns them with the item's data.
func (s *Store) file(name string, opts []FileOption) (*file, []byte) {
	f := &file{size: defaultSize}
	for _, o := range opts {
		o(f)
	}
	data := f.data
	if data == nil {
		data = dataOf(name, f.size)
	}
	return f, data
}

// dataOf returns size bytes derived from name alone: distinct names give
// distinct data (for sizes of 8 bytes and more).
func dataOf(name string, size int) []byte {
	b := make([]byte, size)
	rand.NewChaCha8(sha256.Sum256([]byte("storetest chunk " + name))).Read(b)
	return b
}

// declare records the chunk name with data.
func (s *Store) declare(name string, data []byte) blob.Digest {
	s.t.Helper()
	if _, dup := s.digests[name]; dup {
		s.t.Fatalf("storetest: chunk %q declared twice", name)
	}
	d := blob.Sum(data)
	if other, dup := s.names[d]; dup {
		s.t.Fatalf("storetest: chunks %q and %q have the same data", other, name)
	}
	s.digests[name], s.names[d] = d, name
	return d
}

// write writes data to p with mode and f's times and owner.
func (s *Store) write(p string, data []byte, mode os.FileMode, f *file) {
	s.t.Helper()
	if err := os.WriteFile(p, data, mode); err != nil {
		s.t.Fatalf("storetest: %v", err)
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is subject to the umask
		s.t.Fatalf("storetest: %v", err)
	}
	owner := s.owner
	if f.ownerIsSet {
		owner = f.owner
	}
	s.chown(p, owner)
	switch {
	case f.hasAge:
		s.Age(p, f.age)
	case !f.atime.IsZero() || !f.mtime.IsZero():
		s.SetTimes(p, f.atime, f.mtime)
	}
}

// mkdirPrefix makes a prefix dir that a sparse store lacks.
func (s *Store) mkdirPrefix(dir string) {
	s.t.Helper()
	if _, err := os.Lstat(dir); err == nil {
		return
	}
	s.mkdir(dir, chunksDirMode)
}

func (s *Store) mkdir(dir string, mode os.FileMode) {
	s.t.Helper()
	if err := os.Mkdir(dir, mode); err != nil {
		s.t.Fatalf("storetest: %v", err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		s.t.Fatalf("storetest: %v", err)
	}
	s.chown(dir, s.owner)
}

// mkdirAll makes dir and its missing parents below base (0755, owned).
func (s *Store) mkdirAll(dir string) {
	s.t.Helper()
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return
	}
	if parent := filepath.Dir(dir); parent != dir {
		s.mkdirAll(parent)
	}
	if err := os.Mkdir(dir, treeMode); err != nil && !os.IsExist(err) {
		s.t.Fatalf("storetest: %v", err)
	}
	if rel, err := filepath.Rel(s.base, dir); err == nil && filepath.IsLocal(rel) || dir == s.base {
		s.chown(dir, s.owner)
	}
}

func (s *Store) chown(p string, o fsys.Owner) {
	s.t.Helper()
	if !o.Active() {
		return
	}
	if err := os.Lchown(p, o.UID, o.GID); err != nil {
		s.t.Fatalf("storetest: %v", err)
	}
}
