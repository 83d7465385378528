package gc

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"chunkgc/chunkstore"
	"chunkgc/internal/atomicfile"
	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

// StatusFile is the name of the GC result file in the store's base directory.
const StatusFile = ".gc-status"

// PBSFigures are the fields of PBS's GarbageCollectionStatus but its
// cache-stats, with PBS's names, meaning and order: they head both
// [Status] and [PBSStatus].
type PBSFigures struct {
	UPID           string `json:"upid"`
	IndexFileCount int64  `json:"index-file-count"`
	IndexDataBytes uint64 `json:"index-data-bytes"`
	DiskBytes      uint64 `json:"disk-bytes"`
	DiskChunks     int64  `json:"disk-chunks"`
	RemovedBytes   uint64 `json:"removed-bytes"`
	RemovedChunks  int64  `json:"removed-chunks"`
	PendingBytes   uint64 `json:"pending-bytes"`
	PendingChunks  int64  `json:"pending-chunks"`
	RemovedBad     int64  `json:"removed-bad"`
	StillBad       int64  `json:"still-bad"`
}

// Status is the result of a GC run, as written to .gc-status. Its
// [PBSFigures] carry PBS's names and meaning; the rest are chunkgc's.
type Status struct {
	PBSFigures

	MissingChunks     int64   `json:"missing-chunks"`
	StrangeIndexFiles int64   `json:"strange-index-files"`
	NewIndexFiles     int64   `json:"new-index-files"`
	NotChunks         int64   `json:"not-chunk-files"`
	KeptUntouched     int64   `json:"kept-untouched-chunks"`
	KeptLinked        int64   `json:"kept-linked-chunks"`
	CacheHits         int64   `json:"cache-hits"`
	CacheLookups      int64   `json:"cache-lookups"`
	StartTime         int64   `json:"start-time"`
	MinAtime          int64   `json:"min-atime"`
	OldestWriter      int64   `json:"oldest-writer"`
	DurationPhase1    float64 `json:"duration-phase1-s"`
	DurationPhase2    float64 `json:"duration-phase2-s"`
	DryRun            bool    `json:"dry-run,omitempty"`
	// ClockSkewMs is the file server's clock minus this host's, in
	// milliseconds, as the atime probe measured it (negative: the server
	// is behind, and MinAtime and OldestWriter were lowered by the lag,
	// rounded up to seconds); nil when the probe was tuned off.
	ClockSkewMs *int64 `json:"clock-skew-ms,omitempty"`
	// Brake is what the mass-deletion brake found before the sweep's
	// first removal; nil when gc-brake-percent=0.
	Brake *BrakeReport `json:"brake,omitempty"`
	// JournalRun is the run id of this run's deletion journal in
	// .chunkgc/journal; "" when it removed nothing or wrote no journal.
	JournalRun string `json:"journal-run,omitempty"`
	// HealedChunks counts referenced chunks phase 1 found missing from
	// .chunks and moved back from the quarantine (doc "Quarantine").
	HealedChunks int64 `json:"healed-chunks"`
	// QuarantinedChunks and QuarantinedBytes are what this run's sweep
	// moved to the quarantine instead of unlinking (chunks and bad
	// copies; they are also in the removed figures); QuarantineRun names
	// its dir in .chunkgc/quarantine. PurgedChunks and PurgedBytes are
	// what it removed from the quarantine, older than
	// gc-quarantine-hours.
	QuarantinedChunks int64  `json:"quarantined-chunks,omitempty"`
	QuarantinedBytes  uint64 `json:"quarantined-bytes,omitempty"`
	QuarantineRun     string `json:"quarantine-run,omitempty"`
	PurgedChunks      int64  `json:"purged-chunks,omitempty"`
	PurgedBytes       uint64 `json:"purged-bytes,omitempty"`
	// TouchedChunks and SweptPrefixDirs are the chunks this run touched in
	// phase 1 and the prefix dirs it swept in phase 2: a resumed run does
	// less of both than a fresh one.
	TouchedChunks   int64 `json:"touched-chunks"`
	SweptPrefixDirs int64 `json:"swept-prefix-dirs"`
	// ResumedFrom is the upid of the interrupted run this one resumed
	// (doc "Resumable runs"), ResumedPhase the phase it resumed in and
	// ResumedStartTime that run's start; empty for a fresh run.
	ResumedFrom      string `json:"resumed-from,omitempty"`
	ResumedPhase     string `json:"resumed-phase,omitempty"`
	ResumedStartTime int64  `json:"resumed-start-time,omitempty"`
	// ResumeSkippedIndexes are index files of groups the resumed run had
	// marked that were not opened again; ResumeRemarkedIndexes those
	// marked again because they or their snapshot changed since.
	ResumeSkippedIndexes  int64 `json:"resume-skipped-index-files,omitempty"`
	ResumeRemarkedIndexes int64 `json:"resume-remarked-index-files,omitempty"`
	// S3Expected counts the referenced chunks of an S3 datastore phase 1
	// found without a local file, marked <hex>.using; S3 holds its
	// sweep's figures beyond PBS's (nil for a filesystem datastore).
	S3Expected int64          `json:"s3-expected-chunks,omitempty"`
	S3         *S3SweepCounts `json:"s3,omitempty"`
}

