package gc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/chunkstore"
	"chunkgc/datastore"
	"chunkgc/internal/adapt"
	"chunkgc/internal/fsys"
	"chunkgc/locking"
	"chunkgc/objstore"
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
	// Force makes a run go on when the mass-deletion brake trips (doc
	// "Mass-deletion brake"); the figures are logged all the same.
	Force bool
	// Fresh ignores (and removes) the checkpoint of an interrupted run
	// instead of resuming it (doc "Resumable runs").
	Fresh bool
	// CheckpointInterval is how often a run writes its checkpoint at most
	// while a phase runs; 0 means 5 s.
	CheckpointInterval time.Duration
	// RecheckSlack is how long before the interrupted run's start a
	// resumed run counts an index or snapshot dir of a group that run had
	// marked as changed, and marks it again; 0 means the writer grace
	// (300 s), a negative value none (for tests, whose stores are seconds
	// old).
	RecheckSlack time.Duration
	// Now is the wall clock; nil is time.Now.
	Now func() time.Time
	// Owner owns .gc-status when running as root.
	Owner fsys.Owner
	// Tracker, when not nil, is kept up to date with the run's progress
	// (phase, units done, removals so far) for a progress display.
	Tracker *Tracker
	// GroupLockTimeout bounds the wait for a group's exclusive lock on the
	// last re-list attempt; 0 means 10 minutes.
	GroupLockTimeout time.Duration
	// S3, when not nil, makes the run collect an S3 datastore whose local
	// cache is the store (doc "S3 datastores").
	S3 *S3

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
	// brakeSample replaces brakeSampleChunks when > 0; brakeOffset, when
	// set, is where the brake's order starts instead of a random dir.
	brakeSample int64
	brakeOffset *uint16
	// afterSweptDir runs after phase 2 finished prefix dir p.
	afterSweptDir func(p int)
	// afterCommitted runs when phase 1's low-water mark passes group
	// number n (under the tracker's lock).
	afterCommitted func(n int)
	// s3BeforeObject runs in an S3 sweep before the listed key is decided.
	s3BeforeObject func(key string)
}

// pool starts the worker pool of one phase: gc-concurrency workers, or with
// gc-concurrency=0 a pool that sizes itself (doc "Concurrency"), starting
// at start (0: [DefaultConcurrency]) and capped by [maxWorkers].
func (o *Options) pool(ctx context.Context, phase string, start int, log *zap.Logger) *adapt.Pool {
	return adapt.Start(ctx, adapt.Config{
		Name: phase, Fixed: o.Tuning.Concurrency, Start: start, Max: maxWorkers(), Log: log,
	})
}

// stopPool stops a phase's pool once its workers have returned and, when
// it sized itself, logs what it settled on.
func (o *Options) stopPool(p *adapt.Pool, log *zap.Logger) adapt.Summary {
	s := p.Stop()
	if o.Tuning.Concurrency == 0 {
		log.Info("adaptive workers", zap.Int("final", s.Final), zap.Int("peak", s.Peak), zap.Int("changes", s.Changes))
	}
	return s
}

// concurrency describes gc-concurrency for the log.
func (o *Options) concurrency() string {
	if n := o.Tuning.Concurrency; n > 0 {
		return strconv.Itoa(n)
	}
	return fmt.Sprintf("adaptive (from %d, at most %d)", DefaultConcurrency(), maxWorkers())
}

// DefaultConcurrency is the first worker limit of each phase when
// gc-concurrency is 0: four per CPU, which saturates a local disk's kernel
// paths (see README, "Performance"); the pool then grows or shrinks.
func DefaultConcurrency() int { return adapt.DefaultStart() }

// maxWorkers caps an adaptive pool: [adapt.DefaultMax], and one worker per
// 16 fds of RLIMIT_NOFILE, since a sweep worker may hold a prefix dir fd
// beside the cached ones (chunkstore keeps 2048 fds out of its cache for
// such uses) and a mark worker's touch may open one for a moment.
func maxWorkers() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return adapt.DefaultStart()
	}
	return int(max(1, min(uint64(adapt.DefaultMax), rl.Cur/16)))
}

