package chunkstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/skewfuse"
	"chunkgc/internal/testkit/testfs"
)

func TestClockSkewArithmetic(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 500_000_000, time.UTC)
	t1 := t0.Add(300 * time.Microsecond)
	tests := []struct {
		name  string
		atime time.Time
		want  time.Duration
	}{
		{"between the readings", t0.Add(100 * time.Microsecond), 0},
		{"at t0", t0, 0},
		{"at t1", t1, 0},
		{"coarse clock 4 ms behind", t0.Add(-4 * time.Millisecond), 0},
		{"coarse clock 10 ms behind (HZ=100)", t0.Add(-10 * time.Millisecond), 0},
		{"20 ms behind", t0.Add(-clockGranularity), 0},
		{"21 ms behind", t0.Add(-21 * time.Millisecond), -21 * time.Millisecond},
		{"10 min behind", t0.Add(-10 * time.Minute), -10 * time.Minute},
		{"48 h behind", t0.Add(-48 * time.Hour), -48 * time.Hour},
		{"4 ms ahead", t1.Add(4 * time.Millisecond), 0},
		{"21 ms ahead", t1.Add(21 * time.Millisecond), 21 * time.Millisecond},
		{"10 min ahead", t1.Add(10 * time.Minute), 10 * time.Minute},
		{"whole second, truncated 0.5 s behind", t0.Truncate(time.Second), 0},
		{"whole second, 2.5 s behind", t0.Add(-2 * time.Second).Truncate(time.Second), -2500 * time.Millisecond},
		{"whole second, 50 ms ahead", t1.Add(50 * time.Millisecond).Truncate(time.Second).Add(time.Second), 499700 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rtest.Equal(t, "clockSkew", tt.want, clockSkew(t0, t1, tt.atime))
		})
	}
}

func TestCheckClockSkew(t *testing.T) {
	host := time.Date(2025, 6, 1, 12, 0, 0, 250_000_000, time.UTC)
	behind := ProbeResult{Path: "/s/.chunks/bb9f/x", HostBefore: host, HostAfter: host.Add(time.Millisecond),
		After: Times{Atime: host.Add(-10 * time.Minute)}, ClockSkew: -10 * time.Minute}
	rtest.OK(t, behind.CheckClockSkew(10*time.Minute))
	rtest.OK(t, behind.CheckClockSkew(time.Hour))
	err := behind.CheckClockSkew(30 * time.Second)
	se := rtest.ErrorAs[*ClockSkewError](t, err, ErrClockSkew)
	rtest.Equal(t, "HostTime", host, se.HostTime)
	rtest.Equal(t, "ServerTime", host.Add(-10*time.Minute), se.ServerTime)
	rtest.Equal(t, "Skew", -10*time.Minute, se.Skew)
	rtest.Equal(t, "Bound", 30*time.Second, se.Bound)
	rtest.Contains(t, "error", err.Error(), "file server time 2025-06-01T11:50:00.250Z", "host time 2025-06-01T12:00:00.250Z",
		"10m0s behind", "gc-max-clock-skew=30 s", "raise tuning gc-max-clock-skew", "/s/.chunks/bb9f/x")

	ahead := ProbeResult{HostBefore: host, HostAfter: host.Add(time.Millisecond),
		After: Times{Atime: host.Add(time.Millisecond + time.Minute)}, ClockSkew: time.Minute}
	err = ahead.CheckClockSkew(0)
	se = rtest.ErrorAs[*ClockSkewError](t, err, ErrClockSkew)
	rtest.Equal(t, "ahead: HostTime is the reading after the touch", host.Add(time.Millisecond), se.HostTime)
	rtest.Equal(t, "ahead: ServerTime - HostTime", time.Minute, se.ServerTime.Sub(se.HostTime))
	if !strings.Contains(err.Error(), "1m0s ahead of host time") {
		t.Errorf("error %q does not say ahead", err)
	}
	rtest.OK(t, ProbeResult{}.CheckClockSkew(0))
}

// skewedUtimes stands for a file server with a clock offset by offset: it
// replaces UTIME_NOW with the skewed clock (the probe's chunk exists
// already, so no new file needs stamping). It is not a faultfs fault: it
// changes the call's arguments, not its outcome, and a real skewed server
// is skewfuse (TestProbeAtimeOnSkewedFUSE).
type skewedUtimes struct {
	fsys.Real
	offset time.Duration
	fired  atomic.Int32
}

