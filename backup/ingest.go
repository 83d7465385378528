package backup

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
	"chunkgc/datastore"
	"chunkgc/index"
	"chunkgc/internal/atomicfile"
	"chunkgc/internal/fsys"
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
	NS datastore.Namespace
	// ChunkSize is the fixed chunk size: a power of two from MinChunkSize
	// to MaxChunkSize; 0 means DefaultChunkSize.
	ChunkSize int
	// Now gives the snapshot time (truncated to the second); nil means
	// time.Now. With Now set, a snapshot that exists at that time is an
	// error; with the real clock, Ingest waits for the next second.
	Now func() time.Time
	// Syscalls is the seam of Ingest's own syscalls on the tree (stat,
	// mkdir, open, chown, fsync, unlink, getdents); nil means fsys.Real{}.
	// The chunks go through the store's seam (chunkstore.Options.Syscalls);
	// nofollow's openat2 opens and atomicfile make their calls directly.
	Syscalls fsys.Syscalls
	// S3, when not nil, makes the store an S3 datastore's local cache and
	// sends the chunks to its bucket ([S3Target]).
	S3 *S3Target

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
// [datastore.ErrUnexpectedEntry] that names it, and nothing is written
// outside the store.
//
// Into an S3 datastore ([IngestOptions.S3]) it uploads what PBS 4.2
// uploads to <store>/.cnt/<relative path>, at the points PBS does: an
// empty .namespace marker for each level of the namespace (without
// replacing one) before its directories are made, a new group's owner
// file before its local one, each index file as written on disk once it
// is closed, and the manifest before its local one, which finishes the
// snapshot. Every chunk is uploaded ([chunkstore.Store.InsertS3]) before
// the first index, so no index object references a missing chunk object.
// A failed ingest deletes the objects it uploaded for its snapshot, as
// PBS's snapshot removal deletes <store>/.cnt/<snapshot>.
func Ingest(ctx context.Context, store *chunkstore.Store, lk *locking.Dir, g datastore.Group, files []string, opts IngestOptions, log *zap.Logger) (datastore.Snapshot, error) {
	if log == nil {
		log = zap.NewNop()
	}
	in, err := newIngest(store, lk, g, files, opts, log)
	if err != nil {
		return datastore.Snapshot{}, fmt.Errorf("ingest into %s: %w", g.RelPath(), err)
	}
	defer in.close()
	snap, err := in.run(ctx)
	if err != nil {
		return datastore.Snapshot{}, fmt.Errorf("ingest into %s: %w", in.g.RelPath(), err)
	}
	return snap, nil
}

// ingest is one run of Ingest.
type ingest struct {
	store     *chunkstore.Store
	lk        *locking.Dir
	log       *zap.Logger
	tree      *datastore.Tree
	sys       fsys.Syscalls // the tree's
	g         datastore.Group
	chunkSize int
	now       func() time.Time
	fakeClock bool
	own       fsys.Owner // of the store's base: who gets what Ingest creates
	s3        *S3Target
	hooks     ingestHooks

	files    []*os.File
	archives []string // archive name of each file
	st       ingestStats
	// uploads are the keys of the snapshot's files uploaded to S3, which
	// a failed ingest deletes again.
	uploads []string
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

// newIngest checks the arguments and opens the files and the store's
// tree, before anything is created.
func newIngest(store *chunkstore.Store, lk *locking.Dir, g datastore.Group, files []string, opts IngestOptions, log *zap.Logger) (*ingest, error) {
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
	if err := g.Check(); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no files to back up")
	}
	in := &ingest{store: store, lk: lk, log: log.With(zap.String("group", g.RelPath())), g: g,
		chunkSize: cs, now: opts.Now, fakeClock: opts.Now != nil, hooks: opts.hooks, s3: opts.S3}
	if in.now == nil {
		in.now = time.Now
	}
	if err := in.openFiles(files); err != nil {
		in.close()
		return nil, err
	}
	if err := in.openTree(opts.Syscalls); err != nil {
		in.close()
		return nil, err
	}
	return in, nil
}