// Run collects garbage in store. locks is the store's lock directory. The
// returned status is also written to .gc-status unless DryRun.
//
// A run is four steps: prepare (the locks, the writer registry, min_atime,
// the atime probe and the clock skew), mark (phase 1), sweep (the prefix dir
// check, then phase 2) and report.
//
// Run returns an error wrapping [locking.ErrLocked] when another GC or a
// writer holds the GC or store lock, context.Canceled (with the signal as
// cause) when ctx is cancelled, a [*BrakeError] (matching [ErrBrake]) when
// the mass-deletion brake stopped it before its first removal, and any
// error that made it stop before unlinking something it could not prove to
// be garbage. Only with a *BrakeError does it return a Status beside the
// error: the figures so far, with the brake's in Status.Brake.
func Run(ctx context.Context, store *chunkstore.Store, locks *locking.Dir, opts Options) (*Status, error) {
	r := newRun(store, locks, &opts)
	release, err := r.takeLocks()
	if err != nil {
		return nil, err
	}
	defer release()
	defer r.stopListing()
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	defer r.cp.close()
	if err := r.mark(ctx); err != nil {
		r.cp.save() // the progress so far, for the next run to resume
		return nil, err
	}
	if err := r.sweep(ctx); err != nil {
		r.cp.save()
		if errors.Is(err, ErrBrake) {
			return r.st, err // the brake's figures are in r.st.Brake
		}
		return nil, err
	}
	if err := r.report(); err != nil {
		return nil, err
	}
	return r.st, nil
}

// run is one GC run's state, shared by its steps.
type run struct {
	store     *chunkstore.Store
	locks     *locking.Dir
	opts      *Options
	log       *zap.Logger
	now       func() time.Time
	st        *Status
	id        string // the run id: its journal's and quarantine dir's name
	untouched *untouchedSet
	heal      *healer
	prog      *Tracker
	// markWorkers is phase 1's last worker limit, where the prefix dir
	// check and phase 2 start.
	markWorkers int

	// Resumable runs (resume.go): res is the checkpoint resumed (nil:
	// none), cp writes this run's (nil: none), the trackers hold each
	// phase's low-water mark, phase is the phase running, brakeDone says
	// the brake decided.
	res       *resumeState
	cp        *checkpointer
	markTr    *markTracker
	sweepTr   *sweepTracker
	phase     string
	brakeDone bool

	// listing lists .chunks beside the probe and phase 1, for the prefix
	// dir check (nil until prepare starts it).
	listing *prefixListing

	// s3Cut is an S3 run's object cutoff, min_atime in the server's clock;
	// s3Req0 its bucket's request counts at the start.
	s3Cut  time.Time
	s3Req0 objstore.Requests
}

