package tuning

import (
	"strconv"
	"time"
)

// SyncLevel says how durably a chunk store writes new chunks (tuning key
// sync-level, as in PBS).
type SyncLevel uint8

// The sync levels, from cheapest to safest.
const (
	// SyncNone leaves flushing to the kernel: a crash can lose or truncate
	// chunks written shortly before it.
	SyncNone SyncLevel = iota
	// SyncFilesystem syncs the whole filesystem (syncfs) at the end of a
	// write session instead of every file. The PBS default.
	SyncFilesystem
	// SyncFile fsyncs every chunk file, and its directory, before renaming
	// it into place.
	SyncFile
)

var syncLevelNames = []string{"none", "filesystem", "file"}

// String returns the property value: "none", "filesystem" or "file".
func (l SyncLevel) String() string {
	if int(l) < len(syncLevelNames) {
		return syncLevelNames[l]
	}
	return "SyncLevel(" + strconv.Itoa(int(l)) + ")"
}

// ChunkOrder is the tuning key chunk-order of PBS's datastore.cfg. PBS
// reads it in verify and tape backup, not in GC; chunkgc parses and checks it
// so that a PBS config with it set is accepted, and nothing reads it: phase 1
// touches the chunks of an index in index order, deduplicated by the touched
// cache (gc/doc.go), whatever its value.
type ChunkOrder uint8

// The chunk orders.
const (
	// OrderNone is chunk-order=none.
	OrderNone ChunkOrder = iota
	// OrderInode is chunk-order=inode, PBS's default (sort by inode before
	// reading, which helps its verify on spinning disks).
	OrderInode
)

var chunkOrderNames = []string{"none", "inode"}

// String returns the property value: "none" or "inode".
func (o ChunkOrder) String() string {
	if int(o) < len(chunkOrderNames) {
		return chunkOrderNames[o]
	}
	return "ChunkOrder(" + strconv.Itoa(int(o)) + ")"
}

// Tuning holds every safety margin and knob of a run. Its zero value is not
// useful: start from [Defaults] and apply [Props] over it. Each field names
// its property key; the ranges are those [Parse] enforces.
type Tuning struct {
	// AtimeSafetyCheck (gc-atime-safety-check, default true) runs the atime
	// probe before phase 1 and on datastore create. Turning it off is
	// logged: on a filesystem that ignores atime updates GC would delete
	// chunks that are still referenced.
	AtimeSafetyCheck bool
	// AtimeCutoff (gc-atime-cutoff, in minutes, default 1445 = 24 h 5 min,
	// range 1..2880) is how long before the start of a GC a chunk must have
	// last been touched to count as garbage. It is always a whole number of
	// minutes.
	AtimeCutoff time.Duration
	// CacheCapacity (gc-cache-capacity, entries, default 1048576, range
	// 0..8388608) bounds the cache of digests already touched in phase 1;
	// 0 disables the cache.
	CacheCapacity int
	// SyncLevel (sync-level, default filesystem) says how durably new
	// chunks are written.
	SyncLevel SyncLevel
	// ChunkOrder (chunk-order, default inode) is the order in which the
	// chunks of one index are touched.
	ChunkOrder ChunkOrder
	// Concurrency (gc-concurrency, workers, default 0, range 0..256) is the
	// number of workers for mark and sweep; 0 sizes the pools while they
	// run (package gc, "Concurrency").
	// A chunkgc extension, not a PBS key.
	Concurrency int
	// MaxClockSkew (gc-max-clock-skew, in seconds, default 30, range
	// 0..3600) bounds how far the file server's clock, as the atime probe
	// measures it, may be from this host's: beyond it GC and create refuse
	// to run; within it a server that is behind lowers min_atime by the
	// measured lag. It is always a whole number of seconds. A chunkgc
	// extension, not a PBS key.
	MaxClockSkew time.Duration
	// BrakePercent (gc-brake-percent, default 50, range 0..100) is the
	// mass-deletion brake's threshold: a run that would remove more than
	// this share of the chunk files on disk, or of their bytes, removes
	// nothing and fails (package gc, "Mass-deletion brake"); 0 turns the
	// brake off. A chunkgc extension, not a PBS key.
	BrakePercent int
	// BrakeMinChunks (gc-brake-min-chunks, default 1000, range
	// 0..1000000000) is how many removals must be at stake before the
	// brake trips. A chunkgc extension, not a PBS key.
	BrakeMinChunks int64
	// JournalKeep (gc-journal-keep, default 20, range 0..10000) is how many
	// runs' deletion journals a store keeps (package journal); 0 writes
	// none. A chunkgc extension, not a PBS key.
	JournalKeep int
	// QuarantineHours (gc-quarantine-hours, default 0, range 0..8760) is
	// how long garbage stays in the store's quarantine before a later run
	// purges it (package gc, "Quarantine"); 0 unlinks garbage at once, as
	// PBS does. A chunkgc extension, not a PBS key.
	QuarantineHours int
	// ResumeMaxAge (gc-resume-max-age, default 168 h, range 0..720 hours)
	// is how old a GC checkpoint may be, counted from the interrupted
	// run's start, for the next run to resume it (package gc, "Resumable
	// runs"); an older one is ignored with a warning, and 0 never
	// resumes. A chunkgc extension, not a PBS key.
	ResumeMaxAge time.Duration
	// S3ListRanges (gc-s3-list-ranges, default 16, range 1..16) is how many
	// key ranges phase 2 of an S3 datastore lists in parallel, split by the
	// first hex digit of the prefix dir (package gc, "S3 datastores"); 1 is
	// PBS's single listing. Each range costs at most one LIST request more
	// than its keys need. A chunkgc extension, not a PBS key.
	S3ListRanges int
}

