package locking

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

const (
	// tmpWriterPrefix marks a registry entry still being set up. Hidden
	// entries never count as live writers.
	tmpWriterPrefix = ".tmp-"
	// registerAttempts bounds the retries of RegisterWriter when a GC reaps
	// its half-made entry each time.
	registerAttempts = 100
)

// Writer is a live entry in the writer registry (§7.3): while it is open, GC
// counts its start time into oldest_writer. Its methods are safe for
// concurrent use.
type Writer struct {
	lock  *Lock
	start time.Time
}

// RegisterWriter adds a writer session that started at now to the registry
// and returns it once the entry is live. Call it before touching or
// inserting the first chunk, and Close it when the session is done.
//
// The entry is made without a window in which a GC could see it unlocked or
// without its start time: it is created as a hidden "writers/.tmp-<random>"
// (O_EXCL), flocked LOCK_EX, given the start time (unix nanoseconds in
// decimal), and only then renamed to "writers/<random>". A GC that reaps the
// hidden entry before the flock (it takes that lock) makes the flock or the
// rename fail, and registration starts over with a new name.
//
// The registry directory is opened from the lock directory's fd without
// following a symlink (a symlinked or missing writers/ is an error naming
// it), and every step is relative to that fd, which the Writer keeps.
func (d *Dir) RegisterWriter(now time.Time) (*Writer, error) {
	wdir := filepath.Join(d.path, writersDir)
	content := strconv.AppendInt(nil, now.UnixNano(), 10)
	for range registerAttempts {
		dfd, err := d.openWriters()
		if err != nil {
			return nil, fmt.Errorf("register writer: %w", err)
		}
		name := strings.ToLower(rand.Text())
		w, err := d.tryRegister(dfd, wdir, name, content)
		if err != nil {
			closeFD(dfd, wdir)
			return nil, fmt.Errorf("register writer: %w", err)
		}
		if w != nil {
			w.start = now
			return w, nil
		}
		closeFD(dfd, wdir)
	}
	return nil, fmt.Errorf("register writer in %s: entry reaped %d times in a row", wdir, registerAttempts)
}

// openWriters opens the registry directory below d's fd, following no
// symlink.
func (d *Dir) openWriters() (int, error) {
	if d.fd < 0 {
		return -1, fmt.Errorf("lock dir %s: %w", d.path, fs.ErrClosed)
	}
	return openDirEntry(d.sys, d.fd, d.path, writersDir)
}

// tryRegister makes one attempt; it returns nil, nil when the entry was
// taken away from under it and the caller should try again. On success the
// Writer's lock owns dfd.
func (d *Dir) tryRegister(dfd int, wdir, name string, content []byte) (*Writer, error) {
	tmp := tmpWriterPrefix + name
	tmpPath := filepath.Join(wdir, tmp)
	fd, err := d.sys.Openat(dfd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	if errors.Is(err, unix.EEXIST) {
		return nil, nil
	}
	if err != nil {
		return nil, fsys.PathError("create", tmpPath, err)
	}
	if d.afterTmpCreate != nil {
		d.afterTmpCreate(tmpPath)
	}
	keep := false
	defer func() {
		if !keep {
			closeFD(fd, tmpPath)
		}
	}()
	err = d.sys.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, nil // a GC is reaping it
	}
	if err != nil {
		return nil, fsys.PathError("flock", tmpPath, err)
	}
	if err := chownCreated(d.sys, fd, dfd, tmpPath, ownedBy(d.owner)); err != nil {
		return nil, err
	}
	// The file is new and its offset 0: write is the pwrite at 0 it was.
	if _, err := d.sys.Write(fd, content); err != nil {
		return nil, fsys.PathError("write", tmpPath, err)
	}
	err = d.sys.Renameat(dfd, tmp, dfd, name, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil // reaped between create and flock; we hold an orphan
	}
	if err != nil {
		d.sys.Unlinkat(dfd, tmp, 0)
		return nil, fsys.PathError("rename", tmpPath, err)
	}
	keep = true
	return &Writer{lock: &Lock{sys: d.sys, path: filepath.Join(wdir, name), kind: kindFlockExclusive, dirfd: dfd, name: name, fd: fd}}, nil
}

// Start returns the start time the writer registered with.
func (w *Writer) Start() time.Time { return w.start }

// Path returns the writer's registry entry.
func (w *Writer) Path() string { return w.lock.Path() }

// Close removes the writer's entry while still holding its lock, then
// releases the lock. A second call returns an error matching fs.ErrClosed.
func (w *Writer) Close() error {
	if err := w.lock.RemoveAndUnlock(); err != nil {
		return fmt.Errorf("close writer: %w", err)
	}
	return nil
}

