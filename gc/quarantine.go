package gc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
	"chunkgc/journal"
)

// QuarantineDir is where phase 2 moves garbage when gc-quarantine-hours is
// set (doc "Quarantine"), relative to the base: one dir per run,
// <run-id>/<xxxx>/<chunk name>.
const QuarantineDir = StateDir + "/quarantine"

// QuarantinePath returns the quarantine directory of the store at base.
func QuarantinePath(base string) string { return filepath.Join(base, QuarantineDir) }

// runIDLayout is the time part of a run id: the run's start, UTC.
const runIDLayout = "20060102T150405Z"

// newRunID names a run by its start time and pid: the name of its journal
// and of its quarantine dir.
func newRunID(start int64) string {
	return fmt.Sprintf("%s-%d", time.Unix(start, 0).UTC().Format(runIDLayout), os.Getpid())
}

// runIDTime returns the start time a run id names; ok is false for a name
// that is not a run id (never ours: left alone).
func runIDTime(id string) (t time.Time, ok bool) {
	ts, pid, found := strings.Cut(id, "-")
	if !found || pid == "" {
		return time.Time{}, false
	}
	if _, err := strconv.ParseUint(pid, 10, 32); err != nil {
		return time.Time{}, false
	}
	t, err := time.Parse(runIDLayout, ts)
	return t, err == nil
}

// quarantine is the sweep's side of the quarantine: the run's dir,
// created at the first chunk it takes. A failure to create it stops the
// sweep (the chunk stays where it is): the operator asked for an undo,
// and an unlink would not give one. A restore may remove the run's dir
// once it has emptied it, even while the run sweeps: then the dir is made
// again.
type quarantine struct {
	store *chunkstore.Store
	owner fsys.Owner
	runID string

	mu  sync.RWMutex
	fd  int // the run dir; -1 until the first chunk, or after a restore removed it
	dir string
}

func newQuarantine(r *run) *quarantine {
	if r.opts.Tuning.QuarantineHours <= 0 {
		return nil
	}
	return &quarantine{store: r.store, owner: r.opts.Owner, runID: r.id, fd: -1}
}

// open (re)creates <base>/.chunkgc/quarantine/<run-id> (each missing
// component 0750 and chowned to the owner, none followed:
// [nofollow.MkdirAll]) unless a worker did since stale was seen, under
// q.mu.
func (q *quarantine) open(stale int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fd != stale {
		return nil
	}
	if q.fd >= 0 {
		unix.Close(q.fd)
		q.fd = -1
	}
	name := QuarantineDir + "/" + q.runID
	fd, err := nofollow.MkdirAll(q.store.Syscalls(), q.store.BaseFD(), q.store.Base(), name, 0o750, q.owner)
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	q.fd, q.dir = fd, filepath.Join(q.store.Base(), name)
	return nil
}

// prefixDir opens (creating it) the run's quarantine dir for the chunks of
// prefix dir p.
func (q *quarantine) prefixDir(p *chunkstore.PrefixDir) (int, string, error) {
	for attempt := 0; ; attempt++ {
		q.mu.RLock()
		fd, dir := q.fd, q.dir
		var (
			sub int
			err error
		)
		if fd >= 0 {
			sub, err = nofollow.MkdirAll(q.store.Syscalls(), fd, dir, p.Name(), 0o750, q.owner)
		}
		q.mu.RUnlock()
		switch {
		case fd >= 0 && err == nil:
			return sub, dir + "/" + p.Name(), nil
		case fd >= 0 && (!errors.Is(err, fs.ErrNotExist) || attempt > 0):
			return -1, "", fmt.Errorf("quarantine: %w", err)
		}
		// Not made yet, or removed (ENOENT from a deleted dir's fd).
		if err := q.open(fd); err != nil {
			return -1, "", err
		}
	}
}

func (q *quarantine) close() {
	if q != nil && q.fd >= 0 {
		unix.Close(q.fd)
		q.fd = -1
	}
}

// qdir is a prefix dir's quarantine dir while the sweep holds the prefix
// lock: opened at its first garbage chunk.
type qdir struct {
	fd  int
	dir string
}

func (d *qdir) close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// quarantineEntry is one quarantined file, as the purge, the heal and
// restore find it.
type quarantineEntry struct {
	run    string
	sub    string // "xxxx"
	name   string
	digest blob.Digest
	bad    bool
}

// openQuarantine opens <base>/.chunkgc/quarantine, following no symlink
// on the way; a missing one matches fs.ErrNotExist.
func openQuarantine(store *chunkstore.Store) (int, error) {
	return nofollow.OpenDir(store.BaseFD(), store.Base(), QuarantineDir)
}

