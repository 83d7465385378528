package datastore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/index"
	"chunkgc/internal/atomicfile"
	"chunkgc/internal/eintr"
	"chunkgc/locking"
)

const (
	// DefaultChunkSize is the fixed chunk size of Ingest, PBS's for images.
	DefaultChunkSize = 4 << 20
	// MinChunkSize and MaxChunkSize bound IngestOptions.ChunkSize, which
	// must be a power of two.
	MinChunkSize = 64 << 10
	MaxChunkSize = 16 << 20

	// DefaultOwner is what Ingest writes to the owner file of a new group.
	DefaultOwner = "root@pam"

	// manifestName is the snapshot's manifest, written last.
	manifestName = "index.json.blob"
	// imageSuffix is appended to a file's base name to name its archive.
	imageSuffix = ".img.fidx"

	// ingestLockTimeout bounds Ingest's waits for its group and snapshot
	// locks (another writer, a forget, GC's last re-list of the group).
	ingestLockTimeout = 10 * time.Second
	// snapshotTimeAttempts bounds the waits for a free snapshot time.
	snapshotTimeAttempts = 3
)

// IngestOptions configure [Ingest].
type IngestOptions struct {
	// NS is the namespace of the group; when set it replaces the group's
	// NS, which must then be empty or the same.
	NS Namespace
	// ChunkSize is the fixed chunk size: a power of two from MinChunkSize
	// to MaxChunkSize; 0 means DefaultChunkSize.
	ChunkSize int
	// Now gives the snapshot time (truncated to the second); nil means
	// time.Now. With Now set, a snapshot that exists at that time is an
	// error; with the real clock, Ingest waits for the next second.
	Now func() time.Time

	hooks ingestHooks
}

// ingestHooks are test hooks of Ingest; nil ones are not called.
type ingestHooks struct {
	// afterChunk runs after each chunk was stored; chunks counts them.
	afterChunk func(chunks int)
}

// ingestStats counts what an ingest stored.
type ingestStats struct {
	chunks      int   // chunks of all files, with repeats
	newChunks   int   // chunks written
	preExisting int   // chunks that existed (touched)
	dataBytes   int64 // bytes read from the files
	newBytes    int64 // blob bytes written
}

// Ingest backs up files into a new snapshot of group g in the store, as a
// PBS client backs up disk images, and returns the snapshot.
//
// Each file becomes the fixed index <base name>.img.fidx: it is cut into
// ChunkSize chunks (the last one short), each stored as a compressed blob
// ([chunkstore.Store.Insert]; a chunk that exists is touched and counted as
// pre-existing). The manifest index.json.blob is written last.
//
// Ingest registers as a writer ([locking.Dir.RegisterWriter]) for its whole
// run, and holds the group's exclusive lock for its whole run (creating the
// group, and its owner file "root@pam", if new) and the snapshot's exclusive
// lock while it writes the snapshot. The snapshot time is Now truncated to
// the second (see [IngestOptions.Now]). Chunks are made durable
// ([chunkstore.Store.SyncFS]) before any index that references them is
// written, and every file is written atomically (temporary file, fsync,
// rename, fsync of the directory). When run as root, the directories and
// files it creates get the owner of the store's base directory (the backup
// user, as for the chunks). If Ingest fails after creating the snapshot
// directory, it removes the partial snapshot.
func Ingest(ctx context.Context, store *chunkstore.Store, lk *locking.Dir, g Group, files []string, opts IngestOptions, log *zap.Logger) (Snapshot, error) {
	if log == nil {
		log = zap.NewNop()
	}
	in, err := newIngest(store, lk, g, files, opts, log)
	if err != nil {
		return Snapshot{}, fmt.Errorf("ingest into %s: %w", g.RelPath(), err)
	}
	defer in.closeFiles()
	snap, err := in.run(ctx)
	if err != nil {
		return Snapshot{}, fmt.Errorf("ingest into %s: %w", in.g.RelPath(), err)
	}
	return snap, nil
}

// ingest is one run of Ingest.
type ingest struct {
	store     *chunkstore.Store
	lk        *locking.Dir
	log       *zap.Logger
	base      string
	g         Group
	chunkSize int
	now       func() time.Time
	fakeClock bool
	own       fileOwner
	hooks     ingestHooks

	files    []*os.File
	archives []string // archive name of each file
	st       ingestStats
}

