package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/locking"
	"chunkgc/tuning"
)

// ErrNotEmpty is returned, wrapped with the base and the first offending
// entry, when [Create] finds a base directory that holds something other than
// hidden entries and lost+found.
var ErrNotEmpty = errors.New("directory is not empty")

// ctxCheckEvery is how many prefix dirs Create and VerifyLayout handle between
// two checks of their context.
const ctxCheckEvery = 256

// Create creates a chunk store at base and opens it. base must be absolute
// and either absent (it is created 0755, with any missing parents) or empty:
// hidden entries and lost+found are allowed, anything else is an error
// wrapping [ErrNotEmpty] that names base and the first offending entry (in
// name order). It creates .chunks (0750), the [PrefixCount] prefix dirs
// (0750) with mkdirat on the .chunks fd, and an empty .lock (0644), and
// chowns base and all of these to opts.Owner when [fsys.Owner.Active].
//
// Create can be rerun: a Create that died or was cancelled half-way is
// finished by running it again with the same arguments. Since .chunks and
// .lock are hidden they do not make base non-empty; existing prefix dirs (real
// directories, not symlinks) are accepted and given to the owner if they are
// not yet; anything of the wrong type where a directory or .lock is expected
// is an error naming it. Create never removes anything.
//
// progress, if not nil, is called with (done, PrefixCount) each time another
// percent of the prefix dirs is done. ctx is checked every 256 prefix dirs; a
// cancelled Create returns an error wrapping context.Cause(ctx).
func Create(ctx context.Context, base string, opts Options, progress func(done, total int)) (*Store, error) {
	base, err := cleanBase(base)
	if err != nil {
		return nil, fmt.Errorf("create chunk store: %w", err)
	}
	s := newStore(base, opts)
	if err := s.create(ctx, progress); err != nil {
		return nil, fmt.Errorf("create chunk store %s: %w", base, err)
	}
	s.log.Info("chunk store created", zap.String("base", base), zap.Stringer("owner", s.owner), zap.Bool("chown", s.chown))
	return Open(base, opts)
}

func (s *Store) create(ctx context.Context, progress func(done, total int)) error {
	baseFd, err := s.createBase()
	if err != nil {
		return err
	}
	defer unix.Close(baseFd)

	chunksFd, err := s.createChunksDir(baseFd)
	if err != nil {
		return err
	}
	defer unix.Close(chunksFd)

	if err := s.createPrefixDirs(ctx, chunksFd, progress); err != nil {
		return err
	}
	if err := s.createLockFile(baseFd); err != nil {
		return err
	}
	if s.syncLevel != tuning.SyncNone {
		if err := s.sys.Syncfs(baseFd); err != nil {
			return withPath(err, s.base)
		}
	}
	return nil
}

// createBase makes base (and missing parents) or checks that an existing base
// is an empty directory, chowns it, and returns an fd of it.
func (s *Store) createBase() (int, error) {
	err := s.sys.Mkdirat(unix.AT_FDCWD, s.base, baseMode)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(s.base), baseMode); err != nil {
			return -1, err
		}
		err = s.sys.Mkdirat(unix.AT_FDCWD, s.base, baseMode)
	}
	created := err == nil
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return -1, withPath(err, s.base)
	}
	fd, err := s.sys.Openat(unix.AT_FDCWD, s.base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) {
		return -1, fmt.Errorf("%s exists and is not a directory", s.base)
	}
	if err != nil {
		return -1, withPath(err, s.base)
	}
	if err := s.prepareBase(fd, created); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (s *Store) prepareBase(fd int, created bool) error {
	if created {
		// mkdir's mode is subject to the umask; the layout's is not.
		if err := s.sys.Fchmodat(unix.AT_FDCWD, s.base, baseMode); err != nil {
			return withPath(err, s.base)
		}
	} else if err := s.checkEmpty(fd); err != nil {
		return err
	}
	if s.chown {
		if err := s.sys.Fchown(fd, s.owner.UID, s.owner.GID); err != nil {
			return withPath(err, s.base)
		}
	}
	return nil
}

