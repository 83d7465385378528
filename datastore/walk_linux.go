package datastore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
)

// direntBufSize is the getdents buffer: 8 KiB, as os.File.ReadDir uses.
const direntBufSize = 8 << 10

// lostFound is the directory fsck of ext2/3/4 keeps at a filesystem's root;
// only root may read it.
const lostFound = "lost+found"

// walkHooks are test hooks of the walk; nil ones are not called.
type walkHooks struct {
	// afterList runs after a directory was listed (and sorted) and before
	// any of its entries is looked at; rel is "" for base. It may change
	// the entries' types.
	afterList func(rel string, ents []dirent)
	// afterOpen runs after a subdirectory was opened and before it is
	// listed.
	afterOpen func(rel string)
}

// WalkIndexFiles calls fn with the path, relative to base and with "/"
// separators, of every index file under base: every regular file named
// *.fidx or *.didx, inside the namespace/group/snapshot scheme or not
// (see [InScheme]). This is the listing GC marks from (SPEC §6.3).
//
// It is [Tree.WalkIndexFiles] on the store at base (base itself may be a
// symlink; nothing below it is followed).
func WalkIndexFiles(ctx context.Context, base string, log *zap.Logger, fn func(rel string) error) error {
	return walkIndexFiles(ctx, base, log, fn, walkHooks{})
}

func walkIndexFiles(ctx context.Context, base string, log *zap.Logger, fn func(rel string) error, hooks walkHooks) error {
	t, err := OpenTree(base)
	if err != nil {
		return fmt.Errorf("walk index files: %w", err)
	}
	defer t.Close()
	return t.walkIndexFiles(ctx, log, fn, hooks)
}

// WalkIndexFiles calls fn with the path, relative to the base and with "/"
// separators, of every index file in the tree: every regular file named
// *.fidx or *.didx, inside the namespace/group/snapshot scheme or not
// (see [InScheme]). This is the listing GC marks from (SPEC §6.3).
//
// It does not descend into hidden entries (names starting with "."), so
// .chunks is never listed, and does not follow symlinks. Each directory is
// listed in full (getdents) and its entries are visited in name order, so
// the order is deterministic.
//
// Doubt stops the walk with an error naming the path (see the package doc,
// "No escape"): an entry that is a symlink, FIFO, socket or device where
// the scheme expects a namespace, group type, group or snapshot directory,
// or that is named like an index anywhere, matches [ErrUnexpectedEntry]
// (other such entries are skipped, logged at debug level); so does a
// directory that became a symlink, FIFO, socket or device between its
// listing and its open; an index whose path is PATH_MAX bytes or longer
// fails with ENAMETOOLONG. A permission error (EACCES or EPERM) anywhere
// stops the walk with an error matching fs.ErrPermission: an index GC
// cannot see would have its chunks removed. The one exception is a
// lost+found directory directly under the base that cannot be opened: it
// is skipped and logged at debug level. An entry or directory that
// vanishes between being listed and being looked at was removed
// concurrently (a pruned snapshot) and is skipped, as is a directory that
// became a regular file. Any other error stops the walk. ctx is checked
// once per directory; fn's error stops the walk and is returned as is.
func (t *Tree) WalkIndexFiles(ctx context.Context, log *zap.Logger, fn func(rel string) error) error {
	return t.walkIndexFiles(ctx, log, fn, walkHooks{})
}

func (t *Tree) walkIndexFiles(ctx context.Context, log *zap.Logger, fn func(rel string) error, hooks walkHooks) error {
	if log == nil {
		log = zap.NewNop()
	}
	fd, err := t.OpenDir("")
	if err != nil {
		return fmt.Errorf("walk index files: %w", err)
	}
	defer unix.Close(fd)
	w := walker{ctx: ctx, tree: t, log: log, fn: fn, hooks: hooks, buf: make([]byte, direntBufSize)}
	return w.dir(fd, "")
}

type walker struct {
	ctx   context.Context
	tree  *Tree
	log   *zap.Logger
	fn    func(rel string) error
	hooks walkHooks
	buf   []byte // getdents buffer, shared: a directory is read in full before its children
}

// path returns the full path of rel, for errors.
func (w *walker) path(rel string) string { return w.tree.Path(rel) }

