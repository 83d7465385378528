package gc

import (
	"chunkgc/internal/fsys"

	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"

	"chunkgc/chunkstore"
	"chunkgc/datastore"
	"chunkgc/locking"
	"chunkgc/tuning"
)

// writerGrace is subtracted from the oldest live writer's start time when it
// lowers min_atime (SPEC §6.2): five minutes, as in PBS.
const writerGrace = 300

// groupRetries is how often a group is listed again when its newest
// snapshot's index vanished; the last attempt holds the group's lock.
const groupRetries = 10

// Options configures a GC run.
type Options struct {
	// Log receives structured progress and the end-of-run report; nil is a no-op logger.
	Log *zap.Logger
	// StoreName names the store in logs and in the run id.
	StoreName string
	// Tuning holds the cutoff, cache capacity, probe switch and concurrency.
	Tuning tuning.Tuning
	// DryRun runs both phases without unlinking and without writing .gc-status.
	DryRun bool
	// Now is the wall clock; nil is time.Now.
	Now func() time.Time
	// Owner owns .gc-status when running as root.
	Owner fsys.Owner
	// GroupLockTimeout bounds the wait for a group's exclusive lock on the
	// last re-list attempt; 0 means 10 minutes.
	GroupLockTimeout time.Duration
	// Syscalls is the syscall seam of the store's tree (listings, index
	// opens); nil means fsys.Real{}. Pass the seam given to the store's
	// chunkstore.Options.Syscalls.
	Syscalls fsys.Syscalls

	hooks hooks
}

// hooks are test seams at points where a real race has to be staged
// deterministically; nil hooks do nothing.
type hooks struct {
	// afterGroupList runs after a group's snapshots were listed, before the
	// first of them is opened.
	afterGroupList func(g datastore.Group, attempt int)
	// beforeSweep runs between phase 1 and phase 2, before the prefix
	// dirs are checked.
	beforeSweep func()
	// afterPrefixCheck runs after the prefix dirs were checked, before the
	// first is swept.
	afterPrefixCheck func()
	// untouchedLimit replaces maxUntouched when > 0.
	untouchedLimit int
}

// workers returns the number of concurrent workers for mark and sweep.
func (o *Options) workers() int {
	if o.Tuning.Concurrency > 0 {
		return o.Tuning.Concurrency
	}
	return DefaultConcurrency()
}

// DefaultConcurrency is the worker count used when gc-concurrency is 0:
// four per CPU, because both phases wait on the kernel and the disk far more
// than they compute (see README, "Performance").
func DefaultConcurrency() int { return 4 * runtime.GOMAXPROCS(0) }

