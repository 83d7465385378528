package gc

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/datastore"
	"chunkgc/internal/atomicfile"
	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

// CheckpointName is the checkpoint's file name in [StateDir].
const CheckpointName = "checkpoint"

// CheckpointPath returns the checkpoint file of the store at base.
func CheckpointPath(base string) string { return filepath.Join(base, StateDir, CheckpointName) }

// checkpointVersion is the format version written; a checkpoint of any
// other version is ignored (a warning and a fresh run).
const checkpointVersion = 1

// checkpointInterval is how often a run writes its checkpoint at most
// while a phase runs (doc "Resumable runs"); [Options.CheckpointInterval]
// replaces it.
const checkpointInterval = 5 * time.Second

// maxCheckpointSize bounds what a checkpoint read takes and what a write
// puts out: the untouched set at its bound (262,144 digests) is 17 MiB of
// JSON, a million fully marked groups 11 MiB.
const maxCheckpointSize = 64 << 20

// The phases a checkpoint names.
const (
	phaseMark  = "mark"
	phaseSweep = "sweep"
)

// checkpoint is the versioned JSON of <base>/.chunkgc/checkpoint. Every
// count is a low-water mark: it covers exactly the work the progress
// fields say is complete, whatever the parallel workers had in flight.
type checkpoint struct {
	Version int    `json:"version"`
	Base    string `json:"base"`
	UPID    string `json:"upid"`
	// StartTime, MinAtime and OldestWriter are the interrupted run's (the
	// first of a chain of resumed runs), after the clock skew lowered them.
	StartTime    int64  `json:"start-time"`
	MinAtime     int64  `json:"min-atime"`
	OldestWriter int64  `json:"oldest-writer"`
	CutoffS      int64  `json:"cutoff-s"`
	ClockSkewMs  *int64 `json:"clock-skew-ms,omitempty"`
	// Written is when this checkpoint was written (this host's clock).
	Written int64           `json:"written"`
	Phase   string          `json:"phase"`
	Mark    markCheckpoint  `json:"mark"`
	Sweep   sweepCheckpoint `json:"sweep"`
	// Untouched are the digests (hex) phase 1 could not touch (ENOENT):
	// phase 2 keeps them (doc "No escape and doubt", rule 3).
	Untouched []string `json:"untouched"`
}

// markCheckpoint is phase 1's progress: Groups holds a hash of every group
// whose indexes were all touched (see groupHash), base64 of sorted
// big-endian uint64s; the counters are those groups' sums.
type markCheckpoint struct {
	// NextGroup is the first group of the walk order not fully marked,
	// for the log ("" once every group was).
	NextGroup    string `json:"next-group,omitempty"`
	Groups       string `json:"groups"`
	IndexFiles   int64  `json:"index-files"`
	IndexBytes   uint64 `json:"index-bytes"`
	NewIndexes   int64  `json:"new-index-files"`
	Missing      int64  `json:"missing-chunks"`
	CacheHits    int64  `json:"cache-hits"`
	CacheLookups int64  `json:"cache-lookups"`
}

// sweepCheckpoint is phase 2's progress: every prefix dir below Next was
// swept completely; the counters are those dirs' sums.
type sweepCheckpoint struct {
	Next int `json:"next"`
	// BrakeDone: the mass-deletion brake decided (passed, was forced or was
	// off) before the first removal; a resumed sweep does not brake again.
	BrakeDone     bool         `json:"brake-done"`
	Brake         *BrakeReport `json:"brake,omitempty"`
	DiskBytes     uint64       `json:"disk-bytes"`
	RemovedBytes  uint64       `json:"removed-bytes"`
	PendingBytes  uint64       `json:"pending-bytes"`
	DiskChunks    int64        `json:"disk-chunks"`
	RemovedChunks int64        `json:"removed-chunks"`
	PendingChunks int64        `json:"pending-chunks"`
	RemovedBad    int64        `json:"removed-bad"`
	StillBad      int64        `json:"still-bad"`
	NotChunks     int64        `json:"not-chunk-files"`
	KeptUntouched int64        `json:"kept-untouched-chunks"`
	KeptLinked    int64        `json:"kept-linked-chunks"`
}

func (c *sweepCheckpoint) setCounts(s *sweepCounts) {
	c.DiskBytes, c.RemovedBytes, c.PendingBytes = s.diskBytes, s.removedBytes, s.pendingBytes
	c.DiskChunks, c.RemovedChunks, c.PendingChunks = s.diskChunks, s.removedChunks, s.pendingChunks
	c.RemovedBad, c.StillBad, c.NotChunks = s.removedBad, s.stillBad, s.notChunks
	c.KeptUntouched, c.KeptLinked = s.keptUntouched, s.keptLinked
}

