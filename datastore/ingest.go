package datastore

import (
	"chunkgc/internal/fsys"

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
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/index"
	"chunkgc/internal/atomicfile"
	"chunkgc/internal/eintr"
	"chunkgc/internal/nofollow"
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
//
// Directories are created and files written relative to directory fds
// opened from the store's base without following a symlink
// (nofollow.MkdirAll, atomicfile.WriteAt): a namespace, type, group or
// snapshot component that is a symlink or no directory is an error matching
// [ErrUnexpectedEntry] that names it, and nothing is written outside the
// store.
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
	tree      *Tree
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
	tree, err := OpenStoreTree(store)
	if err != nil {
		return nil, err
	}
	own, err := ownerOf(tree)
	if err != nil {
		tree.Close()
		return nil, err
	}
	in := &ingest{store: store, lk: lk, log: log.With(zap.String("group", g.RelPath())), tree: tree, g: g,
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

// closeFiles closes the source files and the tree.
func (in *ingest) closeFiles() {
	for _, f := range in.files {
		f.Close()
	}
	in.files = nil
	if in.tree != nil {
		in.tree.Close()
		in.tree = nil
	}
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
	gfd, err := in.ensureGroup()
	if err != nil {
		return Snapshot{}, err
	}
	defer unix.Close(gfd)

	snap, sfd, slock, err := in.createSnapshotDir(ctx, gfd)
	if err != nil {
		return Snapshot{}, err
	}
	dir, snapName := in.tree.path(snap.RelPath()), snap.TimeString() // snap is zeroed by a failing return
	defer func() {
		unix.Close(sfd)
		if err == nil {
			err = joinCleanup(err, slock.Unlock())
			return
		}
		// Remove the partial snapshot, relative to the group's fd, and
		// then its lock file while still holding it, as Forget does.
		if rerr := removePartial(gfd, snapName, dir); rerr != nil {
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
		csum, err := in.writeIndex(sfd, dir, arch, sizes[i], digests[i])
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
	if err := atomicfile.WriteBytesAt(sfd, dir, manifestName, b, 0o644, in.own.atomic()); err != nil {
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
// file as needed, and returns an fd of the group directory; the caller
// holds the group lock. Directories are created and opened from the tree's
// fd without following a symlink: a component that is a symlink or not a
// directory is an error matching [ErrUnexpectedEntry] that names it.
func (in *ingest) ensureGroup() (int, error) {
	rel := in.g.RelPath()
	gdir := in.tree.path(rel)
	gfd, err := nofollow.MkdirAll(in.tree.fd, in.tree.base, rel, 0o755, in.own.uidOrNone(), in.own.gid)
	if err != nil {
		return -1, doubt(err)
	}
	var st unix.Stat_t
	err = eintr.Retry(func() error { return unix.Fstatat(gfd, ownerName, &st, unix.AT_SYMLINK_NOFOLLOW) })
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG:
		return gfd, nil
	case err == nil:
		unix.Close(gfd)
		return -1, unexpected("stat", gdir+"/"+ownerName, dtype(st.Mode), "the group's owner file")
	case !errors.Is(err, unix.ENOENT):
		unix.Close(gfd)
		return -1, &fs.PathError{Op: "fstatat", Path: gdir + "/" + ownerName, Err: err}
	}
	if err := atomicfile.WriteBytesAt(gfd, gdir, ownerName, []byte(DefaultOwner+"\n"), 0o644, in.own.atomic()); err != nil {
		unix.Close(gfd)
		return -1, err
	}
	return gfd, nil
}

// createSnapshotDir locks and creates, in the group directory open as gfd,
// the directory of a new snapshot at the current time, and returns an fd
// of it. A time that is taken (a snapshot of the same second) is an error
// with a fake clock; with the real one it waits for the next second.
func (in *ingest) createSnapshotDir(ctx context.Context, gfd int) (Snapshot, int, *locking.Lock, error) {
	gdir := in.tree.path(in.g.RelPath())
	for attempt := 1; ; attempt++ {
		s := Snapshot{Group: in.g, Time: in.now().UTC().Truncate(time.Second)}
		lock, err := in.lk.LockSnapshot(ctx, s.NS, s.Type, s.ID, s.TimeString(), locking.Exclusive, ingestLockTimeout)
		if err != nil {
			return Snapshot{}, -1, nil, err
		}
		sfd, err := in.mkdirOwned(gfd, gdir, s.TimeString())
		if err == nil {
			if err := eintr.Retry(func() error { return unix.Fsync(gfd) }); err != nil {
				unix.Close(sfd)
				return Snapshot{}, -1, nil, errors.Join(&fs.PathError{Op: "fsync", Path: gdir, Err: err}, lock.Unlock())
			}
			return s, sfd, lock, nil
		}
		if uerr := lock.Unlock(); uerr != nil {
			return Snapshot{}, -1, nil, errors.Join(err, uerr)
		}
		if !errors.Is(err, fs.ErrExist) || in.fakeClock || attempt == snapshotTimeAttempts {
			return Snapshot{}, -1, nil, fmt.Errorf("create snapshot: %w", err)
		}
		t := time.NewTimer(time.Until(s.Time.Add(time.Second)))
		select {
		case <-ctx.Done():
			t.Stop()
			return Snapshot{}, -1, nil, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// mkdirOwned creates directory name (0755) in the directory open as dirfd
// (at dirPath), opens it without following a symlink and chowns it through
// its fd. An existing name gives an error matching fs.ErrExist.
func (in *ingest) mkdirOwned(dirfd int, dirPath, name string) (int, error) {
	p := dirPath + "/" + name
	if err := eintr.Retry(func() error { return unix.Mkdirat(dirfd, name, 0o755) }); err != nil {
		return -1, &fs.PathError{Op: "mkdir", Path: p, Err: err}
	}
	fd, err := openSubdir(dirfd, name, p, wantSnapshot)
	if err != nil {
		return -1, err
	}
	if in.own.active {
		if err := eintr.Retry(func() error { return unix.Fchown(fd, in.own.uid, in.own.gid) }); err != nil {
			unix.Close(fd)
			return -1, &fs.PathError{Op: "chown", Path: p, Err: err}
		}
	}
	return fd, nil
}

// removePartial removes the snapshot directory name of the group directory
// open as gfd (at path dir), and everything in it, relative to gfd.
func removePartial(gfd int, name, dir string) error {
	sfd, err := openSubdir(gfd, name, dir, wantSnapshot)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = removeContents(sfd, dir, 0)
	unix.Close(sfd)
	if err != nil {
		return err
	}
	err = eintr.Retry(func() error { return unix.Unlinkat(gfd, name, unix.AT_REMOVEDIR) })
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "rmdir", Path: dir, Err: err}
	}
	return nil
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

// writeIndex writes the fixed index name into the snapshot directory open
// as sfd (at dir) and returns its checksum as read back from the file.
func (in *ingest) writeIndex(sfd int, dir, name string, size uint64, digests []blob.Digest) ([32]byte, error) {
	if err := index.WriteFixedFileAt(sfd, dir, name, in.own.atomic(), size, uint64(in.chunkSize), digests); err != nil {
		return [32]byte{}, err
	}
	f, err := nofollow.OpenFile(sfd, dir, name)
	if err != nil {
		return [32]byte{}, doubt(err)
	}
	r, err := index.OpenFile(f)
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
func ownerOf(t *Tree) (fileOwner, error) {
	var st unix.Stat_t
	if err := eintr.Retry(func() error { return unix.Fstat(t.fd, &st) }); err != nil {
		return fileOwner{}, &fs.PathError{Op: "fstat", Path: t.base, Err: err}
	}
	return fileOwner{uid: int(st.Uid), gid: int(st.Gid), active: os.Geteuid() == 0}, nil
}

// atomic returns the owner for atomicfile: none unless running as root.
func (o fileOwner) atomic() fsys.Owner {
	if !o.active {
		return fsys.Keep
	}
	return fsys.Owner{UID: o.uid, GID: o.gid}
}

// uidOrNone returns the uid to chown new directories to, -1 for none.
func (o fileOwner) uidOrNone() int {
	if !o.active {
		return -1
	}
	return o.uid
}
