package gc

import (
	"fmt"
	"os"
	"path/filepath"
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

// StateDir is chunkgc's own directory in a store's base, beside .chunks:
// PBS lists only .chunks, namespaces and backup-type dirs there, and skips
// names starting with a dot, so neither its GC nor its verify looks inside.
const StateDir = ".chunkgc"

// JournalDir is where the deletion journals live, relative to the base.
const JournalDir = StateDir + "/journal"

// JournalPath returns the journal directory of the store at base.
func JournalPath(base string) string { return filepath.Join(base, JournalDir) }

// OpenJournalDir opens the journal directory of store for reading, from the
// store's base fd, following no symlink: a .chunkgc or journal that is a
// symlink (or not a directory) is an error naming it, matching
// [nofollow.ErrSymlink] (or [nofollow.ErrNotDir]). A missing one is an
// error matching fs.ErrNotExist: no run has removed anything yet.
func OpenJournalDir(store *chunkstore.Store) (int, error) {
	return nofollow.OpenDir(store.BaseFD(), store.Base(), JournalDir)
}

// runJournal is one run's deletion journal (doc "Deletion journal"): created
// at the run's first removal, so that a run that removes nothing leaves no
// journal to push older ones out. A journal that cannot be created or
// written is a warning, never a reason to stop: it records what GC did, it
// keeps nothing safe, and a full disk is when GC must go on.
type runJournal struct {
	store *chunkstore.Store
	owner fsys.Owner
	log   *zap.Logger
	keep  int
	hdr   journal.Header

	once   sync.Once
	w      *journal.Writer
	dirfd  int
	dir    string
	failed sync.Once
	err    error // the first failure, under failed
}

func newRunJournal(r *run) *runJournal {
	tn := r.opts.Tuning
	if tn.JournalKeep <= 0 || r.opts.DryRun {
		return nil
	}
	host, _ := os.Hostname()
	return &runJournal{
		store: r.store, owner: r.opts.Owner, log: r.log, keep: tn.JournalKeep, dirfd: -1,
		hdr: journal.Header{
			RunID: r.id,
			Store: r.opts.StoreName, Host: host, StartTime: r.st.StartTime, MinAtime: r.st.MinAtime,
			Cutoff: tn.AtimeCutoff,
		},
	}
}

// add records one chunk file that the sweep took out of the store (flags
// 0 or Quarantined, with Bad for a bad copy) or the purge removed from the
// quarantine (Purged).
func (j *runJournal) add(name string, st *unix.Statx_t, flags journal.Flags) {
	if j == nil {
		return
	}
	j.once.Do(j.create)
	if j.w == nil {
		return
	}
	d, err := blob.ParseDigest(name[:2*blob.DigestSize])
	if err != nil {
		return // Classify let only chunk names through
	}
	rec := journal.Record{Digest: d, Size: st.Size, Atime: st.Atime.Sec*1e9 + int64(st.Atime.Nsec), Flags: flags}
	if err := j.w.Add(rec); err != nil {
		j.fail(err)
	}
}

// create makes <base>/.chunkgc/journal (each missing component 0750 and
// chowned to the owner, none followed if it is a symlink:
// [nofollow.MkdirAll]) and the run's journal in it.
func (j *runJournal) create() {
	sys := j.store.Syscalls()
	fd, err := nofollow.MkdirAll(sys, j.store.BaseFD(), j.store.Base(), JournalDir, 0o750, j.owner)
	if err != nil {
		j.fail(fmt.Errorf("journal dir: %w", err))
		return
	}
	j.dirfd, j.dir = fd, JournalPath(j.store.Base())
	w, err := journal.Create(sys, fd, j.dir, j.hdr, j.owner)
	if err != nil {
		j.fail(err)
		return
	}
	j.w = w
}

func (j *runJournal) fail(err error) {
	j.failed.Do(func() {
		j.err = err
		j.log.Warn("deletion journal failed: this run's removals are not all recorded", zap.Error(err))
	})
}

// close writes the trailer (with the run's error, if any) and prunes the
// journals beyond gc-journal-keep. It returns the run id when a journal
// was written.
func (j *runJournal) close(st *Status, runErr error) string {
	if j == nil || j.w == nil {
		return ""
	}
	defer unix.Close(j.dirfd)
	t := journal.Trailer{Records: j.w.Added(), Bytes: st.RemovedBytes, EndTime: time.Now().Unix()}
	if runErr != nil {
		t.Err = runErr.Error()
	}
	if err := j.w.Close(t); err != nil {
		j.fail(err)
	}
	if n, err := journal.Prune(j.store.Syscalls(), j.dirfd, j.dir, j.keep, j.hdr.RunID); err != nil {
		j.log.Warn("pruning old deletion journals failed", zap.String("dir", j.dir), zap.Error(err))
	} else if n > 0 {
		j.log.Info("pruned old deletion journals", zap.Int("removed", n), zap.Int("keep", j.keep))
	}
	return j.hdr.RunID
}
