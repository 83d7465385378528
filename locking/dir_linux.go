package locking

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/eintr"
)

// defaultRoot holds one lock directory per store.
const defaultRoot = "/run/chunkgc/locks"

const (
	gcLockName = "gc"
	writersDir = "writers"
)

// DefaultDir returns the default lock directory of the store named store:
// /run/chunkgc/locks/<store> (tmpfs-backed /run).
func DefaultDir(store string) string { return defaultRoot + "/" + store }

// Dir is a store's lock directory: the GC lock, the writer registry and the
// group and snapshot lock files live in it. See the package doc.
type Dir struct {
	path     string
	uid, gid int // owner of what it creates; -1: leave as created
	fl       flocker

	// afterTmpCreate, for tests, runs in RegisterWriter between creating the
	// hidden entry and flocking it.
	afterTmpCreate func(tmpPath string)
}

// OpenDir opens (creating them 0755 as needed) the lock directory path and its
// writer registry. When running as root and uid >= 0, every directory and
// lock file it creates, now or later, is chowned to uid:gid (gid -1 leaves
// the group); as another user, or with uid -1, ownership is left alone.
func OpenDir(path string, uid, gid int) (*Dir, error) {
	if path == "" {
		return nil, errors.New("open lock dir: empty path")
	}
	if uid < 0 || os.Geteuid() != 0 {
		uid, gid = -1, -1
	}
	d := &Dir{path: filepath.Clean(path), uid: uid, gid: gid, fl: newFlocker(uid, gid)}
	if err := d.mkdirAll(filepath.Join(d.path, writersDir)); err != nil {
		return nil, fmt.Errorf("open lock dir %s: %w", path, err)
	}
	return d, nil
}

// Path returns the lock directory.
func (d *Dir) Path() string { return d.path }

// mkdirAll creates p and its missing parents 0755 and chowns the ones it
// created. A directory someone else creates concurrently is left as is.
func (d *Dir) mkdirAll(p string) error {
	var st unix.Stat_t
	err := eintr.Retry(func() error { return unix.Stat(p, &st) })
	if err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return &fs.PathError{Op: "mkdir", Path: p, Err: unix.ENOTDIR}
		}
		return nil
	}
	if !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if parent := filepath.Dir(p); parent != p {
		if err := d.mkdirAll(parent); err != nil {
			return err
		}
	}
	err = eintr.Retry(func() error { return unix.Mkdir(p, 0o755) })
	if errors.Is(err, unix.EEXIST) {
		return d.mkdirAll(p) // check that it is a directory
	}
	if err != nil {
		return &fs.PathError{Op: "mkdir", Path: p, Err: err}
	}
	if d.uid >= 0 {
		if err := eintr.Retry(func() error { return unix.Lchown(p, d.uid, d.gid) }); err != nil {
			return &fs.PathError{Op: "chown", Path: p, Err: err}
		}
	}
	return nil
}

// GCLock takes the GC lock, flock LOCK_EX|LOCK_NB on <dir>/gc (one GC per
// store on this host), with the double-stat. It returns a [*LockedError]
// when another GC holds it.
func (d *Dir) GCLock() (*Lock, error) {
	return d.fl.lock(context.Background(), filepath.Join(d.path, gcLockName), Exclusive, 0)
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

func (d *Dir) lockFile(ctx context.Context, name string, mode Mode, timeout time.Duration) (*Lock, error) {
	path := filepath.Join(d.path, name)
	if err := d.mkdirAll(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return d.fl.lock(ctx, path, mode, timeout)
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