// PBSStatus is .gc-status exactly as PBS 4.2 writes it: pbs-api-types'
// GarbageCollectionStatus, serde_json::to_string of it (kebab-case, in
// field order, one line, no newline), cache-stats included as every PBS GC
// fills it. An S3 datastore's .gc-status is this and nothing else
// (testdata/pbs-gc-status-s3.json); chunkgc's own figures are in the JSON
// output and the metrics.
type PBSStatus struct {
	PBSFigures
	CacheStats *PBSCacheStats `json:"cache-stats,omitempty"`
}

// PBSCacheStats is PBS's GarbageCollectionCacheStats: the digest cache's
// hits and misses in phase 1.
type PBSCacheStats struct {
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"`
}

// PBS returns s's PBS figures as PBS writes them.
func (s *Status) PBS() PBSStatus {
	return PBSStatus{PBSFigures: s.PBSFigures,
		CacheStats: &PBSCacheStats{Hits: s.CacheHits, Misses: s.CacheLookups - s.CacheHits}}
}

// writeStatus replaces <base>/.gc-status atomically: tmp file, fsync, chown,
// rename, fsync of the directory, all relative to the store's base fd, so a
// symlink planted as .gc-status is replaced, never followed. Every syscall
// of it but the close goes through the store's seam. An S3 datastore's is
// PBS's ([PBSStatus]), a filesystem datastore's all of st, one line.
func writeStatus(store *chunkstore.Store, st *Status, o fsys.Owner) error {
	var b []byte
	var err error
	if st.S3 != nil {
		b, err = json.Marshal(st.PBS())
	} else {
		b, err = json.Marshal(st)
		b = append(b, '\n')
	}
	if err != nil {
		return fmt.Errorf("encode gc status: %w", err)
	}
	if err := atomicfile.WriteBytesAtSys(store.Syscalls(), store.BaseFD(), store.Base(), StatusFile, b, 0o644, o); err != nil {
		return fmt.Errorf("gc status: %w", err)
	}
	return nil
}

// maxStatusSize bounds what ReadStatus reads: a status line is a few
// hundred bytes.
const maxStatusSize = 1 << 20

