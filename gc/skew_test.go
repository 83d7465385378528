package gc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/skewfuse"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/tuning"
)

func TestLagSeconds(t *testing.T) {
	tests := []struct {
		give time.Duration
		want int64
	}{
		{0, 0},
		{10 * time.Minute, 0},
		{-time.Millisecond, 1},
		{-time.Second, 1},
		{-time.Second - time.Nanosecond, 2},
		{-10 * time.Minute, 600},
		{-10*time.Minute - 300*time.Millisecond, 601},
	}
	for _, tt := range tests {
		rtest.Equal(t, "lagSeconds("+tt.give.String()+")", tt.want, lagSeconds(tt.give))
	}
}

func TestApplyClockSkew(t *testing.T) {
	tests := []struct {
		name                string
		skew                time.Duration
		wantMs              int64
		wantMin, wantOldest int64
	}{
		{"none", 0, 0, 1000, 5000},
		{"ahead: unchanged", 90 * time.Second, 90000, 1000, 5000},
		{"behind: both lowered", -10 * time.Minute, -600000, 400, 4400},
		{"behind by a fraction: ms and s rounded up", -2500500 * time.Microsecond, -2501, 997, 4997},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &Status{MinAtime: 1000, OldestWriter: 5000}
			applyClockSkew(st, tt.skew, zaptest.NewLogger(t))
			if st.ClockSkewMs == nil {
				t.Fatal("ClockSkewMs not set")
			}
			rtest.Equal(t, "clock-skew-ms", tt.wantMs, *st.ClockSkewMs)
			rtest.Equal(t, "min-atime", tt.wantMin, st.MinAtime)
			rtest.Equal(t, "oldest-writer", tt.wantOldest, st.OldestWriter)
		})
	}
}

// newSkewedFixture makes a store on a loop-mounted ext4 (noatime, so only
// the file server stamps atimes) and opens it through a skewfuse mount whose
// clock is offset by offset. The store (layout, chunks with their explicit
// times, indexes) is written on the backing filesystem directly: 65,536
// mkdirs through FUSE would only be slow. The invariant check runs there
// too, after the unmount.
func newSkewedFixture(t *testing.T, offset time.Duration) *fixture {
	t.Helper()
	backing := testfs.Loop(t, "ext4", "noatime", 256<<20)
	st := storetest.Build(t, storetest.At(filepath.Join(backing, "store")))
	mnt := skewfuse.Mount(t, backing, offset)
	return openFixture(t, st, filepath.Join(mnt, "store"))
}

// skewChunk is an unreferenced chunk of the skew table, aged (explicit
// atime, as this host's clock counts) and whether the run must remove it.
type skewChunk struct {
	name    string
	age     time.Duration
	removed bool
}