// openFiles opens the source files, each a regular file whose base name
// is a valid archive name that no other file of the snapshot has.
func (in *ingest) openFiles(files []string) error {
	for _, name := range files {
		arch := filepath.Base(name)
		if !datastore.ValidName(arch) {
			return fmt.Errorf("file %s: base name %q is not a valid archive name ([A-Za-z0-9_][A-Za-z0-9._-]*)", name, arch)
		}
		arch += imageSuffix
		if slices.Contains(in.archives, arch) {
			return fmt.Errorf("file %s: a file of the same base name is already in the snapshot as %s", name, arch)
		}
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		in.files = append(in.files, f)
		in.archives = append(in.archives, arch)
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("file %s: not a regular file (%s)", name, fi.Mode().Type())
		}
	}
	return nil
}

// openTree opens the store's tree with seam sys and reads the owner of its
// base directory, which chunkstore gives to the backup user.
func (in *ingest) openTree(sys fsys.Syscalls) error {
	tree, err := datastore.NewTree(in.store.BaseFD(), in.store.Base(), datastore.TreeOptions{Syscalls: sys})
	if err != nil {
		return err
	}
	in.tree, in.sys = tree, tree.Syscalls()
	var st unix.Stat_t
	if err := in.sys.Fstatat(tree.FD(), "", &st, unix.AT_EMPTY_PATH); err != nil {
		return fsys.WithPath(err, tree.Base())
	}
	in.own = fsys.OwnerOf(&st)
	return nil
}

// close closes the source files and the tree.
func (in *ingest) close() {
	for _, f := range in.files {
		f.Close()
	}
	in.files = nil
	if in.tree != nil {
		in.tree.Close()
		in.tree = nil
	}
}

// run does the locked part of Ingest: register as a writer, lock and
// create the group, lock and create the snapshot directory, write the
// snapshot, and remove it again if that failed.
func (in *ingest) run(ctx context.Context) (snap datastore.Snapshot, err error) {
	w, err := in.lk.RegisterWriter(time.Now())
	if err != nil {
		return datastore.Snapshot{}, err
	}
	defer func() { err = joinCleanup(err, w.Close()) }()

	glock, err := in.lk.LockGroup(ctx, in.g.NS, in.g.Type, in.g.ID, locking.Exclusive, ingestLockTimeout)
	if err != nil {
		return datastore.Snapshot{}, err
	}
	defer func() { err = joinCleanup(err, glock.Unlock()) }()
	gfd, err := in.ensureGroup(ctx)
	if err != nil {
		return datastore.Snapshot{}, err
	}
	defer unix.Close(gfd)

	created, sfd, slock, err := in.createSnapshotDir(ctx, gfd)
	if err != nil {
		return datastore.Snapshot{}, err
	}
	// created, not snap: a failing return zeroes snap before the cleanup.
	defer func() { err = in.closeSnapshot(ctx, err, gfd, sfd, created, slock) }()
	if err := in.writeSnapshot(ctx, sfd, created); err != nil {
		return datastore.Snapshot{}, err
	}
	in.log.Info("snapshot created", zap.String("snapshot", created.RelPath()), zap.Int("files", len(in.files)),
		zap.Int64("data-bytes", in.st.dataBytes), zap.Int("chunks", in.st.chunks),
		zap.Int("new-chunks", in.st.newChunks), zap.Int("pre-existing-chunks", in.st.preExisting),
		zap.Int64("new-chunk-bytes", in.st.newBytes))
	return created, nil
}