func (c *sweepCheckpoint) counts() sweepCounts {
	return sweepCounts{
		diskBytes: c.DiskBytes, removedBytes: c.RemovedBytes, pendingBytes: c.PendingBytes,
		diskChunks: c.DiskChunks, removedChunks: c.RemovedChunks, pendingChunks: c.PendingChunks,
		removedBad: c.RemovedBad, stillBad: c.StillBad, notChunks: c.NotChunks,
		keptUntouched: c.KeptUntouched, keptLinked: c.KeptLinked,
	}
}

// errBadCheckpoint is wrapped by every reason a checkpoint is not resumed.
var errBadCheckpoint = errors.New("checkpoint not usable")

func badCheckpoint(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errBadCheckpoint, fmt.Sprintf(format, a...))
}

// decodeCheckpoint parses and validates a checkpoint of the store at base.
// Anything unexpected is an error wrapping errBadCheckpoint: unknown
// fields, a version other than checkpointVersion, another store's base,
// thresholds that do not fit together, progress out of range, a malformed
// digest or group set.
func decodeCheckpoint(b []byte, base string) (*checkpoint, error) {
	if len(b) > maxCheckpointSize {
		return nil, badCheckpoint("larger than %d bytes", maxCheckpointSize)
	}
	var probe struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, badCheckpoint("not JSON: %v", err)
	}
	if probe.Version != checkpointVersion {
		return nil, badCheckpoint("version %d, this chunkgc reads version %d", probe.Version, checkpointVersion)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var cp checkpoint
	if err := dec.Decode(&cp); err != nil {
		return nil, badCheckpoint("%v", err)
	}
	if dec.More() {
		return nil, badCheckpoint("trailing data after the JSON object")
	}
	switch {
	case cp.Base != base:
		return nil, badCheckpoint("written for the store at %q, not %q", cp.Base, base)
	case cp.UPID == "":
		return nil, badCheckpoint("no upid")
	case cp.StartTime <= 0 || cp.Written < cp.StartTime:
		return nil, badCheckpoint("start time %d, written %d", cp.StartTime, cp.Written)
	case cp.CutoffS <= 0:
		return nil, badCheckpoint("cutoff %d s", cp.CutoffS)
	case cp.MinAtime >= cp.StartTime || cp.MinAtime > cp.OldestWriter || cp.OldestWriter > cp.StartTime:
		return nil, badCheckpoint("min-atime %d, oldest-writer %d and start %d do not fit together", cp.MinAtime, cp.OldestWriter, cp.StartTime)
	case cp.Phase != phaseMark && cp.Phase != phaseSweep:
		return nil, badCheckpoint("unknown phase %q", cp.Phase)
	case cp.Sweep.Next < 0 || cp.Sweep.Next > chunkstore.PrefixCount:
		return nil, badCheckpoint("sweep progress %d out of range 0..%d", cp.Sweep.Next, chunkstore.PrefixCount)
	case cp.Phase == phaseMark && (cp.Sweep.Next != 0 || cp.Sweep.BrakeDone):
		return nil, badCheckpoint("sweep progress in phase mark")
	case len(cp.Untouched) > maxUntouched:
		return nil, badCheckpoint("%d untouched digests, at most %d", len(cp.Untouched), maxUntouched)
	}
	m := &cp.Mark
	if m.IndexFiles < 0 || m.NewIndexes < 0 || m.Missing < 0 || m.CacheHits < 0 || m.CacheLookups < m.CacheHits {
		return nil, badCheckpoint("negative phase 1 counters")
	}
	s := &cp.Sweep
	if s.DiskChunks < 0 || s.RemovedChunks < 0 || s.PendingChunks < 0 || s.RemovedBad < 0 || s.StillBad < 0 ||
		s.NotChunks < 0 || s.KeptUntouched < 0 || s.KeptLinked < 0 {
		return nil, badCheckpoint("negative phase 2 counters")
	}
	if _, err := decodeGroups(m.Groups); err != nil {
		return nil, err
	}
	for _, h := range cp.Untouched {
		if _, err := blob.ParseDigest(h); err != nil {
			return nil, badCheckpoint("untouched digest %q: %v", h, err)
		}
	}
	return &cp, nil
}

// groupHash identifies a group in the checkpoint's set: the first 8 bytes
// of the SHA-256 of its path below the base. A second preimage costs 2^64
// hashes, so a group name the backup user chose cannot pass for one that
// was marked.
func groupHash(g datastore.Group) uint64 {
	sum := sha256.Sum256([]byte(g.RelPath()))
	return binary.BigEndian.Uint64(sum[:8])
}

