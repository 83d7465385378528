package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/nofollow"
)

// RestoreOptions selects what [Restore] moves back.
type RestoreOptions struct {
	// Log receives a line per run restored; nil is a no-op logger.
	Log *zap.Logger
	// Run restores only the quarantine dir of this run id; "" restores
	// from every run.
	Run string
	// Digests restores only these chunks (and their bad copies); empty
	// restores every chunk.
	Digests []blob.Digest
}

// RestoreReport is what [Restore] did.
type RestoreReport struct {
	Runs          []string `json:"runs"`
	Restored      int64    `json:"restored-chunks"`
	RestoredBytes uint64   `json:"restored-bytes"`
	// Present counts quarantined chunks that were already in .chunks
	// again (a backup stored them anew): the quarantined copy stays, and
	// a later purge removes it.
	Present int64 `json:"already-present"`
	// NotFound lists the asked-for digests that were neither restored nor
	// present.
	NotFound []string `json:"not-found,omitempty"`
}

// ErrNoSuchRun is matched by the error of [Restore] when the asked-for run
// has no quarantine dir.
var ErrNoSuchRun = errors.New("no such run in the quarantine")

// Restore moves quarantined chunks back into the chunk store (doc
// "Quarantine"). It takes neither the GC lock nor the store lock, so it
// runs while a GC or a backup runs: each chunk moves under its prefix
// dir's shared flock (a writer's lock), by a rename that never replaces a
// chunk there, and is touched before the lock is released. A running
// sweep decides and moves under the same dir's exclusive flock, so it
// either took the chunk before (then it is in the quarantine and comes
// back) or sees it back with an atime of now, after its min_atime; a
// writer that stored the chunk meanwhile keeps its copy.
func Restore(ctx context.Context, store *chunkstore.Store, opts RestoreOptions) (*RestoreReport, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	if opts.Run != "" {
		if _, ok := runIDTime(opts.Run); !ok {
			return nil, fmt.Errorf("restore: %q is not a run id", opts.Run)
		}
		fd, err := openQuarantineRun(store, opts.Run)
		if err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		unix.Close(fd)
	}
	want := make(map[blob.Digest]bool, len(opts.Digests))
	for _, d := range opts.Digests {
		want[d] = false
	}
	rep := &RestoreReport{Runs: []string{}}
	rs := restorer{store: store, log: log, rep: rep}
	defer rs.closeDir()
	keep := func(run string) bool { return opts.Run == "" || run == opts.Run }
	err := walkQuarantine(store, keep, func(e *quarantineEntry, subfd int, subdir string) error {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if len(want) > 0 {
			if _, ok := want[e.digest]; !ok {
				return nil
			}
		}
		back, err := rs.restore(e, subfd, subdir)
		if err != nil {
			return err
		}
		if back && len(want) > 0 {
			want[e.digest] = true
		}
		if back && (len(rep.Runs) == 0 || rep.Runs[len(rep.Runs)-1] != e.run) {
			rep.Runs = append(rep.Runs, e.run)
		}
		return nil
	}, func(dirfd int, run, sub string) {
		if sub == "" {
			sub = run
		}
		removeEmpty(store.Syscalls(), dirfd, sub)
	})
	for _, d := range opts.Digests {
		if !want[d] {
			rep.NotFound = append(rep.NotFound, d.String())
			want[d] = true // listed once
		}
	}
	if err != nil {
		return rep, fmt.Errorf("restore: %w", err)
	}
	log.Info("restored quarantined chunks", zap.Int64("chunks", rep.Restored), zap.Uint64("bytes", rep.RestoredBytes),
		zap.Int64("already-present", rep.Present), zap.Strings("runs", rep.Runs))
	return rep, nil
}

// openQuarantineRun opens the quarantine dir of run, following no symlink.
func openQuarantineRun(store *chunkstore.Store, run string) (int, error) {
	qfd, err := openQuarantine(store)
	if errors.Is(err, fs.ErrNotExist) {
		return -1, fmt.Errorf("%w: %s", ErrNoSuchRun, run)
	}
	if err != nil {
		return -1, err
	}
	defer unix.Close(qfd)
	fd, err := nofollow.OpenDir(qfd, QuarantinePath(store.Base()), run)
	if errors.Is(err, fs.ErrNotExist) {
		return -1, fmt.Errorf("%w: %s", ErrNoSuchRun, run)
	}
	return fd, err
}

// restorer moves quarantined files back, one prefix dir open at a time.
type restorer struct {
	store *chunkstore.Store
	log   *zap.Logger
	rep   *RestoreReport
	dir   *chunkstore.PrefixDir
	st    unix.Statx_t
}

func (rs *restorer) closeDir() {
	if rs.dir != nil {
		rs.dir.Close()
		rs.dir = nil
	}
}

// restore moves e back into its prefix dir (the digest's, whatever dir of
// the quarantine it was in) and touches it, under the prefix dir's shared
// flock. It reports whether the chunk is in .chunks afterwards.
func (rs *restorer) restore(e *quarantineEntry, subfd int, subdir string) (bool, error) {
	ok, err := statEntry(rs.store.Syscalls(), subfd, e.name, &rs.st)
	if err != nil || !ok {
		return false, err
	}
	p := e.digest.Prefix()
	if rs.dir == nil || rs.dir.Prefix() != p {
		rs.closeDir()
		if rs.dir, err = rs.store.OpenPrefix(p); err != nil {
			return false, err
		}
	}
	unlock, err := rs.dir.Lock(false)
	if err != nil {
		return false, err
	}
	err = rs.dir.MoveFrom(subfd, subdir, e.name)
	if err == nil {
		if err = rs.dir.Touch(e.name); err != nil {
			// Back with its old atime a running sweep would take it
			// again: return it to the quarantine.
			if merr := rs.dir.MoveTo(e.name, subfd, subdir); merr != nil {
				err = errors.Join(err, merr)
			}
		}
	}
	err = errors.Join(err, unlock())
	switch {
	case err == nil:
		rs.rep.Restored++
		rs.rep.RestoredBytes = satAdd(rs.rep.RestoredBytes, rs.st.Size)
		return true, nil
	case errors.Is(err, fs.ErrExist):
		rs.rep.Present++
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil // purged or healed meanwhile
	}
	return false, err
}
