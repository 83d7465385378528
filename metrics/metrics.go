package metrics

import (
	"context"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"chunkgc/chunkstore"
	"chunkgc/gc"
	"chunkgc/locking"
)

// Result is how a GC run ended; each is a value of the result label of
// chunkgc_last_run_result and chunkgc_runs_total.
type Result string

// The results, matching chunkgc's exit codes: 0, 1, 75, 65, 130/143.
const (
	ResultOK       Result = "ok"
	ResultError    Result = "error"
	ResultBusy     Result = "busy"  // another GC or a writer held the store
	ResultBrake    Result = "brake" // the mass-deletion brake stopped the run
	ResultCanceled Result = "canceled"
)

// Results are every [Result], in exposition order.
var Results = []Result{ResultOK, ResultError, ResultBusy, ResultBrake, ResultCanceled}

// failure reports whether a run that ended so sets the last failure time: a
// busy run is not a failure (the unit treats exit 75 as success, and the
// next run tries again), a brake or a cancel is.
func (r Result) failure() bool { return r != ResultOK && r != ResultBusy }

// Classify maps the error gc.Run returned to its Result, in the order
// cmd/chunkgc maps errors to exit codes: after ctx was cancelled every
// error is the cancel's; then busy, then the brake.
func Classify(ctx context.Context, err error) Result {
	switch {
	case err == nil:
		return ResultOK
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return ResultCanceled
	case errors.Is(err, locking.ErrLocked):
		return ResultBusy
	case errors.Is(err, gc.ErrBrake):
		return ResultBrake
	}
	return ResultError
}

// Probe is the atime probe's verdict in a run; each is a value of the
// result label of chunkgc_last_run_atime_probe_result.
type Probe string

// The verdicts. Unknown: the run ended without one that chunkgc can tell
// (busy, or an error or cancel that was not the probe's).
const (
	ProbePassed        Probe = "passed"
	ProbeDisabled      Probe = "disabled" // tuning gc-atime-safety-check=0
	ProbeNotHonoured   Probe = "not_honoured"
	ProbeClockSkew     Probe = "clock_skew" // above gc-max-clock-skew
	ProbeChunkReplaced Probe = "chunk_replaced"
	ProbeUnknown       Probe = "unknown"
)

// Probes are every [Probe], in exposition order.
var Probes = []Probe{ProbePassed, ProbeDisabled, ProbeNotHonoured, ProbeClockSkew, ProbeChunkReplaced, ProbeUnknown}

// Run is how one GC run ended.
type Run struct {
	Result Result
	// Err is the run's error, nil when it ended ok.
	Err error
	// Status is what gc.Run returned: the run's figures when it ended ok,
	// the figures so far with the brake's report when the brake stopped
	// it, else nil.
	Status *gc.Status
	// Start and End are the run's wall-clock start and end.
	Start, End time.Time
}

// probe is the atime probe's verdict in r and the clock skew it measured
// (ok false: none measured). A ClockSkewError carries the skew it refused.
func (r *Run) probe() (p Probe, skew time.Duration, ok bool) {
	if e, isSkew := errors.AsType[*chunkstore.ClockSkewError](r.Err); isSkew {
		return ProbeClockSkew, e.Skew, true
	}
	switch {
	case errors.Is(r.Err, chunkstore.ErrAtimeNotHonoured):
		return ProbeNotHonoured, 0, false
	case errors.Is(r.Err, chunkstore.ErrProbeChunkReplaced):
		return ProbeChunkReplaced, 0, false
	case r.Status == nil:
		return ProbeUnknown, 0, false
	case r.Status.ClockSkewMs == nil:
		return ProbeDisabled, 0, false
	}
	return ProbePassed, time.Duration(*r.Status.ClockSkewMs) * time.Millisecond, true
}

// Input is what one exposition shows.
type Input struct {
	// Store is the value of the store label: the datastore's configured
	// name (or the escaped path of an unconfigured store).
	Store string
	// Status is the last successful run's status (.gc-status, or the run's
	// own when it ended ok); nil when the store was never collected.
	Status *gc.Status
	// StatusTime is the end of that run.
	StatusTime time.Time
	// Run is the run that just ended; nil for no run group.
	Run *Run
	// Previous is the textfile the last run wrote, whose last failure
	// time and counters Run's group carries on; nil when there is none.
	Previous *Previous
}