// checkEmpty returns an error wrapping ErrNotEmpty naming the first (in name
// order) entry of the base dir fd that is neither hidden nor lost+found.
func (s *Store) checkEmpty(fd int) error {
	var first string
	buf := s.bufs.Get().(*[direntBufSize]byte)
	defer s.bufs.Put(buf)
	err := readDirents(s.sys, fd, s.base, buf[:], func(name []byte, _ uint8) error {
		if name[0] == '.' || string(name) == "lost+found" {
			return nil
		}
		if first == "" || string(name) < first {
			first = string(name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if first != "" {
		return fmt.Errorf("%w: it holds %q (hidden entries and lost+found are allowed)", ErrNotEmpty, first)
	}
	return nil
}

// createChunksDir makes base/.chunks (or accepts an existing directory),
// chowns it and returns an fd of it.
func (s *Store) createChunksDir(baseFd int) (int, error) {
	err := s.sys.Mkdirat(baseFd, chunksName, prefixDirMode)
	switch {
	case err == nil:
		if err := s.sys.Fchmodat(baseFd, chunksName, prefixDirMode); err != nil {
			return -1, withPath(err, s.chunks)
		}
	case errors.Is(err, fs.ErrExist):
		var st unix.Stat_t
		if err := s.sys.Fstatat(baseFd, chunksName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return -1, withPath(err, s.chunks)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return -1, fmt.Errorf("%s exists and is not a directory", s.chunks)
		}
	default:
		return -1, withPath(err, s.chunks)
	}
	fd, err := s.sys.Openat(baseFd, chunksName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, withPath(err, s.chunks)
	}
	if s.chown {
		if err := s.sys.Fchown(fd, s.owner.UID, s.owner.GID); err != nil {
			unix.Close(fd)
			return -1, withPath(err, s.chunks)
		}
	}
	return fd, nil
}

// createPrefixDirs makes the PrefixCount prefix dirs under the .chunks fd.
func (s *Store) createPrefixDirs(ctx context.Context, chunksFd int, progress func(done, total int)) error {
	var (
		st          unix.Stat_t
		modeChecked bool
		fixMode     bool // the umask stripped bits from mkdirat's mode: chmod each new dir
	)
	for i := range PrefixCount {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("prefix dirs: %d of %d created: %w", i, PrefixCount, context.Cause(ctx))
			}
		}
		name := prefixName(uint16(i))
		err := s.sys.Mkdirat(chunksFd, name, prefixDirMode)
		switch {
		case err == nil:
			if !modeChecked {
				if err := s.sys.Fstatat(chunksFd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return withPath(err, s.chunks+"/"+name)
				}
				fixMode = st.Mode&0o7777 != prefixDirMode
				modeChecked = true
			}
			if fixMode {
				if err := s.sys.Fchmodat(chunksFd, name, prefixDirMode); err != nil {
					return withPath(err, s.chunks+"/"+name)
				}
			}
			if s.chown {
				if err := s.sys.Fchownat(chunksFd, name, s.owner.UID, s.owner.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return withPath(err, s.chunks+"/"+name)
				}
			}
		case errors.Is(err, fs.ErrExist):
			// A rerun after an interrupted Create.
			if err := s.sys.Fstatat(chunksFd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return withPath(err, s.chunks+"/"+name)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return fmt.Errorf("%s/%s exists and is not a directory", s.chunks, name)
			}
			if s.chown && !s.owner.Owns(&st) {
				if err := s.sys.Fchownat(chunksFd, name, s.owner.UID, s.owner.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return withPath(err, s.chunks+"/"+name)
				}
			}
		default:
			return withPath(err, s.chunks+"/"+name)
		}
		if done := i + 1; progress != nil && done*100/PrefixCount != i*100/PrefixCount {
			progress(done, PrefixCount)
		}
	}
	return nil
}

// createLockFile makes the empty base/.lock (or accepts an existing regular
// file) and chowns it: package locking owns the store lock.
func (s *Store) createLockFile(baseFd int) error {
	return locking.CreateStoreLock(s.sys, baseFd, s.base, s.owner)
}

// maxLayoutProblems is how many problems a LayoutError lists.
const maxLayoutProblems = 20

// LayoutError is returned by [Store.VerifyLayout] when the store's layout is
// not what [Create] makes: Problems names the first 20 problems found (e.g.
// ".chunks/00af: missing"), Count is how many there are in all.
type LayoutError struct {
	Base     string
	Problems []string
	Count    int
}

func (e *LayoutError) Error() string {
	var b strings.Builder
	b.WriteString("chunk store ")
	b.WriteString(e.Base)
	b.WriteString(": ")
	b.WriteString(strconv.Itoa(e.Count))
	b.WriteString(" layout problem(s): ")
	b.WriteString(strings.Join(e.Problems, "; "))
	if more := e.Count - len(e.Problems); more > 0 {
		b.WriteString("; and ")
		b.WriteString(strconv.Itoa(more))
		b.WriteString(" more")
	}
	return b.String()
}

func (e *LayoutError) add(problem string) {
	if len(e.Problems) < maxLayoutProblems {
		e.Problems = append(e.Problems, problem)
	}
	e.Count++
}

// VerifyLayout checks the layout of an existing store (create --reuse): every
// prefix dir is present and a directory (not a symlink), and, when the
// store's Owner.UID >= 0, .chunks and every prefix dir are owned by the Owner
// (the group too when Owner.GID >= 0). It returns a [*LayoutError] naming what
// is wrong, or another error if a stat fails for another reason than a
// missing entry. ctx is checked every 256 prefix dirs.
func (s *Store) VerifyLayout(ctx context.Context) error {
	le := &LayoutError{Base: s.base}
	var st unix.Stat_t
	if err := s.sys.Fstatat(s.chunksFd, "", &st, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("verify chunk store layout: %w", withPath(err, s.chunks))
	}
	if !s.owner.Owns(&st) {
		le.add(fmt.Sprintf("%s: owned by %d:%d, want %s", chunksName, st.Uid, st.Gid, s.owner))
	}
	for i := range PrefixCount {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("verify chunk store layout %s: %w", s.base, context.Cause(ctx))
			}
		}
		name := prefixName(uint16(i))
		err := s.sys.Fstatat(s.chunksFd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			le.add(chunksName + "/" + name + ": missing")
		case err != nil:
			return fmt.Errorf("verify chunk store layout: %w", withPath(err, s.chunks+"/"+name))
		case st.Mode&unix.S_IFMT != unix.S_IFDIR:
			le.add(chunksName + "/" + name + ": not a directory")
		case !s.owner.Owns(&st):
			le.add(fmt.Sprintf("%s/%s: owned by %d:%d, want %s", chunksName, name, st.Uid, st.Gid, s.owner))
		}
	}
	if le.Count > 0 {
		return le
	}
	return nil
}