// OldestWriter lists the writer registry and returns the earliest start time
// of a live writer and the number of live writers; found is false when there
// is none.
//
// An entry whose flock (LOCK_EX|LOCK_NB) it can take belongs to a writer
// that died: it is removed while holding that lock, after a double-stat
// shows the name still refers to the locked file, and counted in one info
// line. Hidden entries (registrations in progress) never count as live; they
// are reaped like stale ones when their lock can be taken. An entry whose
// content is not a start time counts with its modification time, with a
// warning; entries that are not regular files with one link (symlinks,
// FIFOs, sockets, directories, hard links) are skipped with a warning and
// left alone: never read, locked or removed.
//
// The registry directory is opened from the lock directory's fd without
// following a symlink (a symlinked writers/ is an error naming it); it is
// listed through that fd, every entry is opened relative to it with
// O_NOFOLLOW|O_NONBLOCK and checked with fstat, and reaping unlinks relative
// to it. Nothing is recursed into.
func (d *Dir) OldestWriter(log *zap.Logger) (oldest time.Time, live int, found bool, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	wdir := filepath.Join(d.path, writersDir)
	wfd, err := d.openWriters()
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, 0, false, nil // no registry: nobody registered
	}
	if err != nil {
		return time.Time{}, 0, false, fmt.Errorf("list writers: %w", err)
	}
	defer closeFD(wfd, wdir)
	names, err := d.listWriters(wfd, wdir)
	if err != nil {
		return time.Time{}, 0, false, fmt.Errorf("list writers: %w", err)
	}
	stale := 0
	for _, name := range names {
		e, err := inspectWriter(d.sys, wfd, wdir, name)
		if err != nil {
			return time.Time{}, 0, false, fmt.Errorf("list writers: %w", err)
		}
		switch e.state {
		case entryLive:
			if e.fromMtime {
				log.Warn("writer registry entry holds no start time, using its modification time",
					zap.String("entry", filepath.Join(wdir, name)), zap.Time("start", e.start))
			}
			live++
			if !found || e.start.Before(oldest) {
				oldest, found = e.start, true
			}
		case entryStale:
			stale++
			if ce := log.Check(zap.DebugLevel, "removed stale writer registry entry"); ce != nil {
				ce.Write(zap.String("entry", filepath.Join(wdir, name)))
			}
		case entryForeign:
			log.Warn("skipping writer registry entry that is not a regular file",
				zap.String("entry", filepath.Join(wdir, name)), zap.String("type", e.kind))
		}
	}
	if stale > 0 {
		log.Info("removed stale writer registry entries", zap.String("dir", wdir), zap.Int("stale", stale))
	}
	return oldest, live, found, nil
}

// listWriters returns the names in the registry directory open as wfd
// (wdir), read through d's seam before any is inspected.
func (d *Dir) listWriters(wfd int, wdir string) ([]string, error) {
	var names []string
	buf := make([]byte, 8192)
	err := fsys.ReadDirents(d.sys, wfd, func() string { return wdir }, buf, func(name []byte, _ uint8) error {
		names = append(names, string(name))
		return nil
	})
	return names, err
}

type entryState uint8

const (
	entryGone    entryState = iota // vanished, replaced, or a registration in progress
	entryLive                      // a live writer
	entryStale                     // a dead writer's entry, now removed
	entryForeign                   // not a regular file
)

type writerEntry struct {
	state     entryState
	start     time.Time
	fromMtime bool
	kind      string // what a foreign entry is
}

// inspectWriter classifies registry entry name and removes it if stale.
func inspectWriter(sys fsys.Syscalls, dfd int, wdir, name string) (writerEntry, error) {
	path := filepath.Join(wdir, name)
	fd, err := sys.Openat(dfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return writerEntry{state: entryGone}, nil // closed by its writer meanwhile
	case errors.Is(err, unix.ELOOP):
		return writerEntry{state: entryForeign, kind: "symbolic link"}, nil
	case errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
		return writerEntry{state: entryForeign, kind: "socket or device"}, nil
	case err != nil:
		return writerEntry{}, fsys.PathError("open", path, err)
	}
	defer closeFD(fd, path)
	var st unix.Stat_t
	if err := sys.Fstat(fd, &st); err != nil {
		return writerEntry{}, fsys.PathError("fstat", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		// A FIFO (opened without blocking), socket, device or directory is
		// no writer's; a hard link may be a file outside the registry,
		// which must not be read (atime), locked or removed.
		kind := nofollow.TypeName(st.Mode)
		if st.Nlink != 1 {
			kind = "file with " + strconv.FormatUint(uint64(st.Nlink), 10) + " hard links"
		}
		return writerEntry{state: entryForeign, kind: kind}, nil
	}
	err = sys.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	switch {
	case errors.Is(err, unix.EWOULDBLOCK):
		if strings.HasPrefix(name, ".") {
			return writerEntry{state: entryGone}, nil // being registered: not yet working
		}
		return readStart(sys, fd, path, &st)
	case err != nil:
		return writerEntry{}, fsys.PathError("flock", path, err)
	}
	// We hold the lock, so its writer is gone. Remove the entry, but only if
	// the name still refers to the file we locked.
	var pst unix.Stat_t
	err = sys.Fstatat(dfd, name, &pst, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return writerEntry{state: entryGone}, nil
	}
	if err != nil {
		return writerEntry{}, fsys.PathError("stat", path, err)
	}
	if pst.Dev != st.Dev || pst.Ino != st.Ino {
		return writerEntry{state: entryGone}, nil
	}
	err = sys.Unlinkat(dfd, name, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return writerEntry{}, fsys.PathError("unlink", path, err)
	}
	return writerEntry{state: entryStale}, nil
}

// readStart reads a live entry's start time.
func readStart(sys fsys.Syscalls, fd int, path string, st *unix.Stat_t) (writerEntry, error) {
	var buf [32]byte
	n, err := sys.Pread(fd, buf[:], 0)
	if err != nil {
		return writerEntry{}, fsys.PathError("read", path, err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(buf[:n])), 10, 64)
	if err != nil {
		return writerEntry{state: entryLive, start: time.Unix(st.Mtim.Unix()), fromMtime: true}, nil
	}
	return writerEntry{state: entryLive, start: time.Unix(0, ns)}, nil
}