// closeSnapshot closes the snapshot directory sfd and drops its lock after
// the snapshot was written with error err. A failed snapshot is removed,
// relative to the group's fd gfd, and then its lock file while still
// holding it, as Forget does. It returns err with the cleanup's errors.
func (in *ingest) closeSnapshot(ctx context.Context, err error, gfd, sfd int, snap datastore.Snapshot, slock *locking.Lock) error {
	if err == nil {
		unix.Close(sfd)
		return joinCleanup(err, slock.Unlock())
	}
	if derr := in.s3DeleteUploads(ctx); derr != nil {
		unix.Close(sfd)
		return errors.Join(err, derr, slock.Unlock())
	}
	dir := in.tree.Path(snap.RelPath())
	if rerr := removeDir(in.sys, gfd, snap.TimeString(), sfd, dir); rerr != nil {
		unix.Close(sfd)
		return errors.Join(err, fmt.Errorf("remove partial snapshot: %w", rerr), slock.Unlock())
	}
	unix.Close(sfd)
	return joinCleanup(err, slock.RemoveAndUnlock())
}

// writeSnapshot writes snapshot snap into its directory open as sfd: the
// chunks of every file, made durable before any index that references
// them, then the fixed indexes, and last the manifest.
func (in *ingest) writeSnapshot(ctx context.Context, sfd int, snap datastore.Snapshot) error {
	dir := in.tree.Path(snap.RelPath())
	digests := make([][]blob.Digest, len(in.files))
	sizes := make([]uint64, len(in.files))
	for i, f := range in.files {
		var err error
		if digests[i], sizes[i], err = in.chunkFile(ctx, f); err != nil {
			return err
		}
	}
	if err := in.store.SyncFS(); err != nil {
		return err
	}
	m := manifest{BackupType: in.g.Type, BackupID: in.g.ID, BackupTime: snap.Time.Unix(), Unprotected: map[string]any{}}
	for i, arch := range in.archives {
		csum, err := in.writeIndex(sfd, dir, arch, sizes[i], digests[i])
		if err != nil {
			return err
		}
		if err := in.s3Upload(ctx, sfd, dir, snap.RelPath(), arch); err != nil {
			return err
		}
		m.Files = append(m.Files, archiveFile{Filename: arch, Size: sizes[i], Csum: hex.EncodeToString(csum[:]), CryptMode: "none"})
	}
	return in.writeManifest(ctx, sfd, dir, snap.RelPath(), &m)
}