func newRun(store *chunkstore.Store, locks *locking.Dir, opts *Options) *run {
	r := &run{store: store, locks: locks, opts: opts, log: opts.Log, now: opts.Now, prog: opts.Tracker}
	if r.prog == nil {
		r.prog = new(Tracker) // the log's ETAs need one
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.now == nil {
		r.now = time.Now
	}
	return r
}

// takeLocks takes the store's GC lock and then its store lock (SPEC §7),
// and returns what releases both.
func (r *run) takeLocks() (release func(), err error) {
	gcLock, err := r.locks.GCLock()
	if err != nil {
		return nil, fmt.Errorf("gc lock: %w", err)
	}
	storeLock, err := r.locks.LockStore(r.store.BaseFD(), r.store.Base())
	if err != nil {
		gcLock.Unlock()
		return nil, fmt.Errorf("store lock: %w", err)
	}
	return func() {
		storeLock.Unlock()
		gcLock.Unlock()
	}, nil
}

// prepare starts the status, computes min_atime from the cutoff and the
// oldest live writer, and runs the atime probe, which also measures the
// file server's clock skew and lowers min_atime by it.
func (r *run) prepare(ctx context.Context) error {
	startTime := r.now()
	r.st = &Status{PBSFigures: PBSFigures{UPID: upid(r.opts.StoreName, startTime)}, StartTime: startTime.Unix(), DryRun: r.opts.DryRun}
	r.id = newRunID(r.st.StartTime)
	r.prog.begin(startTime)
	r.log.Info("starting garbage collection", zap.String("base", r.store.Base()), zap.String("upid", r.st.UPID),
		zap.Bool("dry-run", r.opts.DryRun), zap.String("concurrency", r.opts.concurrency()))
	if err := r.cutoff(); err != nil {
		return err
	}
	if r.opts.S3 != nil {
		// Before the probe, which uploads its chunk to the bucket.
		r.s3Req0 = r.opts.S3.Bucket.Requests()
		if err := r.s3InUse(ctx); err != nil {
			return err
		}
		if err := r.s3Indexes(ctx); err != nil {
			return err
		}
	}
	r.startListing(ctx)
	if err := r.probe(ctx); err != nil {
		return err
	}
	if r.opts.S3 != nil {
		if err := r.s3Clock(ctx); err != nil {
			return err
		}
	}
	r.untouched = &untouchedSet{limit: r.opts.hooks.untouchedLimit}
	r.loadCheckpoint()
	r.startCheckpoints()
	return nil
}

// prefixListing is [chunkstore.Store.ListPrefixDirs] running in the
// background: started before the atime probe, it lists .chunks while the
// probe sleeps and phase 1 touches, and the prefix dir check between the
// phases takes its word for the dirs whose fd the budget cannot keep (doc
// "Round trips"). Chunks of a prefix dir that appears after it listed are
// younger than the run.
type prefixListing struct {
	cancel context.CancelFunc
	done   chan struct{}
	l      *chunkstore.PrefixListing
	err    error
}

func (r *run) startListing(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	l := &prefixListing{cancel: cancel, done: make(chan struct{})}
	r.listing = l
	go func() {
		defer close(l.done)
		l.l, l.err = r.store.ListPrefixDirs(ctx)
	}()
}

// listed waits for the listing and returns it.
func (r *run) listed() (*chunkstore.PrefixListing, error) {
	if r.listing == nil {
		return nil, nil
	}
	<-r.listing.done
	return r.listing.l, r.listing.err
}

// stopListing ends a listing that is still running (a run that stopped
// before the check) and waits for it.
func (r *run) stopListing() {
	if r.listing != nil {
		r.listing.cancel()
		<-r.listing.done
	}
}

// cutoff sets min_atime (SPEC §6.2) from the cutoff and the writer registry.
func (r *run) cutoff() error {
	oldest, live, found, err := r.locks.OldestWriter(r.log)
	if err != nil {
		return fmt.Errorf("writer registry: %w", err)
	}
	st := r.st
	st.OldestWriter = st.StartTime
	if found && oldest.Unix() < st.OldestWriter {
		st.OldestWriter = oldest.Unix()
	}
	st.MinAtime = minAtime(st.StartTime, st.OldestWriter, r.opts.Tuning.AtimeCutoff)
	r.log.Info("using access time cutoff",
		zap.Duration("cutoff", r.opts.Tuning.AtimeCutoff),
		zap.Time("min-atime", time.Unix(st.MinAtime, 0).UTC()),
		zap.Int("live-writers", live),
		zap.Time("oldest-writer", time.Unix(st.OldestWriter, 0).UTC()))
	return nil
}

// probe runs the atime safety check unless tuning turned it off, refuses a
// clock skew above gc-max-clock-skew and applies the measured lag. Of an
// S3 datastore it first uploads the probe's chunk and caches it
// ([chunkstore.Store.InsertZeroChunkS3]), so that no cache file claims a
// missing object.
func (r *run) probe(ctx context.Context) error {
	tn := r.opts.Tuning
	if !tn.AtimeSafetyCheck {
		r.log.Warn("access time safety check disabled by tuning (gc-atime-safety-check=0)")
		r.log.Warn("file server clock skew unmeasured: min-atime assumes its clock agrees with this host's")
		return nil
	}
	if r.opts.S3 != nil {
		if err := r.store.InsertZeroChunkS3(ctx, r.locks, r.opts.S3.Bucket, r.opts.S3.Store); err != nil {
			return fmt.Errorf("atime safety check: %w", err)
		}
	}
	res, err := r.store.ProbeAtime(ctx)
	if err != nil {
		return fmt.Errorf("atime safety check: %w", err)
	}
	if err := res.CheckClockSkew(tn.MaxClockSkew); err != nil {
		return fmt.Errorf("atime safety check: %w", err)
	}
	applyClockSkew(r.st, res.ClockSkew, r.log)
	r.log.Info("access time safety check passed, proceeding", zap.String("fs", res.FSType),
		zap.Duration("clock-skew", res.ClockSkew), zap.Duration("max-clock-skew", tn.MaxClockSkew))
	return nil
}

// mark is phase 1: it touches every chunk an index references.
func (r *run) mark(ctx context.Context) error {
	t1 := time.Now()
	r.log.Info("start phase 1 (mark used chunks)")
	markLog := r.log.With(zap.String("phase", "mark"))
	r.heal = &healer{store: r.store, log: markLog}
	workers, err := mark(ctx, r.store, r.locks, r.opts, markLog, r.st, r.untouched, r.heal, r.prog,
		markResume{tr: r.markTr, res: r.res, cp: r.cp})
	r.st.HealedChunks = r.heal.count()
	if err != nil {
		return err
	}
	next, base, brakeDone := r.resumedSweep()
	r.phase, r.brakeDone = phaseSweep, brakeDone
	r.sweepTr = newSweepTracker(next, base)
	if brakeDone {
		r.st.Brake = r.res.cp.Sweep.Brake
	}
	r.cp.save()
	r.markWorkers = workers
	r.st.DurationPhase1 = time.Since(t1).Seconds()
	if r.opts.hooks.beforeSweep != nil {
		r.opts.hooks.beforeSweep()
	}
	if err := ctx.Err(); err != nil {
		return errCanceled(ctx, "before phase 2")
	}
	return nil
}

// sweep is phase 2. Doubt stops the run before its first removal: it first
// checks that every prefix dir is a real directory (doc "No escape").
func (r *run) sweep(ctx context.Context) error {
	t2 := time.Now()
	defer func() { r.st.DurationPhase2 = time.Since(t2).Seconds() }()
	r.prog.setPhase("check", 0)
	checkLog := r.log.With(zap.String("phase", "check"))
	listed, err := r.listed()
	var missingPrefixes []uint16
	if err == nil {
		check := r.opts.pool(ctx, "check", r.markWorkers, checkLog)
		missingPrefixes, err = r.store.CheckPrefixDirs(ctx, check, listed)
		r.opts.stopPool(check, checkLog)
	}
	if err != nil {
		if ctx.Err() != nil {
			return errCanceled(ctx, "before phase 2")
		}
		return fmt.Errorf("before phase 2: %w", err)
	}
	if len(missingPrefixes) > 0 {
		r.log.Warn("prefix directories missing, nothing to sweep there", zap.Int("count", len(missingPrefixes)),
			zap.String("first", fmt.Sprintf("%04x", missingPrefixes[0])))
	}
	if r.opts.hooks.afterPrefixCheck != nil {
		r.opts.hooks.afterPrefixCheck()
	}
	if r.opts.S3 != nil {
		return r.sweepS3(ctx)
	}
	r.log.Info("start phase 2 (sweep unused chunks)")
	s := newSweeper(r.store, r.opts, r.log.With(zap.String("phase", "sweep")), r.st, r.untouched)
	s.prog = r.prog
	r.prog.setPhase("sweep", chunkstore.PrefixCount)
	r.resumeSweep(s)
	if r.opts.Tuning.BrakePercent > 0 && !r.brakeDone {
		b, err := s.brake(ctx, r.opts, r.markWorkers)
		if err != nil {
			if ctx.Err() != nil {
				return errCanceled(ctx, "phase 2")
			}
			return fmt.Errorf("phase 2: %w", err)
		}
		s.pre = b
		if err := r.applyBrake(b); err != nil {
			b.close()
			return err
		}
	}
	if !r.brakeDone {
		r.brakeDone = true // decided before the first removal
		r.cp.save()
	}
	s.jr = newRunJournal(r)
	s.q = newQuarantine(r)
	err = s.sweep(ctx, r.opts, r.markWorkers, r.st)
	s.q.close()
	if err == nil {
		if s.q != nil {
			r.st.QuarantinedChunks, r.st.QuarantinedBytes = r.st.RemovedChunks+r.st.RemovedBad, r.st.RemovedBytes
			if r.st.QuarantinedChunks > 0 && !r.opts.DryRun {
				r.st.QuarantineRun = r.id
			}
		}
		p := r.purgeQuarantine(s.jr)
		r.st.PurgedChunks, r.st.PurgedBytes = p.chunks, p.bytes
	}
	r.st.JournalRun = s.jr.close(r.st, err)
	return err
}

// report logs the end-of-run report and, unless DryRun, writes .gc-status.
func (r *run) report() error {
	st := r.st
	r.prog.setPhase("done", 0)
	for _, line := range st.ReportLines() {
		r.log.Info(line)
	}
	if !r.opts.DryRun {
		if err := writeStatus(r.store, st, r.opts.Owner); err != nil {
			return err
		}
		r.finishCheckpoint()
	}
	r.log.Info("gc finished", zap.Int64("removed-chunks", st.RemovedChunks), zap.Uint64("removed-bytes", st.RemovedBytes),
		zap.Float64("phase1-s", st.DurationPhase1), zap.Float64("phase2-s", st.DurationPhase2))
	return nil
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
