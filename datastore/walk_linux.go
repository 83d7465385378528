package datastore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/internal/eintr"
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
// ([InScheme] tells). This is the listing GC marks from (SPEC §6.3).
//
// It does not descend into hidden entries (names starting with "."), so
// .chunks is never listed, and does not follow symlinks (base itself may be
// one). Each directory is listed in full (getdents) and its entries are
// visited in name order, so the order is deterministic.
//
// A permission error (EACCES or EPERM) anywhere stops the walk with an error
// naming the path and matching fs.ErrPermission: an index GC cannot see would
// have its chunks removed. The one exception is a lost+found directory
// directly under base that cannot be opened: it is skipped and logged at
// debug level. An entry or directory that vanishes between being listed and
// being looked at was removed concurrently (a pruned snapshot) and is
// skipped. Any other error stops the walk. ctx is checked once per
// directory; fn's error stops the walk and is returned as is.
func WalkIndexFiles(ctx context.Context, base string, log *zap.Logger, fn func(rel string) error) error {
	return walkIndexFiles(ctx, base, log, fn, walkHooks{})
}

func walkIndexFiles(ctx context.Context, base string, log *zap.Logger, fn func(rel string) error, hooks walkHooks) error {
	if log == nil {
		log = zap.NewNop()
	}
	fd, err := eintr.Retry2(func() (int, error) {
		return unix.Open(base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return fmt.Errorf("walk index files: %w", &fs.PathError{Op: "open", Path: base, Err: err})
	}
	defer unix.Close(fd)
	w := walker{ctx: ctx, base: base, log: log, fn: fn, hooks: hooks, buf: make([]byte, direntBufSize)}
	return w.dir(fd, "")
}

type walker struct {
	ctx   context.Context
	base  string
	log   *zap.Logger
	fn    func(rel string) error
	hooks walkHooks
	buf   []byte // getdents buffer, shared: a directory is read in full before its children
}

// path returns the full path of rel, for errors.
func (w *walker) path(rel string) string { return filepath.Join(w.base, rel) }

// dir visits the entries of the open directory fd, which is rel under base
// ("" for base).
func (w *walker) dir(fd int, rel string) error {
	if err := w.ctx.Err(); err != nil {
		return context.Cause(w.ctx)
	}
	ents, err := readDirents(fd, w.path(rel), w.buf)
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
			err := eintr.Retry(func() error { return unix.Fstatat(fd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW) })
			if errors.Is(err, unix.ENOENT) {
				w.vanished(crel)
				continue
			}
			if err != nil {
				return w.fail("fstatat", crel, err)
			}
			typ = dtype(st.Mode)
		}
		switch typ {
		case unix.DT_REG:
			if isIndexName(e.name) {
				if err := w.fn(crel); err != nil {
					return err
				}
			}
		case unix.DT_DIR:
			if err := w.subdir(fd, e.name, crel); err != nil {
				return err
			}
		}
	}
	return nil
}

// subdir opens directory name of the open directory fd and walks it.
func (w *walker) subdir(fd int, name, rel string) error {
	cfd, err := eintr.Retry2(func() (int, error) {
		return unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		w.vanished(rel)
		return nil
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		// Replaced by a file or a symlink since it was listed: what is
		// there now is not a directory to walk.
		if ce := w.log.Check(zap.DebugLevel, "directory replaced while walking, skipped"); ce != nil {
			ce.Write(zap.String("path", w.path(rel)), zap.Error(err))
		}
		return nil
	case (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)) && rel == lostFound:
		if ce := w.log.Check(zap.DebugLevel, "skipping unreadable lost+found"); ce != nil {
			ce.Write(zap.String("path", w.path(rel)), zap.Error(err))
		}
		return nil
	default:
		return w.fail("open", rel, err)
	}
	defer unix.Close(cfd)
	if w.hooks.afterOpen != nil {
		w.hooks.afterOpen(rel)
	}
	return w.dir(cfd, rel)
}

// vanished logs an entry removed between listing and looking at it.
func (w *walker) vanished(rel string) {
	if ce := w.log.Check(zap.DebugLevel, "entry vanished while walking, pruned concurrently"); ce != nil {
		ce.Write(zap.String("path", w.path(rel)))
	}
}

// fail returns the error that stops the walk at rel.
func (w *walker) fail(op, rel string, errno error) error {
	err := &fs.PathError{Op: op, Path: w.path(rel), Err: errno}
	if errors.Is(errno, unix.EACCES) || errors.Is(errno, unix.EPERM) {
		return fmt.Errorf("walk index files: cannot list every index file, stopping: %w", err)
	}
	return fmt.Errorf("walk index files: %w", err)
}

// dtype converts a stat mode to the getdents type of the file.
func dtype(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFLNK:
		return unix.DT_LNK
	}
	return dtOther
}

// dtOther is the type dtype gives files that are neither regular files,
// directories nor symlinks; unlike DT_UNKNOWN it does not mean "ask".
const dtOther uint8 = 0xff

// dirent is one directory entry as getdents returns it.
type dirent struct {
	name string
	typ  uint8 // unix.DT_*; DT_UNKNOWN when the filesystem does not say
}

// linux_dirent64 field offsets.
const (
	direntIno    = 0  // u64
	direntReclen = 16 // u16
	direntType   = 18 // u8
	direntName   = 19 // NUL-terminated
)

// readDirents lists every entry of the open directory fd (path, for errors)
// with getdents64, without "." and "..".
func readDirents(fd int, path string, buf []byte) ([]dirent, error) {
	var ents []dirent
	for {
		n, err := eintr.Retry2(func() (int, error) { return unix.Getdents(fd, buf) })
		if err != nil {
			return nil, &fs.PathError{Op: "getdents", Path: path, Err: err}
		}
		if n <= 0 {
			return ents, nil
		}
		if ents, err = parseDirents(buf[:n], ents); err != nil {
			return nil, fmt.Errorf("getdents %s: %w", path, err)
		}
	}
}

// parseDirents appends the entries of the linux_dirent64 records in b to
// ents, skipping ".", ".." and deleted entries (inode 0). unix.ParseDirent
// would drop d_type, so the records are parsed here.
func parseDirents(b []byte, ents []dirent) ([]dirent, error) {
	for len(b) > 0 {
		if len(b) < direntName {
			return ents, fmt.Errorf("truncated record of %d bytes", len(b))
		}
		reclen := int(binary.NativeEndian.Uint16(b[direntReclen:]))
		if reclen < direntName || reclen > len(b) {
			return ents, fmt.Errorf("bad record length %d with %d bytes left", reclen, len(b))
		}
		name := b[direntName:reclen]
		if i := slices.Index(name, 0); i >= 0 {
			name = name[:i]
		}
		typ := b[direntType]
		ino := binary.NativeEndian.Uint64(b[direntIno:])
		b = b[reclen:]
		if s := string(name); ino != 0 && s != "." && s != ".." && s != "" {
			ents = append(ents, dirent{name: s, typ: typ})
		}
	}
	return ents, nil
}