// writeManifest writes the manifest m as the blob index.json.blob into
// the snapshot directory open as sfd (at dir, rel below the base); into an
// S3 datastore it is uploaded first, as PBS's update_manifest does: the
// local manifest is what makes the snapshot finished.
func (in *ingest) writeManifest(ctx context.Context, sfd int, dir, rel string, m *manifest) error {
	js, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	b, err := blob.Encode(js, true)
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	if err := in.s3Put(ctx, rel+"/"+manifestName, b, true); err != nil {
		return err
	}
	return atomicfile.WriteBytesAt(sfd, dir, manifestName, b, 0o644, in.own)
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
// directory is an error matching [datastore.ErrUnexpectedEntry] that names
// it.
func (in *ingest) ensureGroup(ctx context.Context) (int, error) {
	rel := in.g.RelPath()
	gdir := in.tree.Path(rel)
	if err := in.s3Namespaces(ctx); err != nil {
		return -1, err
	}
	gfd, err := nofollow.MkdirAll(in.sys, in.tree.FD(), in.tree.Base(), rel, 0o755, in.own)
	if err != nil {
		return -1, datastore.Doubt(err)
	}
	var st unix.Stat_t
	err = in.sys.Fstatat(gfd, ownerName, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG:
		return gfd, nil
	case err == nil:
		unix.Close(gfd)
		return -1, datastore.Unexpected("stat", gdir+"/"+ownerName, st.Mode, "the group's owner file")
	case !errors.Is(err, unix.ENOENT):
		unix.Close(gfd)
		return -1, fsys.WithPath(err, gdir+"/"+ownerName)
	}
	owner := []byte(DefaultOwner + "\n")
	if err := in.s3Put(ctx, rel+"/"+ownerName, owner, false); err != nil {
		unix.Close(gfd)
		return -1, err
	}
	if err := atomicfile.WriteBytesAt(gfd, gdir, ownerName, owner, 0o644, in.own); err != nil {
		unix.Close(gfd)
		return -1, err
	}
	return gfd, nil
}

// createSnapshotDir locks and creates, in the group directory open as gfd,
// the directory of a new snapshot at the current time, and returns an fd
// of it. A time that is taken (a snapshot of the same second) is an error
// with a fake clock; with the real one it waits for the next second.
func (in *ingest) createSnapshotDir(ctx context.Context, gfd int) (datastore.Snapshot, int, *locking.Lock, error) {
	gdir := in.tree.Path(in.g.RelPath())
	for attempt := 1; ; attempt++ {
		s := datastore.Snapshot{Group: in.g, Time: in.now().UTC().Truncate(time.Second)}
		lock, err := in.lk.LockSnapshot(ctx, s.NS, s.Type, s.ID, s.TimeString(), locking.Exclusive, ingestLockTimeout)
		if err != nil {
			return datastore.Snapshot{}, -1, nil, err
		}
		sfd, err := in.mkdirOwned(gfd, s.RelPath())
		if err == nil {
			if err := in.sys.Fsync(gfd); err != nil {
				unix.Close(sfd)
				return datastore.Snapshot{}, -1, nil, errors.Join(fsys.WithPath(err, gdir), lock.Unlock())
			}
			return s, sfd, lock, nil
		}
		if uerr := lock.Unlock(); uerr != nil {
			return datastore.Snapshot{}, -1, nil, errors.Join(err, uerr)
		}
		if !errors.Is(err, fs.ErrExist) || in.fakeClock || attempt == snapshotTimeAttempts {
			return datastore.Snapshot{}, -1, nil, fmt.Errorf("create snapshot: %w", err)
		}
		t := time.NewTimer(time.Until(s.Time.Add(time.Second)))
		select {
		case <-ctx.Done():
			t.Stop()
			return datastore.Snapshot{}, -1, nil, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// mkdirOwned creates directory rel (0755), whose parent directory is open
// as dirfd, opens it without following a symlink and chowns it through its
// fd. An existing one gives an error matching fs.ErrExist.
func (in *ingest) mkdirOwned(dirfd int, rel string) (int, error) {
	name := rel[strings.LastIndexByte(rel, '/')+1:]
	if err := in.sys.Mkdirat(dirfd, name, 0o755); err != nil {
		return -1, fsys.WithPath(err, in.tree.Path(rel))
	}
	fd, err := in.tree.OpenSubdir(dirfd, rel)
	if err != nil {
		return -1, err
	}
	if err := in.own.Fchown(in.sys, fd); err != nil {
		unix.Close(fd)
		return -1, fsys.WithPath(err, in.tree.Path(rel))
	}
	return fd, nil
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
			pre, sz, err := in.insert(ctx, b, d)
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

// insert stores one chunk: in the chunk store, or by the S3 protocol.
func (in *ingest) insert(ctx context.Context, b []byte, d blob.Digest) (bool, int64, error) {
	if in.s3 != nil {
		return in.store.InsertS3(ctx, in.lk, in.s3.Bucket, in.s3.Store, in.s3.NoCache, b, d)
	}
	return in.store.Insert(b, d)
}

// writeIndex writes the fixed index name into the snapshot directory open
// as sfd (at dir) and returns its checksum as read back from the file.
func (in *ingest) writeIndex(sfd int, dir, name string, size uint64, digests []blob.Digest) ([32]byte, error) {
	if err := index.WriteFixedFileAt(sfd, dir, name, in.own, size, uint64(in.chunkSize), digests); err != nil {
		return [32]byte{}, err
	}
	f, err := nofollow.OpenFile(sfd, dir, name)
	if err != nil {
		return [32]byte{}, datastore.Doubt(err)
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