func (f *skewedUtimes) UtimesNanoAt(dirfd int, name string, ts []unix.Timespec, flags int) error {
	ts = append([]unix.Timespec(nil), ts...)
	for i := range ts {
		if ts[i].Nsec == unix.UTIME_NOW {
			ts[i] = unix.NsecToTimespec(time.Now().Add(f.offset).UnixNano())
			f.fired.Add(1)
		}
	}
	return f.Real.UtimesNanoAt(dirfd, name, ts, flags)
}

// TestProbeAtimeMeasuresSkew: through the syscall seam, the probe reports
// the server's skew in its result and its log line.
func TestProbeAtimeMeasuresSkew(t *testing.T) {
	for _, offset := range []time.Duration{-10 * time.Minute, 10 * time.Minute} {
		t.Run(offset.String(), func(t *testing.T) {
			f := &skewedUtimes{offset: offset}
			opts, logs := observedOpts(t)
			opts.Syscalls = f
			opts.probeDelay = time.Millisecond // explicit nanosecond times: no tick to wait for
			s := miniStore(t, t.TempDir(), opts, zeroPrefix)
			b, d := zeroChunk(t)
			p := s.ChunkPath(d)
			rtest.OK(t, os.WriteFile(p, b, 0o644))
			setTimes(t, p, old, old)

			res, err := s.ProbeAtime(context.Background())
			rtest.OK(t, err)
			if f.fired.Load() == 0 {
				t.Fatal("the seam never stamped a skewed time")
			}
			rtest.Equal(t, "PreExisting", true, res.PreExisting)
			if !res.HostBefore.Before(res.HostAfter) && !res.HostBefore.Equal(res.HostAfter) {
				t.Errorf("host readings out of order: %v, %v", res.HostBefore, res.HostAfter)
			}
			if d := res.ClockSkew - offset; d.Abs() > time.Second {
				t.Errorf("ClockSkew %v, want %v", res.ClockSkew, offset)
			}
			rtest.Equal(t, "ServerTime - HostTime", res.ClockSkew, res.ServerTime().Sub(res.HostTime()))
			m := onlyLog(t, logs, zapcore.InfoLevel, "atime probe passed").ContextMap()
			rtest.Equal(t, "logged clock_skew", any(res.ClockSkew), m["clock_skew"])
			rtest.Equal(t, "logged server_time", any(res.ServerTime()), m["server_time"])
			rtest.Equal(t, "logged host_time", any(res.HostTime()), m["host_time"])
			if err := res.CheckClockSkew(30 * time.Second); !errors.Is(err, ErrClockSkew) {
				t.Errorf("CheckClockSkew(30s): %v", err)
			}
		})
	}
}

// TestProbeAtimeOnSkewedFUSE: on a FUSE file server whose clock is offset,
// the real probe (1 s sleep, newly inserted chunk) passes and measures the
// offset; with no offset it measures exactly none.
func TestProbeAtimeOnSkewedFUSE(t *testing.T) {
	rtest.RequireRoot(t)
	backing := testfs.Tmpfs(t, "noatime")
	for _, offset := range []time.Duration{-48 * time.Hour, -10 * time.Minute, 0, 10 * time.Minute} {
		t.Run(offset.String(), func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(backing, offset.String())
			rtest.OK(t, os.MkdirAll(filepath.Join(dir, chunksName, prefixName(zeroPrefix)), 0o750))
			mnt := skewfuse.Mount(t, dir, offset)
			opts, logs := observedOpts(t)
			s, err := Open(mnt, opts)
			rtest.OK(t, err)
			t.Cleanup(func() { checkNoTmp(t, s); rtest.OK(t, s.Close()) }) // before the unmount

			res, err := s.ProbeAtime(context.Background())
			rtest.OK(t, err)
			rtest.Equal(t, "PreExisting", false, res.PreExisting)
			rtest.Equal(t, "FSType", "fuse."+skewfuse.Name, res.FSType)
			if offset == 0 {
				// The server stamps time.Now() between the two readings.
				rtest.Equal(t, "ClockSkew", time.Duration(0), res.ClockSkew)
				rtest.OK(t, res.CheckClockSkew(0))
			} else {
				if d := res.ClockSkew - offset; d.Abs() > time.Second {
					t.Errorf("ClockSkew %v, want %v", res.ClockSkew, offset)
				}
				if err := res.CheckClockSkew(30 * time.Second); !errors.Is(err, ErrClockSkew) {
					t.Errorf("CheckClockSkew(30s) at %v: %v", offset, err)
				}
				rtest.OK(t, res.CheckClockSkew(offset.Abs()+time.Second))
			}
			onlyLog(t, logs, zapcore.InfoLevel, "atime probe passed")
		})
	}
}
