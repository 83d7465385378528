package locking

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

const (
	gcLockName = "gc"
	writersDir = "writers"
)

// Dir is a store's lock directory: the GC lock, the writer registry and the
// group and snapshot lock files live in it. It keeps an O_DIRECTORY file
// descriptor of the directory, and everything below it is reached relative
// to that fd without following symlinks (package doc, "No escape"). Its
// methods are safe for concurrent use, except Close.
type Dir struct {
	sys   fsys.Syscalls // the seam of the Root it was opened from
	path  string
	fd    int        // O_DIRECTORY fd of path; -1 once closed
	owner fsys.Owner // of what it creates, when Active
	fl    flocker

	// afterTmpCreate, for tests, runs in RegisterWriter between creating the
	// hidden entry and flocking it.
	afterTmpCreate func(tmpPath string)
}

// OpenDir opens the lock directory path of one store: it is
// OpenRoot(filepath.Dir(path)) followed by Store(filepath.Base(path),
// owner), so the parent of path is the lock root and is checked as
// [OpenRoot] checks one. See [Root.Store] for owner.
func OpenDir(path string, owner fsys.Owner) (*Dir, error) {
	return OpenDirWith(path, owner, RootOptions{})
}

// OpenDirWith is [OpenDir] with options: the Dir makes its syscalls
// through opts.Syscalls.
func OpenDirWith(path string, owner fsys.Owner, opts RootOptions) (*Dir, error) {
	if path == "" {
		return nil, errors.New("open lock dir: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open lock dir %s: %w", path, err)
	}
	r, err := OpenRootWith(filepath.Dir(abs), opts)
	if err != nil {
		return nil, fmt.Errorf("open lock dir %s: %w", path, err)
	}
	defer r.Close()
	return r.Store(filepath.Base(abs), owner)
}

// Path returns the lock directory.
func (d *Dir) Path() string { return d.path }

// Close closes the directory's file descriptor. Locks and writers taken
// from d stay valid (each holds its own descriptors); further calls on d
// fail. A second Close returns an error matching fs.ErrClosed.
func (d *Dir) Close() error {
	return closeOwnFD(&d.fd, "lock dir", d.path)
}

// openSub returns a new O_DIRECTORY fd of the directory rel below d
// ("" for d itself), creating missing components (owned like d's), and its
// path. It follows no symlink: a component that is one, or is not a
// directory, is an error naming it.
func (d *Dir) openSub(rel string) (int, string, error) {
	if d.fd < 0 {
		return -1, "", fmt.Errorf("lock dir %s: %w", d.path, fs.ErrClosed)
	}
	if rel == "" {
		// A new fd of d itself (a lock keeps the fd of its directory).
		fd, err := d.sys.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, "", fsys.PathError("open", d.path, err)
		}
		return fd, d.path, nil
	}
	fd, err := nofollow.MkdirAll(d.sys, d.fd, d.path, rel, 0o755, d.owner)
	if err != nil {
		return -1, "", err
	}
	return fd, filepath.Join(d.path, rel), nil
}

// GCLock takes the GC lock, flock LOCK_EX|LOCK_NB on <dir>/gc (one GC per
// store on this host), with the double-stat. It returns a [*LockedError]
// when another GC holds it.
func (d *Dir) GCLock() (*Lock, error) {
	return d.lockFile(context.Background(), gcLockName, Exclusive, 0)
}

// LockGroup locks backup group typ/id in namespace ns (nil or empty for the
// root namespace): [Exclusive] to write to or remove it, [Shared] to read it.
// The lock file is the one PBS ≥ 3.4 uses ([LockFileName]); its parent
// directories are created as needed. timeout and the errors are as for
// [Flock].
func (d *Dir) LockGroup(ctx context.Context, ns []string, typ, id string, mode Mode, timeout time.Duration) (*Lock, error) {
	if err := checkNames(ns, typ, id); err != nil {
		return nil, fmt.Errorf("lock group %s/%s: %w", typ, id, err)
	}
	return d.lockFile(ctx, LockFileName(ns, typ+"/"+id), mode, timeout)
}

// LockSnapshot locks snapshot typ/id/snapTime ("2025-04-04T15:02:49Z") in namespace ns like [Dir.LockGroup].
// Removing a snapshot takes this lock exclusively and, after removing the
// snapshot directory, releases it with [Lock.RemoveAndUnlock].
func (d *Dir) LockSnapshot(ctx context.Context, ns []string, typ, id, snapTime string, mode Mode, timeout time.Duration) (*Lock, error) {
	if err := checkNames(ns, typ, id, snapTime); err != nil {
		return nil, fmt.Errorf("lock snapshot %s/%s/%s: %w", typ, id, snapTime, err)
	}
	return d.lockFile(ctx, LockFileName(ns, typ+"/"+id+"/"+snapTime), mode, timeout)
}

// chunkLocks is the subdirectory of a store's lock dir holding the
// per-chunk locks of an S3 datastore, as PBS 4.2 names it.
const chunkLocks = ".chunks"

// LockChunk takes the per-chunk lock of an S3 datastore's chunk, flock
// LOCK_EX on <dir>/.chunks/<first 4 hex>/<hex> with the double-stat: the
// file PBS 4.2 locks. Writers hold it from the upload through the local
// marker, verify while it renames a bad chunk, GC from the local decision
// until the object's deletion has been answered. hex must be the 64
// lowercase hex digits of a digest. timeout and the errors are as for
// [Flock]: GC passes 0 and skips a chunk that is busy ([ErrLocked]).
func (d *Dir) LockChunk(ctx context.Context, hex string, timeout time.Duration) (*Lock, error) {
	if !isDigestHex(hex) {
		return nil, fmt.Errorf("lock chunk %q: not 64 lowercase hex digits", hex)
	}
	return d.lockFile(ctx, chunkLocks+"/"+hex[:4]+"/"+hex, Exclusive, timeout)
}

func isDigestHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// lockFile locks name (a slash-separated path below d) with the
// double-stat, relative to an fd of its parent directory.
func (d *Dir) lockFile(ctx context.Context, name string, mode Mode, timeout time.Duration) (*Lock, error) {
	sub, base := path.Split(name)
	dirfd, dirPath, err := d.openSub(strings.TrimSuffix(sub, "/"))
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", filepath.Join(d.path, name), err)
	}
	return d.fl.lockAt(ctx, dirfd, dirPath, base, mode, timeout)
}

// checkNames rejects names that would not give a lock file inside the lock
// directory or that would make two different objects share one: empty
// names, "/" and NUL anywhere, and ":", "." and ".." as namespace components.
func checkNames(ns []string, parts ...string) error {
	for _, c := range ns {
		if c == "" || c == "." || c == ".." || strings.ContainsAny(c, "/:\x00") {
			return fmt.Errorf("invalid namespace component %q", c)
		}
	}
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, "/\x00") {
			return fmt.Errorf("invalid name %q", p)
		}
	}
	return nil
}