// Run collects garbage in store. locks is the store's lock directory. The
// returned status is also written to .gc-status unless DryRun.
//
// Run returns an error wrapping [locking.ErrLocked] when another GC or a
// writer holds the GC or store lock, context.Canceled (with the signal as
// cause) when ctx is cancelled, and any error that made it stop before
// unlinking something it could not prove to be garbage.
func Run(ctx context.Context, store *chunkstore.Store, locks *locking.Dir, opts Options) (*Status, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	base := store.Base()

	gcLock, err := locks.GCLock()
	if err != nil {
		return nil, fmt.Errorf("gc lock: %w", err)
	}
	defer gcLock.Unlock()
	storeLock, err := locking.OFDLockAt(store.BaseFD(), base, ".lock")
	if err != nil {
		return nil, fmt.Errorf("store lock: %w", err)
	}
	defer storeLock.Unlock()

	startTime := now()
	st := &Status{StartTime: startTime.Unix(), DryRun: opts.DryRun}
	st.UPID = upid(opts.StoreName, startTime)
	log.Info("starting garbage collection", zap.String("base", base), zap.String("upid", st.UPID),
		zap.Bool("dry-run", opts.DryRun), zap.Int("workers", opts.workers()))

	oldest, live, found, err := locks.OldestWriter(log)
	if err != nil {
		return nil, fmt.Errorf("writer registry: %w", err)
	}
	st.OldestWriter = st.StartTime
	if found && oldest.Unix() < st.OldestWriter {
		st.OldestWriter = oldest.Unix()
	}
	st.MinAtime = minAtime(st.StartTime, st.OldestWriter, opts.Tuning.AtimeCutoff)
	log.Info("using access time cutoff",
		zap.Duration("cutoff", opts.Tuning.AtimeCutoff),
		zap.Time("min-atime", time.Unix(st.MinAtime, 0).UTC()),
		zap.Int("live-writers", live),
		zap.Time("oldest-writer", time.Unix(st.OldestWriter, 0).UTC()))

	if opts.Tuning.AtimeSafetyCheck {
		res, err := store.ProbeAtime(ctx)
		if err != nil {
			return nil, fmt.Errorf("atime safety check: %w", err)
		}
		if err := res.CheckClockSkew(opts.Tuning.MaxClockSkew); err != nil {
			return nil, fmt.Errorf("atime safety check: %w", err)
		}
		applyClockSkew(st, res.ClockSkew, log)
		log.Info("access time safety check passed, proceeding", zap.String("fs", res.FSType),
			zap.Duration("clock-skew", res.ClockSkew), zap.Duration("max-clock-skew", opts.Tuning.MaxClockSkew))
	} else {
		log.Warn("access time safety check disabled by tuning (gc-atime-safety-check=0)")
		log.Warn("file server clock skew unmeasured: min-atime assumes its clock agrees with this host's")
	}

	t1 := time.Now()
	log.Info("start phase 1 (mark used chunks)")
	untouched := &untouchedSet{limit: opts.hooks.untouchedLimit}
	if err := mark(ctx, store, locks, &opts, log.With(zap.String("phase", "mark")), st, untouched); err != nil {
		return nil, err
	}
	st.DurationPhase1 = time.Since(t1).Seconds()
	if opts.hooks.beforeSweep != nil {
		opts.hooks.beforeSweep()
	}
	if err := ctx.Err(); err != nil {
		return nil, errCanceled(ctx, "before phase 2")
	}

	t2 := time.Now()
	// Doubt stops the run before its first removal: a prefix dir that is a
	// symlink or not a directory (doc "No escape").
	missingPrefixes, err := store.CheckPrefixDirs(ctx, opts.workers())
	if err != nil {
		if ctx.Err() != nil {
			return nil, errCanceled(ctx, "before phase 2")
		}
		return nil, fmt.Errorf("before phase 2: %w", err)
	}
	if len(missingPrefixes) > 0 {
		log.Warn("prefix directories missing, nothing to sweep there", zap.Int("count", len(missingPrefixes)),
			zap.String("first", fmt.Sprintf("%04x", missingPrefixes[0])))
	}
	if opts.hooks.afterPrefixCheck != nil {
		opts.hooks.afterPrefixCheck()
	}
	log.Info("start phase 2 (sweep unused chunks)")
	if err := sweep(ctx, store, &opts, log.With(zap.String("phase", "sweep")), st, untouched); err != nil {
		return nil, err
	}
	st.DurationPhase2 = time.Since(t2).Seconds()

	for _, line := range st.ReportLines() {
		log.Info(line)
	}
	if !opts.DryRun {
		if err := writeStatus(store, st, opts.Owner); err != nil {
			return nil, err
		}
	}
	log.Info("gc finished", zap.Int64("removed-chunks", st.RemovedChunks), zap.Uint64("removed-bytes", st.RemovedBytes),
		zap.Float64("phase1-s", st.DurationPhase1), zap.Float64("phase2-s", st.DurationPhase2))
	return st, nil
}

// minAtime implements SPEC §6.2: chunks with an atime before it are garbage.
func minAtime(start, oldestWriter int64, cutoff time.Duration) int64 {
	m := start - int64(cutoff/time.Second)
	if oldestWriter < m {
		m = oldestWriter - writerGrace
	}
	return m
}

// upid builds a PBS-style task id for the run.
func upid(store string, t time.Time) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "localhost"
	}
	store = strings.NewReplacer(":", "_").Replace(store)
	return fmt.Sprintf("UPID:%s:%08X:%08X:%08X:%08X:garbage_collection:%s:root@pam:",
		host, os.Getpid(), 0, 0, t.Unix(), store)
}

// errCanceled wraps the cancellation cause so callers see both
// context.Canceled and the signal.
func errCanceled(ctx context.Context, where string) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%s: %w", where, cause)
	}
	return fmt.Errorf("%s: %w (%w)", where, context.Canceled, cause)
}