// archiveFile is one entry of the manifest's file list.
type archiveFile struct {
	Filename  string `json:"filename"`
	Size      uint64 `json:"size"`
	Csum      string `json:"csum"`
	CryptMode string `json:"crypt-mode"`
}

// manifest is PBS's index.json, the BackupManifest.
type manifest struct {
	BackupType  string         `json:"backup-type"`
	BackupID    string         `json:"backup-id"`
	BackupTime  int64          `json:"backup-time"`
	Files       []archiveFile  `json:"files"`
	Unprotected map[string]any `json:"unprotected"`
	Signature   *string        `json:"signature"`
}

// checkChunkSize returns the chunk size to use for n.
func checkChunkSize(n int) (int, error) {
	if n == 0 {
		return DefaultChunkSize, nil
	}
	if n < MinChunkSize || n > MaxChunkSize || n&(n-1) != 0 {
		return 0, fmt.Errorf("chunk size %d: want a power of two from %d (64 KiB) to %d (16 MiB)", n, MinChunkSize, MaxChunkSize)
	}
	return n, nil
}

// newIngest checks the arguments and opens the files, before anything is
// created.
func newIngest(store *chunkstore.Store, lk *locking.Dir, g Group, files []string, opts IngestOptions, log *zap.Logger) (*ingest, error) {
	cs, err := checkChunkSize(opts.ChunkSize)
	if err != nil {
		return nil, err
	}
	if len(opts.NS) > 0 {
		if len(g.NS) > 0 && !slices.Equal(g.NS, opts.NS) {
			return nil, fmt.Errorf("namespace %q of the group differs from option NS %q", g.NS.String(), opts.NS.String())
		}
		g.NS = opts.NS
	}
	if err := g.check(); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no files to back up")
	}
	base := store.Base()
	own, err := ownerOf(base)
	if err != nil {
		return nil, err
	}
	in := &ingest{store: store, lk: lk, log: log.With(zap.String("group", g.RelPath())), base: base, g: g,
		chunkSize: cs, now: opts.Now, fakeClock: opts.Now != nil, own: own, hooks: opts.hooks}
	if in.now == nil {
		in.now = time.Now
	}
	for _, name := range files {
		arch := filepath.Base(name)
		if !validName(arch) {
			in.closeFiles()
			return nil, fmt.Errorf("file %s: base name %q is not a valid archive name ([A-Za-z0-9_][A-Za-z0-9._-]*)", name, arch)
		}
		arch += imageSuffix
		if slices.Contains(in.archives, arch) {
			in.closeFiles()
			return nil, fmt.Errorf("file %s: a file of the same base name is already in the snapshot as %s", name, arch)
		}
		f, err := os.Open(name)
		if err != nil {
			in.closeFiles()
			return nil, err
		}
		in.files = append(in.files, f)
		in.archives = append(in.archives, arch)
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			in.closeFiles()
			if err == nil {
				err = fmt.Errorf("file %s: not a regular file (%s)", name, fi.Mode().Type())
			}
			return nil, err
		}
	}
	return in, nil
}

func (in *ingest) closeFiles() {
	for _, f := range in.files {
		f.Close()
	}
	in.files = nil
}