// TestSkewedFileServer: a file server whose clock is behind or ahead by
// more than gc-max-clock-skew makes GC refuse before phase 1, naming both
// clocks and removing nothing; within the bound GC runs, and for a server
// behind it lowers min_atime (and the writer bound) by the measured lag.
// No referenced chunk is lost in any case, and garbage older than the
// cutoff plus the lag is still removed.
func TestSkewedFileServer(t *testing.T) {
	rtest.RequireRoot(t)
	const cutoff = 1445 * time.Minute
	refused := []skewChunk{{"old garbage", 72 * time.Hour, false}, {"garbage past the cutoff", cutoff + 20*time.Minute, false}}
	tests := []struct {
		name    string
		offset  time.Duration
		tuning  string        // over the defaults
		writer  time.Duration // > 0: a live writer started this long ago
		refuse  bool
		chunks  []skewChunk
		wantLag int64 // seconds min_atime is lowered by, ±1
	}{
		{name: "48 h behind", offset: -48 * time.Hour, refuse: true, chunks: refused},
		{name: "10 min behind", offset: -10 * time.Minute, refuse: true, chunks: refused},
		{name: "10 min ahead", offset: 10 * time.Minute, refuse: true, chunks: refused},
		{name: "no skew", offset: 0, chunks: []skewChunk{
			{"old garbage", 72 * time.Hour, true},
			{"garbage just past the cutoff", cutoff + 5*time.Minute, true},
			{"young", time.Hour, false},
		}},
		{name: "10 min behind, bound raised", offset: -10 * time.Minute, tuning: "gc-max-clock-skew=900", wantLag: 600, chunks: []skewChunk{
			{"old garbage", 72 * time.Hour, true},
			{"garbage past cutoff plus lag", cutoff + 20*time.Minute, true},
			{"within the lag past the cutoff", cutoff + 5*time.Minute, false},
			{"young", time.Hour, false},
		}},
		// A writer started 2 h ago (this host's clock) that wrote a chunk a
		// minute later: the server stamped it 10 min earlier, 2 h 9 min ago,
		// past the unwidened writer bound (2 h 5 min ago).
		{name: "10 min behind, bound raised, long-running writer", offset: -10 * time.Minute,
			tuning: "gc-max-clock-skew=900,gc-atime-cutoff=60", writer: 2 * time.Hour, wantLag: 600, chunks: []skewChunk{
				{"writer's new chunk", 2*time.Hour + 9*time.Minute, false},
				{"garbage past the writer bound plus lag", 2*time.Hour + 20*time.Minute, true},
				{"old garbage", 72 * time.Hour, true},
			}},
		{name: "10 min behind, probe off", offset: -10 * time.Minute, tuning: "gc-atime-safety-check=0", chunks: []skewChunk{
			{"old garbage", 72 * time.Hour, true},
			{"young", time.Hour, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newSkewedFixture(t, tt.offset)
			var refs []blob.Digest
			for range 3 {
				d, _ := f.chunk(1000, 72*time.Hour)
				refs = append(refs, d)
			}
			f.snapshot("vm/100/2025-01-01T00:00:00Z", refs...)
			paths := make([]string, len(tt.chunks))
			for i, c := range tt.chunks {
				d, _ := f.chunk(1000, c.age)
				paths[i] = f.store.ChunkPath(d)
			}
			props, err := tuning.Parse(tt.tuning)
			rtest.OK(t, err)
			if tt.writer > 0 {
				w, err := f.locks.RegisterWriter(f.now.Add(-tt.writer))
				rtest.OK(t, err)
				t.Cleanup(func() { w.Close() })
			}
			core, logs := observer.New(zapcore.InfoLevel)
			st, err := f.run(func(o *Options) {
				o.Tuning = props.Apply(tuning.Defaults())
				o.Tuning.Concurrency = 3
				o.Log = zap.New(zapcore.NewTee(o.Log.Core(), core))
			})

			for i, c := range tt.chunks {
				if gone := !f.exists(paths[i]); gone != c.removed {
					t.Errorf("%s (age %v): removed=%v, want %v", c.name, c.age, gone, c.removed)
				}
			}
			for _, d := range refs {
				if !f.exists(f.store.ChunkPath(d)) {
					t.Errorf("referenced chunk %s removed", d)
				}
			}
			if tt.refuse {
				if !errors.Is(err, chunkstore.ErrClockSkew) {
					t.Fatalf("want ErrClockSkew, got %v (status %+v)", err, st)
				}
				rtest.Contains(t, "error", err.Error(), "file server time 20", "host time 20", "gc-max-clock-skew", f.base)
				if logs.FilterMessageSnippet("phase 1").Len() != 0 {
					t.Error("phase 1 started on a refused clock skew")
				}
				if _, err := ReadStatus(f.base); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("refused run wrote .gc-status (err %v)", err)
				}
				return
			}
			rtest.OK(t, err)

			unwidened := minAtime(st.StartTime, min(st.StartTime, f.now.Add(-tt.writer).Unix()), o(props).AtimeCutoff)
			if !o(props).AtimeSafetyCheck {
				if st.ClockSkewMs != nil {
					t.Errorf("clock-skew-ms %d recorded without a probe", *st.ClockSkewMs)
				}
				if logs.FilterMessageSnippet("clock skew unmeasured").Len() != 1 {
					t.Error("no log says the clock skew is unmeasured")
				}
				rtest.Equal(t, "min-atime", unwidened, st.MinAtime)
				return
			}
			if st.ClockSkewMs == nil {
				t.Fatal("clock-skew-ms not recorded")
			}
			skew := time.Duration(*st.ClockSkewMs) * time.Millisecond
			if tt.offset == 0 {
				rtest.Equal(t, "clock-skew-ms", int64(0), *st.ClockSkewMs)
			} else if d := skew - tt.offset; d.Abs() > time.Second {
				t.Errorf("clock skew %v, want %v ± 1 s", skew, tt.offset)
			}
			lag := unwidened - st.MinAtime
			if lag < tt.wantLag || lag > tt.wantLag+1 {
				t.Errorf("min-atime lowered by %d s, want %d (+1)", lag, tt.wantLag)
			}
			rtest.Equal(t, "min-atime lowered by the recorded lag", lagSeconds(skew), lag)
			if tt.writer > 0 {
				rtest.Equal(t, "oldest-writer lowered by the lag", f.now.Add(-tt.writer).Unix()-lag, st.OldestWriter)
			}

			onDisk, err := ReadStatus(f.base)
			rtest.OK(t, err)
			if onDisk.ClockSkewMs == nil || *onDisk.ClockSkewMs != *st.ClockSkewMs {
				t.Errorf(".gc-status clock-skew-ms %v, want %d", onDisk.ClockSkewMs, *st.ClockSkewMs)
			}
			raw, err := os.ReadFile(filepath.Join(f.base, StatusFile))
			rtest.OK(t, err)
			if !strings.Contains(string(raw), `"clock-skew-ms":`) {
				t.Errorf(".gc-status lacks clock-skew-ms: %s", raw)
			}
			if logs.FilterMessageSnippet("File server clock skew").Len() != 1 {
				t.Error("the report has no clock skew line")
			}
		})
	}
}

// o applies props to the defaults.
func o(props tuning.Props) tuning.Tuning { return props.Apply(tuning.Defaults()) }