// walkQuarantine calls fn for every chunk or bad-chunk file in the
// quarantine's run dirs that keep says to visit (nil: all), with the fd
// of its xxxx dir. Run dirs come newest first; names that are not run ids,
// xxxx dirs or chunk names are skipped, symlinks are never followed (a
// symlinked quarantine dir is an error naming it), and an fn error stops
// the walk. done, when not nil, is called after each xxxx dir (its fd still
// open) and after each run dir, with sub "" then. A missing quarantine
// dir is no error.
func walkQuarantine(store *chunkstore.Store, keep func(run string) bool,
	fn func(e *quarantineEntry, subfd int, subdir string) error,
	done func(runfd int, run, sub string)) error {
	sys := store.Syscalls()
	root := QuarantinePath(store.Base())
	qfd, err := openQuarantine(store)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	defer unix.Close(qfd)
	runs, err := quarantineRuns(sys, qfd, root)
	if err != nil {
		return err
	}
	for _, run := range runs {
		if keep != nil && !keep(run) {
			continue
		}
		if err := walkRun(store, qfd, root, run, fn, done); err != nil {
			return err
		}
	}
	return nil
}

// quarantineRuns lists the run dirs of the quarantine open as qfd (at
// root), newest first; names that are not run ids are not ours and are
// left out.
func quarantineRuns(sys fsys.Syscalls, qfd int, root string) ([]string, error) {
	names, err := fsys.ReadNames(sys, qfd, root)
	if err != nil {
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	runs := slices.DeleteFunc(names, func(n string) bool { _, ok := runIDTime(n); return !ok })
	slices.Sort(runs)
	slices.Reverse(runs)
	return runs, nil
}

func walkRun(store *chunkstore.Store, qfd int, root, run string,
	fn func(e *quarantineEntry, subfd int, subdir string) error,
	done func(runfd int, run, sub string)) error {
	sys := store.Syscalls()
	rundir := root + "/" + run
	rfd, err := nofollow.OpenDir(qfd, root, run)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // purged or restored meanwhile
	}
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	defer unix.Close(rfd)
	subs, err := fsys.ReadNames(sys, rfd, rundir)
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	slices.Sort(subs)
	for _, sub := range subs {
		if len(sub) != 4 {
			continue
		}
		if _, err := strconv.ParseUint(sub, 16, 16); err != nil {
			continue
		}
		subdir := rundir + "/" + sub
		sfd, err := nofollow.OpenDir(rfd, rundir, sub)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("quarantine: %w", err)
		}
		err = walkSub(sys, sfd, subdir, &quarantineEntry{run: run, sub: sub}, fn)
		if err == nil && done != nil {
			done(rfd, run, sub)
		}
		unix.Close(sfd)
		if err != nil {
			return err
		}
	}
	if done != nil {
		done(qfd, run, "")
	}
	return nil
}

func walkSub(sys fsys.Syscalls, sfd int, subdir string, e *quarantineEntry,
	fn func(e *quarantineEntry, subfd int, subdir string) error) error {
	names, err := fsys.ReadNames(sys, sfd, subdir)
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	for _, name := range names {
		kind, d := chunkstore.Classify([]byte(name))
		if kind == chunkstore.KindOther {
			continue
		}
		e.name, e.digest, e.bad = name, d, kind == chunkstore.KindBad
		if err := fn(e, sfd, subdir); err != nil {
			return err
		}
	}
	return nil
}