// run does the locked part of Ingest.
func (in *ingest) run(ctx context.Context) (snap Snapshot, err error) {
	w, err := in.lk.RegisterWriter(time.Now())
	if err != nil {
		return Snapshot{}, err
	}
	defer func() { err = joinCleanup(err, w.Close()) }()

	glock, err := in.lk.LockGroup(ctx, in.g.NS, in.g.Type, in.g.ID, locking.Exclusive, ingestLockTimeout)
	if err != nil {
		return Snapshot{}, err
	}
	defer func() { err = joinCleanup(err, glock.Unlock()) }()
	if err := in.ensureGroup(); err != nil {
		return Snapshot{}, err
	}

	snap, slock, err := in.createSnapshotDir(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	dir := filepath.Join(in.base, snap.RelPath())
	defer func() {
		if err == nil {
			err = joinCleanup(err, slock.Unlock())
			return
		}
		// Remove the partial snapshot, and then its lock file while still
		// holding it, as Forget does.
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove partial snapshot: %w", rerr), slock.Unlock())
			return
		}
		err = joinCleanup(err, slock.RemoveAndUnlock())
	}()

	m := manifest{BackupType: in.g.Type, BackupID: in.g.ID, BackupTime: snap.Time.Unix(), Unprotected: map[string]any{}}
	digests := make([][]blob.Digest, len(in.files))
	sizes := make([]uint64, len(in.files))
	for i, f := range in.files {
		digests[i], sizes[i], err = in.chunkFile(ctx, f)
		if err != nil {
			return Snapshot{}, err
		}
	}
	// The chunks must be on disk before any index that references them.
	if err := in.store.SyncFS(); err != nil {
		return Snapshot{}, err
	}
	for i, arch := range in.archives {
		csum, err := in.writeIndex(filepath.Join(dir, arch), sizes[i], digests[i])
		if err != nil {
			return Snapshot{}, err
		}
		m.Files = append(m.Files, archiveFile{Filename: arch, Size: sizes[i], Csum: hex.EncodeToString(csum[:]), CryptMode: "none"})
	}
	js, err := json.Marshal(&m)
	if err != nil {
		return Snapshot{}, fmt.Errorf("encode manifest: %w", err)
	}
	b, err := blob.Encode(js, true)
	if err != nil {
		return Snapshot{}, fmt.Errorf("encode manifest: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, manifestName), b, in.own); err != nil {
		return Snapshot{}, err
	}
	in.log.Info("snapshot created", zap.String("snapshot", snap.RelPath()), zap.Int("files", len(in.files)),
		zap.Int64("data-bytes", in.st.dataBytes), zap.Int("chunks", in.st.chunks),
		zap.Int("new-chunks", in.st.newChunks), zap.Int("pre-existing-chunks", in.st.preExisting),
		zap.Int64("new-chunk-bytes", in.st.newBytes))
	return snap, nil
}

// joinCleanup adds the error of a cleanup step to err.
func joinCleanup(err, cerr error) error {
	if cerr == nil {
		return err
	}
	return errors.Join(err, cerr)
}

// ensureGroup creates the namespace and group directories and the owner
// file as needed; the caller holds the group lock.
func (in *ingest) ensureGroup() error {
	gdir := filepath.Join(in.base, in.g.RelPath())
	if err := mkdirs(in.base, in.g.RelPath(), in.own); err != nil {
		return err
	}
	_, err := os.Lstat(filepath.Join(gdir, ownerName))
	if err == nil {
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return writeFileAtomic(filepath.Join(gdir, ownerName), []byte(DefaultOwner+"\n"), in.own)
}

// createSnapshotDir locks and creates the directory of a new snapshot at
// the current time. A time that is taken (a snapshot of the same second)
// is an error with a fake clock; with the real one it waits for the next
// second.
func (in *ingest) createSnapshotDir(ctx context.Context) (Snapshot, *locking.Lock, error) {
	gdir := filepath.Join(in.base, in.g.RelPath())
	for attempt := 1; ; attempt++ {
		s := Snapshot{Group: in.g, Time: in.now().UTC().Truncate(time.Second)}
		lock, err := in.lk.LockSnapshot(ctx, s.NS, s.Type, s.ID, s.TimeString(), locking.Exclusive, ingestLockTimeout)
		if err != nil {
			return Snapshot{}, nil, err
		}
		err = mkdirOwned(filepath.Join(gdir, s.TimeString()), in.own)
		if err == nil {
			if err := atomicfile.SyncDir(gdir); err != nil {
				return Snapshot{}, nil, errors.Join(err, lock.Unlock())
			}
			return s, lock, nil
		}
		if uerr := lock.Unlock(); uerr != nil {
			return Snapshot{}, nil, errors.Join(err, uerr)
		}
		if !errors.Is(err, fs.ErrExist) || in.fakeClock || attempt == snapshotTimeAttempts {
			return Snapshot{}, nil, fmt.Errorf("create snapshot: %w", err)
		}
		t := time.NewTimer(time.Until(s.Time.Add(time.Second)))
		select {
		case <-ctx.Done():
			t.Stop()
			return Snapshot{}, nil, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// chunkFile stores the chunks of f and returns their digests and the
// file's size.
func (in *ingest) chunkFile(ctx context.Context, f *os.File) ([]blob.Digest, uint64, error) {
	buf := make([]byte, in.chunkSize)
	var digests []blob.Digest
	var size uint64
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, context.Cause(ctx)
		}
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			data := buf[:n]
			d := blob.Sum(data)
			b, err := blob.Encode(data, true)
			if err != nil {
				return nil, 0, fmt.Errorf("chunk %d of %s: %w", len(digests), f.Name(), err)
			}
			pre, sz, err := in.store.Insert(b, d)
			if err != nil {
				return nil, 0, fmt.Errorf("chunk %d of %s: %w", len(digests), f.Name(), err)
			}
			in.st.chunks++
			if pre {
				in.st.preExisting++
			} else {
				in.st.newChunks++
				in.st.newBytes += sz
			}
			digests = append(digests, d)
			size += uint64(n)
			in.st.dataBytes += int64(n)
			if in.hooks.afterChunk != nil {
				in.hooks.afterChunk(in.st.chunks)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return digests, size, nil
		default:
			return nil, 0, fmt.Errorf("read %s: %w", f.Name(), err)
		}
	}
}

// writeIndex writes the fixed index at path and returns its checksum as
// read back from the file.
func (in *ingest) writeIndex(path string, size uint64, digests []blob.Digest) ([32]byte, error) {
	if err := index.WriteFixedFile(path, size, uint64(in.chunkSize), digests); err != nil {
		return [32]byte{}, err
	}
	if err := in.own.chown(path); err != nil {
		return [32]byte{}, err
	}
	r, err := index.Open(path)
	if err != nil {
		return [32]byte{}, err
	}
	csum := r.Header().Csum
	if err := r.Close(); err != nil {
		return [32]byte{}, err
	}
	return csum, nil
}

// fileOwner is who gets the directories and files Ingest creates.
type fileOwner struct {
	uid, gid int
	active   bool // running as root: chown
}

// ownerOf returns the owner of the store's base directory, which chunkstore
// gives to the backup user.
func ownerOf(base string) (fileOwner, error) {
	var st unix.Stat_t
	if err := eintr.Retry(func() error { return unix.Stat(base, &st) }); err != nil {
		return fileOwner{}, &fs.PathError{Op: "stat", Path: base, Err: err}
	}
	return fileOwner{uid: int(st.Uid), gid: int(st.Gid), active: os.Geteuid() == 0}, nil
}

func (o fileOwner) chown(path string) error {
	if !o.active {
		return nil
	}
	if err := eintr.Retry(func() error { return unix.Lchown(path, o.uid, o.gid) }); err != nil {
		return &fs.PathError{Op: "chown", Path: path, Err: err}
	}
	return nil
}

// mkdirs creates the missing directories of rel under base, 0755 and
// chowned.
func mkdirs(base, rel string, own fileOwner) error {
	p := base
	for c := range strings.SplitSeq(rel, "/") {
		p = filepath.Join(p, c)
		err := mkdirOwned(p, own)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err != nil {
			fi, serr := os.Lstat(p)
			if serr != nil {
				return serr
			}
			if !fi.IsDir() {
				return &fs.PathError{Op: "mkdir", Path: p, Err: unix.ENOTDIR}
			}
		}
	}
	return nil
}

// mkdirOwned creates directory p (0755) and chowns it; an existing p gives
// an error matching fs.ErrExist.
func mkdirOwned(p string, own fileOwner) error {
	if err := eintr.Retry(func() error { return unix.Mkdir(p, 0o755) }); err != nil {
		return &fs.PathError{Op: "mkdir", Path: p, Err: err}
	}
	return own.chown(p)
}

// writeFileAtomic writes data to path (0644, chowned) with atomicfile.
func writeFileAtomic(path string, data []byte, own fileOwner) error {
	owner := atomicfile.NoOwner
	if own.active {
		owner = atomicfile.Owner{UID: own.uid, GID: own.gid}
	}
	return atomicfile.WriteBytes(path, data, 0o644, owner)
}