func encodeGroups(hs []uint64) string {
	hs = slices.Clone(hs)
	slices.Sort(hs)
	b := make([]byte, 8*len(hs))
	for i, h := range hs {
		binary.BigEndian.PutUint64(b[8*i:], h)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func decodeGroups(s string) (map[uint64]struct{}, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%8 != 0 {
		return nil, badCheckpoint("group set is not base64 of 8-byte hashes")
	}
	m := make(map[uint64]struct{}, len(b)/8)
	for i := 0; i < len(b); i += 8 {
		m[binary.BigEndian.Uint64(b[i:])] = struct{}{}
	}
	return m, nil
}

// checkpointer writes one run's checkpoints: at most every interval while
// a phase runs, and at the phase transition. A failed write is a warning,
// never a reason to stop: the checkpoint only saves work.
type checkpointer struct {
	store    *chunkstore.Store
	owner    fsys.Owner
	log      *zap.Logger
	interval time.Duration
	now      func() time.Time
	// build returns the checkpoint to write; it reads the phase trackers.
	build func() *checkpoint

	mu     sync.Mutex // serialises writes
	last   time.Time
	dirfd  int // -1 until the state dir is open
	failed bool
	writes int
}

// tick writes a checkpoint if one is due and no other write is running.
func (c *checkpointer) tick() {
	if c == nil || !c.mu.TryLock() {
		return
	}
	defer c.mu.Unlock()
	if c.now().Sub(c.last) < c.interval {
		return
	}
	c.writeLocked()
}

// save writes a checkpoint now.
func (c *checkpointer) save() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeLocked()
}

func (c *checkpointer) writeLocked() {
	c.last = c.now()
	cp := c.build()
	cp.Written = c.last.Unix()
	b, err := json.Marshal(cp)
	if err == nil && len(b) > maxCheckpointSize {
		err = fmt.Errorf("checkpoint of %d bytes is larger than %d", len(b), maxCheckpointSize)
	}
	if err == nil {
		err = c.writeBytes(append(b, '\n'))
	}
	if err != nil {
		if !c.failed {
			c.failed = true
			c.log.Warn("writing the GC checkpoint failed: an interrupted run will resume from an older checkpoint or start over", zap.Error(err))
		}
		return
	}
	c.writes++
	if ce := c.log.Check(zap.DebugLevel, "checkpoint written"); ce != nil {
		ce.Write(zap.String("phase", cp.Phase), zap.Int("sweep-next", cp.Sweep.Next), zap.Int("bytes", len(b)))
	}
}

// writeBytes replaces <base>/.chunkgc/checkpoint atomically: the state dir
// is opened (created, owned by the owner) without following a symlink, the
// file replaced by tmp file and renameat relative to it.
func (c *checkpointer) writeBytes(b []byte) error {
	sys := c.store.Syscalls()
	if c.dirfd < 0 {
		fd, err := nofollow.MkdirAll(sys, c.store.BaseFD(), c.store.Base(), StateDir, 0o750, c.owner)
		if err != nil {
			return fmt.Errorf("checkpoint dir: %w", err)
		}
		c.dirfd = fd
	}
	dir := filepath.Join(c.store.Base(), StateDir)
	if err := atomicfile.WriteBytesAtSys(sys, c.dirfd, dir, CheckpointName, b, 0o640, c.owner); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// close releases the state dir fd.
func (c *checkpointer) close() {
	if c != nil && c.dirfd >= 0 {
		unix.Close(c.dirfd)
		c.dirfd = -1
	}
}

// readCheckpoint reads <base>/.chunkgc/checkpoint without following a
// symlink in either component (O_NONBLOCK, a regular file only), at most
// maxCheckpointSize bytes. A store without one gives an error matching
// fs.ErrNotExist.
func readCheckpoint(store *chunkstore.Store) ([]byte, error) {
	rel := StateDir + "/" + CheckpointName
	return nofollow.ReadFile(store.BaseFD(), store.Base(), rel, maxCheckpointSize)
}

// removeCheckpoint removes <base>/.chunkgc/checkpoint if it exists,
// through the state dir opened without following a symlink (a .chunkgc
// that is a symlink is an error, and nothing is removed through it).
func removeCheckpoint(store *chunkstore.Store) error {
	dfd, err := nofollow.OpenDir(store.BaseFD(), store.Base(), StateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove checkpoint: %w", err)
	}
	defer unix.Close(dfd)
	err = store.Syscalls().Unlinkat(dfd, CheckpointName, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove checkpoint: %w", &fs.PathError{Op: "unlinkat", Path: CheckpointPath(store.Base()), Err: fsys.Errno(err)})
	}
	return nil
}

// digests lists the set's digests in hex, sorted, for the checkpoint.
func (s *untouchedSet) digests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.m))
	for d := range s.m {
		out = append(out, d.String())
	}
	slices.Sort(out)
	return out
}