// ReadStatus reads <base>/.gc-status, chunkgc's or PBS's (whose
// cache-stats give the cache figures). A store that was never collected gives
// an error wrapping fs.ErrNotExist. The file is opened without following a
// symlink and with O_NONBLOCK, and must be a regular file (a FIFO planted
// there is an error, never a hang).
func ReadStatus(base string) (*Status, error) {
	b, err := nofollow.ReadFileIn(base, StatusFile, maxStatusSize)
	if err != nil {
		return nil, fmt.Errorf("read gc status: %w", err)
	}
	var st Status
	var pbs struct {
		CacheStats *PBSCacheStats `json:"cache-stats"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse gc status %s: %w", filepath.Join(base, StatusFile), err)
	}
	if err := json.Unmarshal(b, &pbs); err != nil {
		return nil, fmt.Errorf("parse gc status %s: %w", filepath.Join(base, StatusFile), err)
	}
	if c := pbs.CacheStats; c != nil && st.CacheLookups == 0 {
		// PBS's (and an S3 datastore's) .gc-status.
		st.CacheHits, st.CacheLookups = c.Hits, c.Hits+c.Misses
	}
	return &st, nil
}

// HumanBytes formats n with binary units to at most three decimals, as PBS
// prints byte figures: "0 B", "159 B", "1.5 KiB", "4.008 MiB".
func HumanBytes(n uint64) string {
	if n < 1024 {
		return strconv.FormatUint(n, 10) + " B"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n)
	i := -1
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strconv.FormatFloat(v, 'f', 3, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + " " + units[i]
}

// DedupFactor is index-data-bytes / disk-bytes, 1.00 when disk-bytes is 0.
func (s *Status) DedupFactor() float64 {
	if s.DiskBytes == 0 {
		return 1
	}
	return float64(s.IndexDataBytes) / float64(s.DiskBytes)
}

// CacheHitRatio is the share of digest lookups the cache answered.
func (s *Status) CacheHitRatio() float64 {
	if s.CacheLookups == 0 {
		return 0
	}
	return float64(s.CacheHits) / float64(s.CacheLookups)
}

// ReportLines are the end-of-run report lines, in PBS's wording.
func (s *Status) ReportLines() []string {
	var l []string
	add := func(format string, a ...any) { l = append(l, fmt.Sprintf(format, a...)) }
	verb := "Removed"
	if s.DryRun {
		verb = "Would remove"
	}
	add("%s garbage: %s", verb, HumanBytes(s.RemovedBytes))
	add("%s chunks: %d", verb, s.RemovedChunks)
	if s.PendingBytes > 0 {
		add("Pending removals: %s (in %d chunks)", HumanBytes(s.PendingBytes), s.PendingChunks)
	}
	if s.RemovedBad > 0 {
		add("%s bad chunks: %d", verb, s.RemovedBad)
	}
	if s.StillBad > 0 {
		add("Leftover bad chunks: %d", s.StillBad)
	}
	if s.MissingChunks > 0 {
		add("Missing chunks: %d", s.MissingChunks)
	}
	if s.HealedChunks > 0 {
		add("Healed chunks (moved back from the quarantine): %d", s.HealedChunks)
	}
	if s.QuarantinedChunks > 0 {
		add("Quarantined: %s (in %d chunks)", HumanBytes(s.QuarantinedBytes), s.QuarantinedChunks)
	}
	if s.PurgedChunks > 0 {
		add("Purged from the quarantine: %s (in %d chunks)", HumanBytes(s.PurgedBytes), s.PurgedChunks)
	}
	if s.StrangeIndexFiles > 0 {
		add("Index files outside the expected scheme: %d", s.StrangeIndexFiles)
	}
	add("Original data usage: %s", HumanBytes(s.IndexDataBytes))
	if s.IndexDataBytes > 0 {
		add("On-Disk usage: %s (%.2f%%)", HumanBytes(s.DiskBytes), 100*float64(s.DiskBytes)/float64(s.IndexDataBytes))
	} else {
		add("On-Disk usage: %s", HumanBytes(s.DiskBytes))
	}
	add("On-Disk chunks: %d", s.DiskChunks)
	add("Deduplication factor: %.2f", s.DedupFactor())
	if s.DiskChunks > 0 {
		add("Average chunk size: %s", HumanBytes(s.DiskBytes/uint64(s.DiskChunks)))
	}
	if s.ResumedFrom != "" {
		add("Resumed from %s (interrupted in phase %s)", s.ResumedFrom, s.ResumedPhase)
	}
	add("Digest cache hit ratio: %.2f%% (%d of %d lookups)", 100*s.CacheHitRatio(), s.CacheHits, s.CacheLookups)
	switch {
	case s.ClockSkewMs == nil:
		add("File server clock skew: not measured (atime safety check off)")
	case lagSeconds(time.Duration(*s.ClockSkewMs)*time.Millisecond) > 0:
		add("File server clock skew: %.3f s (min-atime lowered by %d s)", float64(*s.ClockSkewMs)/1000,
			lagSeconds(time.Duration(*s.ClockSkewMs)*time.Millisecond))
	default:
		add("File server clock skew: %.3f s", float64(*s.ClockSkewMs)/1000)
	}
	return l
}

// WriteReport prints the report lines to w.
func (s *Status) WriteReport(w io.Writer) error {
	for _, line := range s.ReportLines() {
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}