// Defaults returns the tuning used when no property overrides a key.
func Defaults() Tuning {
	return Tuning{
		AtimeSafetyCheck: true,
		AtimeCutoff:      1445 * time.Minute,
		CacheCapacity:    1 << 20,
		SyncLevel:        SyncFilesystem,
		ChunkOrder:       OrderInode,
		Concurrency:      0,
		MaxClockSkew:     30 * time.Second,
		BrakePercent:     50,
		BrakeMinChunks:   1000,
		JournalKeep:      20,
		QuarantineHours:  0,
		ResumeMaxAge:     168 * time.Hour,
		S3ListRanges:     16,
	}
}

// The property keys.
const (
	KeyAtimeSafetyCheck = "gc-atime-safety-check"
	KeyAtimeCutoff      = "gc-atime-cutoff"
	KeyCacheCapacity    = "gc-cache-capacity"
	KeySyncLevel        = "sync-level"
	KeyChunkOrder       = "chunk-order"
	KeyConcurrency      = "gc-concurrency"
	KeyMaxClockSkew     = "gc-max-clock-skew"
	KeyBrakePercent     = "gc-brake-percent"
	KeyBrakeMinChunks   = "gc-brake-min-chunks"
	KeyJournalKeep      = "gc-journal-keep"
	KeyQuarantineHours  = "gc-quarantine-hours"
	KeyResumeMaxAge     = "gc-resume-max-age"
	KeyS3ListRanges     = "gc-s3-list-ranges"
)

type kind uint8

const (
	kindBool kind = iota + 1
	kindInt
	kindEnum
)

// spec describes one property key: its type, range and where it goes in a
// Tuning.
type spec struct {
	key      string
	kind     kind
	min, max int64    // kindInt
	unit     string   // kindInt, for messages
	values   []string // kindEnum: the value names, index = the constant
	set      func(t *Tuning, v int64)
}

// specs lists the keys in documentation order. It is never modified.
var specs = []spec{
	{key: KeyAtimeSafetyCheck, kind: kindBool,
		set: func(t *Tuning, v int64) { t.AtimeSafetyCheck = v != 0 }},
	{key: KeyAtimeCutoff, kind: kindInt, min: 1, max: 2880, unit: "minutes",
		set: func(t *Tuning, v int64) { t.AtimeCutoff = time.Duration(v) * time.Minute }},
	{key: KeyCacheCapacity, kind: kindInt, min: 0, max: 8 << 20, unit: "entries",
		set: func(t *Tuning, v int64) { t.CacheCapacity = int(v) }},
	{key: KeySyncLevel, kind: kindEnum, values: syncLevelNames,
		set: func(t *Tuning, v int64) { t.SyncLevel = SyncLevel(v) }},
	{key: KeyChunkOrder, kind: kindEnum, values: chunkOrderNames,
		set: func(t *Tuning, v int64) { t.ChunkOrder = ChunkOrder(v) }},
	{key: KeyConcurrency, kind: kindInt, min: 0, max: 256, unit: "workers, 0 = automatic",
		set: func(t *Tuning, v int64) { t.Concurrency = int(v) }},
	{key: KeyMaxClockSkew, kind: kindInt, min: 0, max: 3600, unit: "seconds",
		set: func(t *Tuning, v int64) { t.MaxClockSkew = time.Duration(v) * time.Second }},
	{key: KeyBrakePercent, kind: kindInt, min: 0, max: 100, unit: "percent, 0 = off",
		set: func(t *Tuning, v int64) { t.BrakePercent = int(v) }},
	{key: KeyBrakeMinChunks, kind: kindInt, min: 0, max: 1_000_000_000, unit: "chunks",
		set: func(t *Tuning, v int64) { t.BrakeMinChunks = v }},
	{key: KeyJournalKeep, kind: kindInt, min: 0, max: 10000, unit: "runs, 0 = no journal",
		set: func(t *Tuning, v int64) { t.JournalKeep = int(v) }},
	{key: KeyQuarantineHours, kind: kindInt, min: 0, max: 8760, unit: "hours, 0 = off",
		set: func(t *Tuning, v int64) { t.QuarantineHours = int(v) }},
	{key: KeyResumeMaxAge, kind: kindInt, min: 0, max: 720, unit: "hours, 0 = never resume",
		set: func(t *Tuning, v int64) { t.ResumeMaxAge = time.Duration(v) * time.Hour }},
	{key: KeyS3ListRanges, kind: kindInt, min: 1, max: 16, unit: "key ranges, 1 = one listing as PBS",
		set: func(t *Tuning, v int64) { t.S3ListRanges = int(v) }},
}

func lookup(key string) *spec {
	for i := range specs {
		if specs[i].key == key {
			return &specs[i]
		}
	}
	return nil
}

// Keys returns the known property keys, in documentation order.
func Keys() []string {
	keys := make([]string, len(specs))
	for i := range specs {
		keys[i] = specs[i].key
	}
	return keys
}