// removeEmpty removes directory name of dirfd if it is empty; any failure
// (not empty, gone) leaves it.
func removeEmpty(sys fsys.Syscalls, dirfd int, name string) {
	_ = sys.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// statEntry stats a quarantined file without following it; ok is false
// when it is not a single-linked regular file (left alone) or vanished.
func statEntry(sys fsys.Syscalls, subfd int, name string, st *unix.Statx_t) (ok bool, err error) {
	err = sys.Statx(subfd, name, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE|unix.STATX_NLINK|unix.STATX_SIZE|unix.STATX_ATIME, st)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1, nil
}

// purgeReport is what a purge did.
type purgeReport struct {
	runs   int
	kept   int // runs still within the period (or all of them with quarantine off)
	chunks int64
	bytes  uint64
}

// purgeQuarantine removes the quarantine's runs older than
// gc-quarantine-hours (counted from each run's start), recording every
// file in the run's journal as purged. It runs after phase 1, whose heal
// has moved back every referenced chunk it found there, and keeps any
// digest phase 1 could not touch all the same. Failures are warnings: a
// purge frees space, it keeps nothing safe. With quarantine off it purges
// nothing and says how much it keeps.
func (r *run) purgeQuarantine(jr *runJournal) purgeReport {
	var rep purgeReport
	hours := r.opts.Tuning.QuarantineHours
	now := r.now()
	expired := func(run string) bool {
		if run == r.id {
			return false
		}
		t, _ := runIDTime(run)
		if hours <= 0 || now.Sub(t) < time.Duration(hours)*time.Hour {
			rep.kept++
			return false
		}
		rep.runs++
		return true
	}
	sys := r.store.Syscalls()
	var st unix.Statx_t
	err := walkQuarantine(r.store, expired, func(e *quarantineEntry, subfd int, subdir string) error {
		if !e.bad && r.untouched.has(&e.digest) {
			r.log.Warn("keeping quarantined chunk that phase 1 could not touch: an index references it",
				zap.String("chunk", subdir+"/"+e.name))
			return nil
		}
		ok, err := statEntry(sys, subfd, e.name, &st)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		if !r.opts.DryRun {
			if err := sys.Unlinkat(subfd, e.name, 0); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // restored meanwhile
				}
				return fsys.WithPath(err, subdir+"/"+e.name)
			}
			flags := journal.Purged
			if e.bad {
				flags |= journal.Bad
			}
			jr.add(e.name, &st, flags)
		}
		rep.chunks++
		rep.bytes = satAdd(rep.bytes, st.Size)
		return nil
	}, func(dirfd int, run, sub string) {
		if r.opts.DryRun {
			return
		}
		if sub == "" {
			sub = run
		}
		removeEmpty(sys, dirfd, sub)
	})
	if err != nil {
		r.log.Warn("purging the quarantine failed: what it did not reach stays until the next run", zap.Error(err))
	}
	switch {
	case rep.chunks > 0 || rep.runs > 0:
		r.log.Info("purged quarantine", zap.Int("runs", rep.runs), zap.Int64("chunks", rep.chunks),
			zap.Uint64("bytes", rep.bytes), zap.Int("hours", hours), zap.Int("kept-runs", rep.kept))
	case hours <= 0 && rep.kept > 0:
		r.log.Warn("the quarantine holds runs but gc-quarantine-hours=0 purges nothing: restore them (chunkgc restore) or set gc-quarantine-hours",
			zap.String("dir", QuarantinePath(r.store.Base())), zap.Int("runs", rep.kept))
	}
	return rep
}

// healer is phase 1's side of the quarantine (doc "Quarantine"): a
// referenced chunk whose touch found it missing is looked up in the
// quarantine, newest run first, and moved back. The run dirs are listed
// once, at the first missing chunk. Safe for concurrent use.
type healer struct {
	store *chunkstore.Store
	log   *zap.Logger

	once sync.Once
	runs []string // newest first

	mu     sync.Mutex
	healed int64
}

// listRuns lists the quarantine's run dirs, newest first.
func (h *healer) listRuns() {
	qfd, err := openQuarantine(h.store)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		h.log.Warn("cannot look for missing chunks in the quarantine", zap.Error(err))
		return
	}
	defer unix.Close(qfd)
	if h.runs, err = quarantineRuns(h.store.Syscalls(), qfd, QuarantinePath(h.store.Base())); err != nil {
		h.log.Warn("cannot look for missing chunks in the quarantine", zap.Error(err))
	}
}

// heal moves chunk d back from the quarantine into its prefix dir. It
// reports true when d is in .chunks afterwards (moved back, or a writer
// stored it meanwhile). It takes no prefix lock: phase 1 runs under the GC
// lock, so no sweep moves chunks meanwhile; a writer or a restore racing
// with it meets RENAME_NOREPLACE.
func (h *healer) heal(d blob.Digest, index string) bool {
	h.once.Do(h.listRuns)
	if len(h.runs) == 0 {
		return false
	}
	qfd, err := openQuarantine(h.store)
	if err != nil {
		return false
	}
	defer unix.Close(qfd)
	dir, err := h.store.OpenPrefix(d.Prefix())
	if err != nil {
		return false
	}
	defer dir.Close()
	root := QuarantinePath(h.store.Base())
	name := d.String()
	for _, run := range h.runs {
		sub := run + "/" + name[:4]
		sfd, err := nofollow.OpenDir(qfd, root, sub)
		if err != nil {
			continue // no such run or prefix dir (or not a dir: not ours)
		}
		err = dir.MoveFrom(sfd, root+"/"+sub, name)
		unix.Close(sfd)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if errors.Is(err, fs.ErrExist) {
			return true // a writer stored it meanwhile
		}
		if err != nil {
			h.log.Warn("moving a quarantined chunk back failed", zap.String("chunk", root+"/"+sub+"/"+name), zap.Error(err))
			continue
		}
		h.mu.Lock()
		h.healed++
		h.mu.Unlock()
		h.log.Warn("healed: a referenced chunk was missing from the chunk store and was moved back from the quarantine",
			zap.Stringer("digest", d), zap.String("index", index), zap.String("from", root+"/"+sub))
		return true
	}
	return false
}

func (h *healer) count() int64 {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.healed
}