// Def describes one metric family, for README "Metrics" and the tests.
type Def struct {
	Name   string
	Type   string   // "gauge" or "counter"
	Labels []string // besides store
	Help   string
	// Fields are the .gc-status JSON fields the family shows ("brake."
	// prefixes a field of the brake report); none for the run group.
	Fields []string
	// Run: the family is in the run group (only a GC run writes it).
	Run bool
}

// figure is one series of the status group: a .gc-status field.
type figure struct {
	name, field  string
	label, value string // an extra label and its value; "" none
	help         string
	get          func(*gc.Status) (float64, bool)
}

// always adapts a getter that always has a value.
func always[T int64 | uint64 | float64](f func(*gc.Status) T) func(*gc.Status) (float64, bool) {
	return func(s *gc.Status) (float64, bool) { return float64(f(s)), true }
}

// brake adapts a getter of the brake report, which a status lacks when
// gc-brake-percent=0.
func brake(f func(*gc.BrakeReport) float64) func(*gc.Status) (float64, bool) {
	return func(s *gc.Status) (float64, bool) {
		if s.Brake == nil {
			return 0, false
		}
		return f(s.Brake), true
	}
}

// s3 shows a figure of an S3 datastore's sweep; absent for a filesystem one.
func s3(f func(*gc.S3SweepCounts) float64) func(*gc.Status) (float64, bool) {
	return func(s *gc.Status) (float64, bool) {
		if s.S3 == nil {
			return 0, false
		}
		return f(s.S3), true
	}
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

const last = "Last successful GC run: "

var figures = slices.Concat([]figure{
	{name: "chunkgc_index_files", field: "index-file-count", help: last + "index files (.fidx, .didx) read by phase 1.",
		get: always(func(s *gc.Status) int64 { return s.IndexFileCount })},
	{name: "chunkgc_index_data_bytes", field: "index-data-bytes", help: last + "logical bytes the index files reference (original data usage).",
		get: always(func(s *gc.Status) uint64 { return s.IndexDataBytes })},
	{name: "chunkgc_disk_bytes", field: "disk-bytes", help: last + "bytes of the chunks left on disk.",
		get: always(func(s *gc.Status) uint64 { return s.DiskBytes })},
	{name: "chunkgc_disk_chunks", field: "disk-chunks", help: last + "chunks left on disk.",
		get: always(func(s *gc.Status) int64 { return s.DiskChunks })},
	{name: "chunkgc_removed_bytes", field: "removed-bytes", help: last + "bytes of the chunks removed.",
		get: always(func(s *gc.Status) uint64 { return s.RemovedBytes })},
	{name: "chunkgc_removed_chunks", field: "removed-chunks", help: last + "chunks removed.",
		get: always(func(s *gc.Status) int64 { return s.RemovedChunks })},
	{name: "chunkgc_pending_bytes", field: "pending-bytes", help: last + "bytes of unreferenced chunks kept because they are too young.",
		get: always(func(s *gc.Status) uint64 { return s.PendingBytes })},
	{name: "chunkgc_pending_chunks", field: "pending-chunks", help: last + "unreferenced chunks kept because they are too young.",
		get: always(func(s *gc.Status) int64 { return s.PendingChunks })},
	{name: "chunkgc_removed_bad_chunks", field: "removed-bad", help: last + "bad chunk files (.bad) removed.",
		get: always(func(s *gc.Status) int64 { return s.RemovedBad })},
	{name: "chunkgc_still_bad_chunks", field: "still-bad", help: last + "bad chunk files (.bad) left.",
		get: always(func(s *gc.Status) int64 { return s.StillBad })},
	{name: "chunkgc_missing_chunks", field: "missing-chunks", help: last + "chunks an index references that do not exist.",
		get: always(func(s *gc.Status) int64 { return s.MissingChunks })},
	{name: "chunkgc_strange_index_files", field: "strange-index-files", help: last + "index files outside the expected scheme.",
		get: always(func(s *gc.Status) int64 { return s.StrangeIndexFiles })},
	{name: "chunkgc_new_index_files", field: "new-index-files", help: last + "index files that appeared during phase 1 and were marked.",
		get: always(func(s *gc.Status) int64 { return s.NewIndexFiles })},
	{name: "chunkgc_not_chunk_files", field: "not-chunk-files", help: last + "files in the chunk directories that are not chunks, left alone.",
		get: always(func(s *gc.Status) int64 { return s.NotChunks })},
	{name: "chunkgc_kept_untouched_chunks", field: "kept-untouched-chunks", help: last + "chunks kept because phase 1 could not touch them.",
		get: always(func(s *gc.Status) int64 { return s.KeptUntouched })},
	{name: "chunkgc_kept_linked_chunks", field: "kept-linked-chunks", help: last + "chunks kept because they have more than one link.",
		get: always(func(s *gc.Status) int64 { return s.KeptLinked })},
	{name: "chunkgc_s3_expected_chunks", field: "s3-expected-chunks", help: last + "referenced chunks of an S3 datastore phase 1 found without a local file and marked .using.",
		get: always(func(s *gc.Status) int64 { return s.S3Expected })},
	{name: "chunkgc_s3_objects", field: "s3.objects", help: last + "chunk and bad-chunk objects the sweep of an S3 datastore listed.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.Objects) })},
	{name: "chunkgc_s3_object_bytes", field: "s3.object-bytes", help: last + "listed bytes of the chunk and bad-chunk objects of an S3 datastore.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.ObjectBytes) })},
	{name: "chunkgc_s3_removed_objects", field: "s3.removed", help: last + "objects the S3 sweep deleted, as the server confirmed.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.Removed) })},
	{name: "chunkgc_s3_removed_object_bytes", field: "s3.removed-bytes", help: last + "listed bytes of the objects the S3 sweep deleted.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.RemovedBytes) })},
	{name: "chunkgc_s3_removed_bad_objects", field: "s3.removed-bad", help: last + "bad-chunk objects among those deleted.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.RemovedBad) })},
	{name: "chunkgc_s3_pending_objects", field: "s3.pending", help: last + "objects kept because their local atime lies between min-atime and the oldest writer.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.Pending) })},
	{name: "chunkgc_s3_pending_object_bytes", field: "s3.pending-bytes", help: last + "listed bytes of the pending objects.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.PendingBytes) })},
	{name: "chunkgc_s3_kept_young_objects", field: "s3.kept-young", help: last + "objects unused by the local evidence but younger than the cutoff in the server's clock, kept.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.KeptYoung) })},
	{name: "chunkgc_s3_kept_young_object_bytes", field: "s3.kept-young-bytes", help: last + "listed bytes of the young objects kept.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.KeptYoungBytes) })},
	{name: "chunkgc_s3_busy_objects", field: "s3.busy", help: last + "objects skipped because another process held their chunk lock.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.Busy) })},
	{name: "chunkgc_s3_busy_object_bytes", field: "s3.busy-bytes", help: last + "listed bytes of the objects skipped because their chunk lock was held.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.BusyBytes) })},
	{name: "chunkgc_s3_pending_bad_objects", field: "s3.pending-bad", help: last + "bad-chunk objects among the pending ones (PBS's still-bad).",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.PendingBad) })},
	{name: "chunkgc_s3_kept_bad_objects", field: "s3.kept-bad", help: last + "bad-chunk objects kept in use (their local atime after the oldest writer).",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.KeptBad) })},
	{name: "chunkgc_s3_foreign_keys", field: "s3.foreign", help: last + "keys under the chunk prefix that name no chunk, never deleted.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.Foreign) })},
	{name: "chunkgc_s3_using_markers", field: "s3.using-markers", help: last + ".using markers the S3 sweep turned into empty markers.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.UsingMarkers) })},
	{name: "chunkgc_s3_local_removed", field: "s3.local-removed", help: last + "local cache files removed before their objects.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.LocalRemoved) })},
	{name: "chunkgc_s3_cache_removed", field: "s3.cache-removed", help: last + "local cache files and .using markers phase 3 removed.",
		get: s3(func(c *gc.S3SweepCounts) float64 { return float64(c.CacheRemoved) })},
	{name: "chunkgc_healed_chunks", field: "healed-chunks", help: last + "referenced chunks phase 1 found missing and moved back from the quarantine.",
		get: always(func(s *gc.Status) int64 { return s.HealedChunks })},
	{name: "chunkgc_quarantined_chunks", field: "quarantined-chunks", help: last + "chunk files the sweep moved to the quarantine (also counted as removed).",
		get: always(func(s *gc.Status) int64 { return s.QuarantinedChunks })},
	{name: "chunkgc_quarantined_bytes", field: "quarantined-bytes", help: last + "bytes of the chunk files the sweep moved to the quarantine.",
		get: always(func(s *gc.Status) uint64 { return s.QuarantinedBytes })},
	{name: "chunkgc_purged_chunks", field: "purged-chunks", help: last + "chunk files purged from the quarantine (older than gc-quarantine-hours).",
		get: always(func(s *gc.Status) int64 { return s.PurgedChunks })},
	{name: "chunkgc_purged_bytes", field: "purged-bytes", help: last + "bytes purged from the quarantine.",
		get: always(func(s *gc.Status) uint64 { return s.PurgedBytes })},
	{name: "chunkgc_touched_chunks", field: "touched-chunks", help: last + "chunks phase 1 of this run touched (a resumed run touches fewer).",
		get: always(func(s *gc.Status) int64 { return s.TouchedChunks })},
	{name: "chunkgc_swept_prefix_dirs", field: "swept-prefix-dirs", help: last + "prefix dirs phase 2 of this run swept (a resumed run sweeps fewer).",
		get: always(func(s *gc.Status) int64 { return s.SweptPrefixDirs })},
	{name: "chunkgc_resumed_start_timestamp_seconds", field: "resumed-start-time", help: last + "start of the interrupted run it resumed; absent for a fresh run.",
		get: func(s *gc.Status) (float64, bool) { return float64(s.ResumedStartTime), s.ResumedStartTime != 0 }},
	{name: "chunkgc_resume_skipped_index_files", field: "resume-skipped-index-files", help: last + "index files of groups marked before the interruption that the resumed run did not open again.",
		get: always(func(s *gc.Status) int64 { return s.ResumeSkippedIndexes })},
	{name: "chunkgc_resume_remarked_index_files", field: "resume-remarked-index-files", help: last + "index files of such groups marked again because they changed since.",
		get: always(func(s *gc.Status) int64 { return s.ResumeRemarkedIndexes })},
	{name: "chunkgc_cache_hits", field: "cache-hits", help: last + "digest lookups the digest cache answered.",
		get: always(func(s *gc.Status) int64 { return s.CacheHits })},
	{name: "chunkgc_cache_lookups", field: "cache-lookups", help: last + "digest lookups in the digest cache.",
		get: always(func(s *gc.Status) int64 { return s.CacheLookups })},
	{name: "chunkgc_start_timestamp_seconds", field: "start-time", help: last + "its start.",
		get: always(func(s *gc.Status) int64 { return s.StartTime })},
	{name: "chunkgc_min_atime_timestamp_seconds", field: "min-atime", help: last + "min-atime, the atime cutoff (unreferenced chunks older than it were garbage).",
		get: always(func(s *gc.Status) int64 { return s.MinAtime })},
	{name: "chunkgc_oldest_writer_timestamp_seconds", field: "oldest-writer", help: last + "start of the oldest live backup writer (or of the run).",
		get: always(func(s *gc.Status) int64 { return s.OldestWriter })},
	{name: "chunkgc_phase_duration_seconds", field: "duration-phase1-s", label: "phase", value: "mark", help: last + "duration of each phase (mark, sweep).",
		get: always(func(s *gc.Status) float64 { return s.DurationPhase1 })},
	{name: "chunkgc_phase_duration_seconds", field: "duration-phase2-s", label: "phase", value: "sweep", help: last + "duration of each phase (mark, sweep).",
		get: always(func(s *gc.Status) float64 { return s.DurationPhase2 })},
	{name: "chunkgc_clock_skew_seconds", field: "clock-skew-ms", help: last + "file server clock minus this host's, as the atime probe measured it; absent when the probe was tuned off.",
		get: func(s *gc.Status) (float64, bool) {
			if s.ClockSkewMs == nil {
				return 0, false
			}
			return float64(*s.ClockSkewMs) / 1000, true
		}},
	{name: "chunkgc_brake_exact", field: "brake.exact", help: last + "1 when the mass-deletion brake scanned every prefix dir (exact figures), 0 when it sampled.",
		get: brake(func(b *gc.BrakeReport) float64 { return bool01(b.Exact) })},
	{name: "chunkgc_brake_sampled_prefix_dirs", field: "brake.sampled-prefix-dirs", help: last + "prefix dirs the mass-deletion brake scanned.",
		get: brake(func(b *gc.BrakeReport) float64 { return float64(b.SampledPrefixDirs) })},
	{name: "chunkgc_brake_sampled_chunks", field: "brake.sampled-chunks", help: last + "chunk files the mass-deletion brake scanned.",
		get: brake(func(b *gc.BrakeReport) float64 { return float64(b.SampledChunks) })},
	{name: "chunkgc_brake_chunks_ratio", field: "brake.chunks-percent", help: last + "share of the chunk files the sweep would remove, as the mass-deletion brake estimated it.",
		get: brake(func(b *gc.BrakeReport) float64 { return b.ChunksPercent / 100 })},
	{name: "chunkgc_brake_chunks_bound_ratio", field: "brake.chunks-bound", help: last + "3-sigma error of chunkgc_brake_chunks_ratio.",
		get: brake(func(b *gc.BrakeReport) float64 { return b.ChunksBound / 100 })},
	{name: "chunkgc_brake_bytes_ratio", field: "brake.bytes-percent", help: last + "share of the chunk bytes the sweep would remove, as the mass-deletion brake estimated it.",
		get: brake(func(b *gc.BrakeReport) float64 { return b.BytesPercent / 100 })},
	{name: "chunkgc_brake_bytes_bound_ratio", field: "brake.bytes-bound", help: last + "3-sigma error of chunkgc_brake_bytes_ratio.",
		get: brake(func(b *gc.BrakeReport) float64 { return b.BytesBound / 100 })},
	{name: "chunkgc_brake_estimated_chunks", field: "brake.estimated-chunks", help: last + "chunk files on disk, as the mass-deletion brake estimated them.",
		get: brake(func(b *gc.BrakeReport) float64 { return float64(b.EstimatedChunks) })},
	{name: "chunkgc_brake_estimated_removals", field: "brake.estimated-removals", help: last + "chunk files the sweep would remove, as the mass-deletion brake estimated them.",
		get: brake(func(b *gc.BrakeReport) float64 { return float64(b.EstimatedRemovals) })},
	{name: "chunkgc_brake_estimated_removed_bytes", field: "brake.estimated-removed-gib", help: last + "bytes the sweep would remove, as the mass-deletion brake estimated them.",
		get: brake(func(b *gc.BrakeReport) float64 { return math.Round(b.EstimatedRemovedGiB * (1 << 30)) })},
	{name: "chunkgc_brake_threshold_ratio", field: "brake.threshold-percent", help: last + "the mass-deletion brake's threshold, tuning gc-brake-percent as a ratio.",
		get: brake(func(b *gc.BrakeReport) float64 { return float64(b.ThresholdPercent) / 100 })},
	{name: "chunkgc_brake_min_chunks", field: "brake.min-chunks", help: last + "removals below which the mass-deletion brake never trips.",
		get: brake(func(b *gc.BrakeReport) float64 { return float64(b.MinChunks) })},
	{name: "chunkgc_brake_tripped", field: "brake.tripped", help: last + "1 when the mass-deletion brake tripped (and --force made the run go on).",
		get: brake(func(b *gc.BrakeReport) float64 { return bool01(b.Tripped) })},
	{name: "chunkgc_brake_forced", field: "brake.forced", help: last + "1 when --force made the run go on although the mass-deletion brake tripped.",
		get: brake(func(b *gc.BrakeReport) float64 { return bool01(b.Forced) })},
}, s3RequestFigures())

// s3RequestFigures is chunkgc_s3_requests: one figure per method of
// [gc.S3Requests], labelled with the method.
func s3RequestFigures() []figure {
	methods := []struct {
		label, field string
		get          func(r *gc.S3Requests) int64
	}{
		{"GET", "get", func(r *gc.S3Requests) int64 { return r.Get }},
		{"PUT", "put", func(r *gc.S3Requests) int64 { return r.Put }},
		{"POST", "post", func(r *gc.S3Requests) int64 { return r.Post }},
		{"HEAD", "head", func(r *gc.S3Requests) int64 { return r.Head }},
		{"DELETE", "delete", func(r *gc.S3Requests) int64 { return r.Delete }},
		{"other", "other", func(r *gc.S3Requests) int64 { return r.Other }},
	}
	fs := make([]figure, len(methods))
	for i, m := range methods {
		fs[i] = figure{name: "chunkgc_s3_requests", field: "s3.requests." + m.field, label: "method", value: m.label,
			help: last + "HTTP requests it sent to the S3 server, by method, retries included.",
			get:  s3(func(c *gc.S3SweepCounts) float64 { return float64(m.get(&c.Requests)) })}
	}
	return fs
}

// Names of the families that are not figures.
const (
	nameInfo         = "chunkgc_status_info"
	nameLastSuccess  = "chunkgc_last_success_timestamp_seconds"
	nameResult       = "chunkgc_last_run_result"
	nameRunTime      = "chunkgc_last_run_timestamp_seconds"
	nameRunDuration  = "chunkgc_last_run_duration_seconds"
	nameProbe        = "chunkgc_last_run_atime_probe_result"
	nameRunSkew      = "chunkgc_last_run_clock_skew_seconds"
	nameLastFailure  = "chunkgc_last_failure_timestamp_seconds"
	nameRuns         = "chunkgc_runs_total"
	labelStore       = "store"
	labelResult      = "result"
	labelUPID        = "upid"
	labelJournalRun  = "journal_run"
	labelQRun        = "quarantine_run"
	labelResumedFrom = "resumed_from"
	labelResumedPh   = "resumed_phase"
	typeGauge        = "gauge"
	typeCounter      = "counter"
	helpLastFailure  = "End of the last GC run that failed (error, brake or canceled; busy is not a failure). Absent when no failure is known."
	helpRuns         = "GC runs by result, counted across runs in this textfile (it resets when the file is lost)."
	helpLastRunSkew  = "File server clock minus this host's as the last GC run's atime probe measured it, also when it was too large. Absent when not measured."
	helpProbeResult  = "1 for the atime probe's verdict in the last GC run: passed, disabled (gc-atime-safety-check=0), not_honoured, clock_skew (above gc-max-clock-skew), chunk_replaced, or unknown (the run ended without a verdict, e.g. busy)."
	helpResult       = "1 for how the last GC run ended, 0 for the others: ok, error, busy (exit 75), brake (exit 65), canceled (exit 130/143)."
	helpRunTime      = "End of the last GC run, whatever its result."
	helpRunDuration  = "Wall-clock duration of the last GC run, from the start of the gc command to its end."
	helpLastSuccess  = "End of the last successful GC run (the mtime of .gc-status)."
	helpInfo         = "The last successful GC run's task id (upid) and deletion journal run id (journal_run, empty when it removed nothing) quarantine dir (quarantine_run, empty when it quarantined nothing) and, for a resumed run, the interrupted run's upid and phase (resumed_from, resumed_phase); always 1."
	fieldUPID        = "upid"
	fieldJournalRun  = "journal-run"
	fieldQRun        = "quarantine-run"
	fieldResumedFrom = "resumed-from"
	fieldResumedPh   = "resumed-phase"
	fieldDryRunUnset = "dry-run"
)

// ExemptFields are the .gc-status fields no metric shows: dry-run, because
// a dry run writes neither .gc-status nor metrics.
var ExemptFields = []string{fieldDryRunUnset}

// Defs lists every metric family, sorted by name.
func Defs() []Def {
	var defs []Def
	for _, f := range figures {
		if i := slices.IndexFunc(defs, func(d Def) bool { return d.Name == f.name }); i >= 0 {
			defs[i].Fields = append(defs[i].Fields, f.field)
			continue
		}
		d := Def{Name: f.name, Type: typeGauge, Help: f.help, Fields: []string{f.field}}
		if f.label != "" {
			d.Labels = []string{f.label}
		}
		defs = append(defs, d)
	}
	defs = append(defs,
		Def{Name: nameInfo, Type: typeGauge, Labels: []string{labelUPID, labelJournalRun, labelQRun, labelResumedFrom, labelResumedPh}, Help: helpInfo,
			Fields: []string{fieldUPID, fieldJournalRun, fieldQRun, fieldResumedFrom, fieldResumedPh}},
		Def{Name: nameLastSuccess, Type: typeGauge, Help: helpLastSuccess},
		Def{Name: nameResult, Type: typeGauge, Labels: []string{labelResult}, Help: helpResult, Run: true},
		Def{Name: nameRunTime, Type: typeGauge, Help: helpRunTime, Run: true},
		Def{Name: nameRunDuration, Type: typeGauge, Help: helpRunDuration, Run: true},
		Def{Name: nameProbe, Type: typeGauge, Labels: []string{labelResult}, Help: helpProbeResult, Run: true},
		Def{Name: nameRunSkew, Type: typeGauge, Help: helpLastRunSkew, Run: true},
		Def{Name: nameLastFailure, Type: typeGauge, Help: helpLastFailure, Run: true},
		Def{Name: nameRuns, Type: typeCounter, Labels: []string{labelResult}, Help: helpRuns, Run: true},
	)
	slices.SortFunc(defs, func(a, b Def) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return defs
}

// Build registers in a new registry the status group of in.Status (none
// when nil) and the run group of in.Run (none when nil).
func Build(in Input) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, append([]string{labelStore}, labels...))
		reg.MustRegister(g)
		return g
	}
	if s := in.Status; s != nil {
		vecs := map[string]*prometheus.GaugeVec{}
		for _, f := range figures {
			v, ok := f.get(s)
			if !ok {
				continue
			}
			g := vecs[f.name]
			if g == nil {
				var labels []string
				if f.label != "" {
					labels = []string{f.label}
				}
				g = gauge(f.name, f.help, labels...)
				vecs[f.name] = g
			}
			lv := []string{in.Store}
			if f.label != "" {
				lv = append(lv, f.value)
			}
			g.WithLabelValues(lv...).Set(v)
		}
		gauge(nameInfo, helpInfo, labelUPID, labelJournalRun, labelQRun, labelResumedFrom, labelResumedPh).
			WithLabelValues(in.Store, s.UPID, s.JournalRun, s.QuarantineRun, s.ResumedFrom, s.ResumedPhase).Set(1)
		if !in.StatusTime.IsZero() {
			gauge(nameLastSuccess, helpLastSuccess).WithLabelValues(in.Store).Set(unixSeconds(in.StatusTime))
		}
	}
	if r := in.Run; r != nil {
		res := gauge(nameResult, helpResult, labelResult)
		for _, x := range Results {
			res.WithLabelValues(in.Store, string(x)).Set(bool01(x == r.Result))
		}
		gauge(nameRunTime, helpRunTime).WithLabelValues(in.Store).Set(unixSeconds(r.End))
		gauge(nameRunDuration, helpRunDuration).WithLabelValues(in.Store).Set(r.End.Sub(r.Start).Seconds())
		p, skew, measured := r.probe()
		probe := gauge(nameProbe, helpProbeResult, labelResult)
		for _, x := range Probes {
			probe.WithLabelValues(in.Store, string(x)).Set(bool01(x == p))
		}
		if measured {
			gauge(nameRunSkew, helpLastRunSkew).WithLabelValues(in.Store).Set(skew.Seconds())
		}
		failed, known := in.Previous.gauge(nameLastFailure, in.Store, "")
		if r.Result.failure() {
			failed, known = unixSeconds(r.End), true
		}
		if known {
			gauge(nameLastFailure, helpLastFailure).WithLabelValues(in.Store).Set(failed)
		}
		runs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: nameRuns, Help: helpRuns}, []string{labelStore, labelResult})
		reg.MustRegister(runs)
		for _, x := range Results {
			n, _ := in.Previous.gauge(nameRuns, in.Store, string(x))
			if x == r.Result {
				n++
			}
			runs.WithLabelValues(in.Store, string(x)).Add(n)
		}
	}
	return reg
}

// unixSeconds is t as fractional Unix seconds, to the millisecond.
func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }
