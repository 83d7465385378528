package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/tuning"
)

// probeSleep is the atime probe's wait between inserting the zero chunk and
// touching it: more than the kernel's coarse timestamp granularity.
const probeSleep = time.Second

// ErrAtimeNotHonoured is returned, wrapped in a [*ProbeError], by
// [Store.ProbeAtime] when touching the probe chunk did not move its atime
// forward: on such a filesystem GC would delete chunks still in use.
var ErrAtimeNotHonoured = errors.New("the filesystem does not honour atime updates")

// ErrProbeChunkReplaced is returned by [Store.ProbeAtime] when the probe chunk
// was replaced (another inode or birth time) between the two stats of the
// probe, twice in a row.
var ErrProbeChunkReplaced = errors.New("chunk changed twice during the atime probe")

// Times are a file's timestamps; Btime (birth time) is zero when the
// filesystem or kernel does not report it.
type Times struct{ Atime, Mtime, Ctime, Btime time.Time }

// MarshalLogObject logs the times as RFC 3339 with nanoseconds.
func (t Times) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("atime", t.Atime.Format(time.RFC3339Nano))
	enc.AddString("mtime", t.Mtime.Format(time.RFC3339Nano))
	enc.AddString("ctime", t.Ctime.Format(time.RFC3339Nano))
	if !t.Btime.IsZero() {
		enc.AddString("btime", t.Btime.Format(time.RFC3339Nano))
	}
	return nil
}

// ProbeResult is what [Store.ProbeAtime] saw: the probe chunk's path, whether
// it existed before the probe inserted it, whether the probe was retried
// because the chunk was replaced under it, the filesystem type and mount
// options of the store, the chunk's times before and after the touch, this
// host's clock around the touch and the file server's clock skew.
type ProbeResult struct {
	Path         string
	PreExisting  bool
	Retried      bool
	FSType       string
	MountOptions string
	Before       Times
	After        Times
	// HostBefore and HostAfter are this host's wall clock read just before
	// and just after the touch; After.Atime is the file server's clock at
	// the touch.
	HostBefore, HostAfter time.Time
	// ClockSkew is the file server's clock minus this host's, as the touch
	// measured it: negative when the server is behind (HostBefore minus
	// After.Atime), positive when it is ahead (After.Atime minus
	// HostAfter), 0 when the atime lies between the two host readings
	// allowing for timestamp granularity (see [Store.ProbeAtime]). It is
	// set only when the probe passed.
	ClockSkew time.Duration
}

// ServerTime is the file server's clock at the touch: the probe chunk's new
// atime.
func (r ProbeResult) ServerTime() time.Time { return r.After.Atime }

// HostTime is this host's clock at the touch, the reading that
// [ProbeResult.ClockSkew] is measured from: HostAfter when the server is
// ahead, else HostBefore.
func (r ProbeResult) HostTime() time.Time {
	if r.ClockSkew > 0 {
		return r.HostAfter
	}
	return r.HostBefore
}

// CheckClockSkew returns a [*ClockSkewError] when the measured skew is
// larger than bound in either direction, else nil.
func (r ProbeResult) CheckClockSkew(bound time.Duration) error {
	if r.ClockSkew.Abs() <= bound {
		return nil
	}
	return &ClockSkewError{Path: r.Path, HostTime: r.HostTime(), ServerTime: r.ServerTime(), Skew: r.ClockSkew, Bound: bound}
}

// ErrClockSkew is returned, wrapped in a [*ClockSkewError], by
// [ProbeResult.CheckClockSkew] when the file server's clock is further from
// this host's than the bound (tuning gc-max-clock-skew).
var ErrClockSkew = errors.New("the file server's clock is too far from this host's")

// ClockSkewError reports a file server clock that is off by more than the
// bound: touching the probe chunk at Path gave it the atime ServerTime while
// this host's clock read HostTime. Skew is ServerTime minus HostTime
// (negative: the server is behind). It matches [ErrClockSkew].
type ClockSkewError struct {
	Path       string
	HostTime   time.Time
	ServerTime time.Time
	Skew       time.Duration
	Bound      time.Duration
}

// rfc3339Milli is RFC 3339 with milliseconds.
const rfc3339Milli = "2006-01-02T15:04:05.000Z07:00"

func (e *ClockSkewError) Error() string {
	dir := "ahead of"
	if e.Skew < 0 {
		dir = "behind"
	}
	return fmt.Sprintf("%v: file server time %s (atime of probe chunk %s) is %v %s host time %s, "+
		"more than the bound %s=%d s; fix the file server's clock (NTP) or raise tuning %s",
		ErrClockSkew, e.ServerTime.UTC().Format(rfc3339Milli), e.Path, e.Skew.Abs().Round(time.Millisecond), dir,
		e.HostTime.UTC().Format(rfc3339Milli), tuning.KeyMaxClockSkew, int64(e.Bound/time.Second), tuning.KeyMaxClockSkew)
}

// Unwrap returns [ErrClockSkew].
func (e *ClockSkewError) Unwrap() error { return ErrClockSkew }

// clockGranularity is how far a new atime may trail this host's clock
// without counting as skew: the kernel stamps file times from its coarse
// clock (the last timer tick, 1 to 10 ms behind time.Now depending on
// CONFIG_HZ), and a FUSE or network server may round further. A file server
// ahead by less is not told apart either.
const clockGranularity = 20 * time.Millisecond

// clockSkew is the file server's clock minus this host's, from an atime the
// server stamped between this host's readings hostBefore and hostAfter:
// atime - hostBefore when the atime is before hostBefore, atime - hostAfter
// when it is after hostAfter, 0 when it lies between them. Differences up to
// clockGranularity do not count, and up to a second behind when the atime is
// a whole second (a filesystem that keeps seconds only, such as ext4 with
// 128-byte inodes, truncates).
func clockSkew(hostBefore, hostAfter, atime time.Time) time.Duration {
	behindTol := clockGranularity
	if atime.Nanosecond() == 0 {
		behindTol = time.Second
	}
	switch {
	case atime.Before(hostBefore.Add(-behindTol)):
		return atime.Sub(hostBefore)
	case atime.After(hostAfter.Add(clockGranularity)):
		return atime.Sub(hostAfter)
	}
	return 0
}

// ProbeError reports a failed atime probe: touching the chunk at Path did not
// move its atime past Before.Atime. It matches [ErrAtimeNotHonoured].
type ProbeError struct {
	Path        string
	PreExisting bool
	Before      Times
	After       Times
}

func (e *ProbeError) Error() string {
	which := "newly inserted"
	if e.PreExisting {
		which = "pre-existing"
	}
	return fmt.Sprintf("atime probe on %s chunk %s: %v: atime %s before utimensat, %s after",
		which, e.Path, ErrAtimeNotHonoured,
		e.Before.Atime.Format(time.RFC3339Nano), e.After.Atime.Format(time.RFC3339Nano))
}

// Unwrap returns [ErrAtimeNotHonoured].
func (e *ProbeError) Unwrap() error { return ErrAtimeNotHonoured }

// ProbeAtime checks that the filesystem holding the store honours atime
// updates (SPEC §5), which GC's sweep depends on:
//
//  1. it inserts the 4 MiB zero chunk (compressed), owned by the Owner when
//     new and [fsys.Owner.Active];
//  2. sleeps 1 s (cancellable through ctx);
//  3. stats the chunk (statx, with birth time), touches it like GC's mark
//     does, stats it again;
//  4. if the inode or the birth time changed in between, the chunk was
//     replaced under the probe: it runs the whole probe once more, and a
//     second change is an error wrapping [ErrProbeChunkReplaced];
//  5. if the atime did not increase (compared to the nanosecond) it logs a
//     warning with both timestamp sets and returns a [*ProbeError];
//  6. else it measures the file server's clock skew ([ProbeResult.ClockSkew]):
//     this host's clock is read just before and just after the touch, and
//     the new atime, which the file server stamped with its own clock, is
//     compared with both readings; an atime up to 20 ms behind (1 s when the
//     filesystem keeps whole seconds) or 20 ms ahead is timestamp
//     granularity, not skew;
//  7. it logs "atime probe passed" with the filesystem type and mount
//     options, both clocks and the skew.
//
// ProbeAtime does not judge the skew: callers compare it with their bound
// through [ProbeResult.CheckClockSkew].
//
// The result is filled in as far as the probe got, also on error.
func (s *Store) ProbeAtime(ctx context.Context) (ProbeResult, error) {
	data, d, err := blob.ZeroChunk(blob.ZeroChunkSize)
	if err != nil {
		return ProbeResult{}, fmt.Errorf("atime probe: %w", err)
	}
	res := ProbeResult{Path: s.ChunkPath(d)}
	res.FSType, res.MountOptions = s.fsInfo()
	log := s.log.With(zap.String("chunk", res.Path), zap.String("fs_type", res.FSType), zap.String("mount_options", res.MountOptions))

	var before, after statxInfo
	for attempt := 0; ; attempt++ {
		res.PreExisting, before, after, res.HostBefore, res.HostAfter, err = s.probeOnce(ctx, data, d)
		res.Before, res.After = before.times, after.times
		if err != nil {
			return res, fmt.Errorf("atime probe: %w", err)
		}
		if before.sameFile(after) {
			break
		}
		if attempt > 0 {
			return res, fmt.Errorf("atime probe: %s: %w", res.Path, ErrProbeChunkReplaced)
		}
		log.Info("atime probe chunk was replaced during the probe, retrying once",
			zap.Uint64("inode_before", before.ino), zap.Uint64("inode_after", after.ino),
			zap.Object("before", before.times), zap.Object("after", after.times))
		res.Retried = true
	}

	if !res.After.Atime.After(res.Before.Atime) {
		which := "newly inserted"
		if res.PreExisting {
			which = "pre-existing"
		}
		log.Warn("atime probe failed: touching the chunk did not update its atime",
			zap.Bool("pre_existing", res.PreExisting), zap.String("chunk_state", which),
			zap.Object("before", res.Before), zap.Object("after", res.After))
		return res, &ProbeError{Path: res.Path, PreExisting: res.PreExisting, Before: res.Before, After: res.After}
	}
	res.ClockSkew = clockSkew(res.HostBefore, res.HostAfter, res.After.Atime)
	log.Info("atime probe passed", zap.Bool("pre_existing", res.PreExisting), zap.Bool("retried", res.Retried),
		zap.Time("atime_before", res.Before.Atime), zap.Time("atime_after", res.After.Atime),
		zap.Time("host_time", res.HostTime()), zap.Time("server_time", res.ServerTime()),
		zap.Duration("clock_skew", res.ClockSkew))
	return res, nil
}

// probeOnce is steps 1 to 3 of the probe; t0 and t1 are this host's clock
// read just before and just after the touch.
func (s *Store) probeOnce(ctx context.Context, data []byte, d blob.Digest) (preExisting bool, before, after statxInfo, t0, t1 time.Time, err error) {
	preExisting, _, err = s.Insert(data, d)
	if err != nil {
		return preExisting, before, after, t0, t1, err
	}
	delay := s.probeDelay
	if delay <= 0 {
		delay = probeSleep
	}
	t := time.NewTimer(delay)
	select {
	case <-ctx.Done():
		t.Stop()
		return preExisting, before, after, t0, t1, context.Cause(ctx)
	case <-t.C:
	}
	var buf [5 + 2*blob.DigestSize]byte
	name := string(appendRelName(buf[:0], d))
	if before, err = s.statx(name); err != nil {
		return preExisting, before, after, t0, t1, fmt.Errorf("stat before touch: %w", withPath(err, s.ChunkPath(d)))
	}
	// Wall clock only (Round(0) drops the monotonic reading): the skew is
	// a difference of wall clocks.
	t0 = time.Now().Round(0)
	err = s.Touch(d)
	t1 = time.Now().Round(0)
	if err != nil {
		return preExisting, before, after, t0, t1, err
	}
	if after, err = s.statx(name); err != nil {
		return preExisting, before, after, t0, t1, fmt.Errorf("stat after touch: %w", withPath(err, s.ChunkPath(d)))
	}
	return preExisting, before, after, t0, t1, nil
}

// statxInfo is what the probe compares between its two stats.
type statxInfo struct {
	dev, ino uint64
	times    Times
}

// sameFile reports whether a and b are the same file: same device and inode,
// and the same birth time when both have one.
func (a statxInfo) sameFile(b statxInfo) bool {
	if a.dev != b.dev || a.ino != b.ino {
		return false
	}
	return a.times.Btime.IsZero() || b.times.Btime.IsZero() || a.times.Btime.Equal(b.times.Btime)
}

// statx stats name under .chunks with statx (forcing a fresh stat from
// network and FUSE filesystems, and asking for the birth time), or with
// fstatat where statx is not available.
func (s *Store) statx(name string) (statxInfo, error) {
	var stx unix.Statx_t
	err := s.sys.Statx(s.chunksFd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC,
		unix.STATX_BASIC_STATS|unix.STATX_BTIME, &stx)
	if errors.Is(err, unix.ENOSYS) {
		var st unix.Stat_t
		if err := s.sys.Fstatat(s.chunksFd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return statxInfo{}, err
		}
		return statxInfo{
			dev: st.Dev,
			ino: st.Ino,
			times: Times{
				Atime: time.Unix(st.Atim.Unix()),
				Mtime: time.Unix(st.Mtim.Unix()),
				Ctime: time.Unix(st.Ctim.Unix()),
			},
		}, nil
	}
	if err != nil {
		return statxInfo{}, err
	}
	info := statxInfo{
		dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor),
		ino: stx.Ino,
		times: Times{
			Atime: statxTime(stx.Atime),
			Mtime: statxTime(stx.Mtime),
			Ctime: statxTime(stx.Ctime),
		},
	}
	if stx.Mask&unix.STATX_BTIME != 0 {
		info.times.Btime = statxTime(stx.Btime)
	}
	return info, nil
}

func statxTime(ts unix.StatxTimestamp) time.Time { return time.Unix(ts.Sec, int64(ts.Nsec)) }