// dir visits the entries of the open directory fd, which is rel under base
// ("" for base).
func (w *walker) dir(fd int, rel string) error {
	if err := w.ctx.Err(); err != nil {
		return context.Cause(w.ctx)
	}
	ents, err := readDirents(w.tree.sys, fd, w.path(rel), w.buf)
	if rel != "" && errors.Is(err, unix.ENOENT) {
		// Linux's getdents fails with ENOENT on a directory that was
		// removed after it was opened.
		w.vanished(rel)
		return nil
	}
	if err != nil {
		return fmt.Errorf("walk index files: %w", err)
	}
	slices.SortFunc(ents, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
	if w.hooks.afterList != nil {
		w.hooks.afterList(rel, ents)
	}
	prefix := rel
	if prefix != "" {
		prefix += "/"
	}
	for _, e := range ents {
		if strings.HasPrefix(e.name, ".") {
			continue
		}
		crel := prefix + e.name
		typ := e.typ
		if typ == unix.DT_UNKNOWN {
			var st unix.Stat_t
			err := w.tree.sys.Fstatat(fd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW)
			if errors.Is(err, unix.ENOENT) {
				w.vanished(crel)
				continue
			}
			if err != nil {
				return w.fail(crel, err)
			}
			typ = dtype(st.Mode)
		}
		switch typ {
		case unix.DT_REG:
			if isIndexName(e.name) {
				if p := w.path(crel); len(p) >= unix.PathMax {
					return fmt.Errorf("walk index files: index path of %d bytes, the kernel takes fewer than %d: %w",
						len(p), unix.PathMax, &fs.PathError{Op: "open", Path: p, Err: unix.ENAMETOOLONG})
				}
				if err := w.fn(crel); err != nil {
					return err
				}
			}
		case unix.DT_DIR:
			if err := w.subdir(fd, e.name, crel); err != nil {
				return err
			}
		default:
			if err := w.other(crel, e.name, typ); err != nil {
				return err
			}
		}
	}
	return nil
}

// other decides on an entry that is neither a regular file nor a
// directory: an error where the tree expects a directory or an index file,
// else skipped.
func (w *walker) other(rel, name string, typ uint8) error {
	want := schemeRole(rel)
	if want == "" && isIndexName(name) {
		want = wantIndex
	}
	if want != "" {
		return fmt.Errorf("walk index files: %w", unexpected("walk", w.path(rel), typ, want))
	}
	if ce := w.log.Check(zap.DebugLevel, "skipping entry outside the scheme that is neither a file nor a directory"); ce != nil {
		ce.Write(zap.String("path", w.path(rel)), zap.String("type", dtName(typ)))
	}
	return nil
}

// subdir opens directory name of the open directory fd and walks it.
func (w *walker) subdir(fd int, name, rel string) error {
	cfd, err := w.tree.sys.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		w.vanished(rel)
		return nil
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		return w.replaced(fd, name, rel, err)
	case (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) && rel == lostFound:
		if ce := w.log.Check(zap.DebugLevel, "skipping unreadable lost+found"); ce != nil {
			ce.Write(zap.String("path", w.path(rel)), zap.Error(err))
		}
		return nil
	default:
		return w.fail(rel, err)
	}
	defer unix.Close(cfd)
	if w.hooks.afterOpen != nil {
		w.hooks.afterOpen(rel)
	}
	return w.dir(cfd, rel)
}

// replaced decides on a directory that was listed and is no directory when
// opened (errno ENOTDIR or ELOOP): a symlink, FIFO, socket or device is the
// swap an attacker does and stops the walk; a regular file is what a
// removal and a new file leave and is skipped, as is an entry that is gone.
func (w *walker) replaced(fd int, name, rel string, errno error) error {
	var st unix.Stat_t
	err := w.tree.sys.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		w.vanished(rel)
		return nil
	case err != nil:
		return w.fail(rel, err)
	case st.Mode&unix.S_IFMT == unix.S_IFREG:
		if ce := w.log.Check(zap.DebugLevel, "directory replaced by a file while walking, skipped"); ce != nil {
			ce.Write(zap.String("path", w.path(rel)), zap.Error(errno))
		}
		return nil
	}
	typ, err := w.tree.notDir(fd, name, errno)
	if err != nil {
		return w.fail(rel, err)
	}
	want := schemeRole(rel)
	if want == "" {
		want = "the directory it listed"
	}
	return fmt.Errorf("walk index files: directory replaced while walking: %w", unexpected("open", w.path(rel), typ, want))
}

// vanished logs an entry removed between listing and looking at it.
func (w *walker) vanished(rel string) {
	if ce := w.log.Check(zap.DebugLevel, "entry vanished while walking, pruned concurrently"); ce != nil {
		ce.Write(zap.String("path", w.path(rel)))
	}
}

// fail returns the error that stops the walk at rel: err, an error of the
// seam, renamed to name rel's path.
func (w *walker) fail(rel string, err error) error {
	err = fsys.WithPath(err, w.path(rel))
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("walk index files: cannot list every index file, stopping: %w", err)
	}
	return fmt.Errorf("walk index files: %w", err)
}

// fileTypes are the types of file a directory can hold: a stat mode's
// format bits, the getdents type and a name for messages.
var fileTypes = [...]struct {
	mode uint32
	dt   uint8
	name string
}{
	{unix.S_IFREG, unix.DT_REG, "regular file"},
	{unix.S_IFDIR, unix.DT_DIR, "directory"},
	{unix.S_IFLNK, unix.DT_LNK, "symbolic link"},
	{unix.S_IFIFO, unix.DT_FIFO, "FIFO"},
	{unix.S_IFSOCK, unix.DT_SOCK, "socket"},
	{unix.S_IFCHR, unix.DT_CHR, "character device"},
	{unix.S_IFBLK, unix.DT_BLK, "block device"},
}

// dtype converts a stat mode to the getdents type of the file.
func dtype(mode uint32) uint8 {
	for _, ft := range fileTypes {
		if mode&unix.S_IFMT == ft.mode {
			return ft.dt
		}
	}
	return dtOther
}

// dtOther is the type dtype gives a file of no type it knows; unlike
// DT_UNKNOWN it does not mean "ask".
const dtOther uint8 = 0xff

// dirent is one directory entry as getdents returns it.
type dirent struct {
	name string
	typ  uint8 // unix.DT_*; DT_UNKNOWN when the filesystem does not say
}

// readDirents lists every entry of the open directory fd (at path, for
// errors) but "." and "..", in directory order, with fsys.ReadDirents
// through sys. Its errors are fsys's: an *fs.PathError with Op
// "getdents64" naming path (EIO for a malformed record).
func readDirents(sys fsys.Syscalls, fd int, path string, buf []byte) ([]dirent, error) {
	var ents []dirent
	err := fsys.ReadDirents(sys, fd, func() string { return path }, buf, func(name []byte, typ uint8) error {
		ents = append(ents, dirent{name: string(name), typ: typ})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ents, nil
}
