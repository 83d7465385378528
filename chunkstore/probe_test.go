package chunkstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/atimefuse"
	"chunkgc/internal/testkit/faultfs"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// zeroPrefix is the prefix dir of the probe's zero chunk.
const zeroPrefix = 0xbb9f

// onlyLog returns the one log entry with message msg, failing unless there is
// exactly one.
func onlyLog(t testing.TB, logs *observer.ObservedLogs, level zapcore.Level, msg string) observer.LoggedEntry {
	t.Helper()
	entries := logs.FilterMessage(msg).FilterLevelExact(level).All()
	if len(entries) != 1 {
		t.Fatalf("want one %v log %q, got %d (all logs: %v)", level, msg, len(entries), logs.All())
	}
	return entries[0]
}

// TestProbeAtimeFilesystems runs the real probe (1 s sleep included) on every
// filesystem chunk stores live on, with the atime mount options that matter:
// utimensat sets the atime explicitly, which noatime and relatime do not
// suppress, so it must pass everywhere.
func TestProbeAtimeFilesystems(t *testing.T) {
	tests := []struct {
		name     string
		fstype   string
		give     string // mount options
		full     bool   // a full store made by Create, not just .chunks/bb9f
		wantType string
		wantOpt  string // among the reported mount options, if set
	}{
		{"ext4", "ext4", "", true, "ext4", "relatime"},
		{"ext4 noatime", "ext4", "noatime", false, "ext4", "noatime"},
		{"ext4 relatime", "ext4", "relatime", false, "ext4", "relatime"},
		{"ext4 strictatime", "ext4", "strictatime", false, "ext4", "rw"},
		{"ext4 lazytime", "ext4", "lazytime", false, "ext4", "lazytime"},
		{"xfs", "xfs", "", true, "xfs", "rw"},
		{"xfs noatime", "xfs", "noatime", false, "xfs", "noatime"},
		{"btrfs", "btrfs", "", true, "btrfs", "rw"},
		{"btrfs noatime", "btrfs", "noatime", false, "btrfs", "noatime"},
		{"tmpfs", "tmpfs", "", true, "tmpfs", "rw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mnt := testfs.Loop(t, tt.fstype, tt.give, 0)
			opts, logs := observedOpts(t)
			base := filepath.Join(mnt, "store")
			var s *Store
			if tt.full {
				var err error
				s, err = Create(context.Background(), base, opts, nil)
				rtest.OK(t, err)
				t.Cleanup(func() { rtest.OK(t, s.Close()) })
				rtest.OK(t, s.VerifyLayout(context.Background()))
			} else {
				s = miniStore(t, base, opts, zeroPrefix)
			}

			res, err := s.ProbeAtime(context.Background())
			rtest.OK(t, err)
			_, d := zeroChunk(t)
			rtest.Equal(t, "Path", s.ChunkPath(d), res.Path)
			rtest.Equal(t, "PreExisting", false, res.PreExisting)
			rtest.Equal(t, "Retried", false, res.Retried)
			rtest.Equal(t, "FSType", tt.wantType, res.FSType)
			if !strings.Contains(","+res.MountOptions+",", ","+tt.wantOpt+",") {
				t.Errorf("MountOptions %q lack %q", res.MountOptions, tt.wantOpt)
			}
			if !res.After.Atime.After(res.Before.Atime) {
				t.Errorf("atime %v -> %v did not move", res.Before.Atime, res.After.Atime)
			}
			if !res.After.Mtime.Equal(res.Before.Mtime) {
				t.Errorf("mtime %v -> %v moved", res.Before.Mtime, res.After.Mtime)
			}
			// A local filesystem stamps this host's coarse clock: a few ms
			// behind time.Now, which is granularity, not skew.
			rtest.Equal(t, "ClockSkew", time.Duration(0), res.ClockSkew)
			e := onlyLog(t, logs, zapcore.InfoLevel, "atime probe passed")
			rtest.Equal(t, "logged fs_type", any(tt.wantType), e.ContextMap()["fs_type"])
			rtest.Equal(t, "logged mount options", any(res.MountOptions), e.ContextMap()["mount_options"])

			// Again, now with the chunk pre-existing.
			res, err = s.ProbeAtime(context.Background())
			rtest.OK(t, err)
			rtest.Equal(t, "PreExisting", true, res.PreExisting)
		})
	}
}

// TestProbeAtimeFailsOnFUSE: on a filesystem that accepts utimensat but drops
// the atime, the probe fails with ErrAtimeNotHonoured after logging a
// warning with both timestamp sets.
func TestProbeAtimeFailsOnFUSE(t *testing.T) {
	t.Parallel()
	backing := t.TempDir()
	rtest.OK(t, os.MkdirAll(filepath.Join(backing, chunksName, prefixName(zeroPrefix)), 0o750))
	mnt := atimefuse.Mount(t, backing)
	opts, logs := observedOpts(t)
	s, err := Open(mnt, opts)
	rtest.OK(t, err)
	t.Cleanup(func() { checkNoTmp(t, s); rtest.OK(t, s.Close()) }) // before the unmount
	_, d := zeroChunk(t)

	for _, pre := range []bool{false, true} {
		res, err := s.ProbeAtime(context.Background())
		if !errors.Is(err, ErrAtimeNotHonoured) {
			t.Fatalf("probe on atimefuse: want ErrAtimeNotHonoured, got %v", err)
		}
		pe, isPE := errors.AsType[*ProbeError](err)
		if !isPE {
			t.Fatalf("probe on atimefuse: want *ProbeError, got %T", err)
		}
		rtest.Equal(t, "ProbeError.Path", s.ChunkPath(d), pe.Path)
		rtest.Equal(t, "ProbeError.PreExisting", pre, pe.PreExisting)
		rtest.Equal(t, "result PreExisting", pre, res.PreExisting)
		rtest.Equal(t, "FSType", "fuse."+atimefuse.Name, res.FSType)
		rtest.Contains(t, "error", err.Error(), s.ChunkPath(d), "does not honour atime updates")
		if !pe.After.Atime.Equal(pe.Before.Atime) {
			t.Errorf("atimefuse moved the atime: %v -> %v", pe.Before.Atime, pe.After.Atime)
		}

		e := onlyLog(t, logs, zapcore.WarnLevel, "atime probe failed: touching the chunk did not update its atime")
		m := e.ContextMap()
		rtest.Equal(t, "logged pre_existing", any(pre), m["pre_existing"])
		wantState := "newly inserted"
		if pre {
			wantState = "pre-existing"
		}
		rtest.Equal(t, "logged chunk_state", any(wantState), m["chunk_state"])
		rtest.Equal(t, "logged chunk", any(s.ChunkPath(d)), m["chunk"])
		for _, set := range []string{"before", "after"} {
			times, isMap := m[set].(map[string]any)
			if !isMap {
				t.Fatalf("logged %s: %#v", set, m[set])
			}
			for _, f := range []string{"atime", "mtime", "ctime"} {
				if _, err := time.Parse(time.RFC3339Nano, times[f].(string)); err != nil {
					t.Errorf("logged %s.%s: %v", set, f, err)
				}
			}
		}
		logs.TakeAll()
	}
	if logs.FilterMessage("atime probe passed").Len() != 0 {
		t.Error("probe logged success")
	}
}

func TestProbeAtimeReplacedChunk(t *testing.T) {
	tests := []struct {
		name        string
		give        []int // Statx calls before which the chunk is replaced
		wantErr     error
		wantRetried bool
	}{
		{"between the stats", []int{2}, nil, true},
		{"twice", []int{2, 4}, ErrProbeChunkReplaced, true},
		{"before the first stat", []int{1}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			set := faultfs.New(t, nil)
			var faults []*faultfs.Fault
			for _, n := range tt.give {
				faults = append(faults, set.Add(faultfs.Fault{Op: faultfs.Statx, Nth: n, Name: prefixName(zeroPrefix) + "/*",
					Before: func(name string) { replaceFile(t, filepath.Join(base, chunksName, name)) }}))
			}
			opts, logs := observedOpts(t)
			opts.Syscalls = set
			s := miniStore(t, base, opts, zeroPrefix)

			res, err := s.ProbeAtime(context.Background())
			fired := 0
			for _, f := range faults {
				fired += f.Fired()
			}
			rtest.Equal(t, "faults fired", len(tt.give), fired)
			if tt.wantErr == nil {
				rtest.OK(t, err)
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("want %v, got %v", tt.wantErr, err)
			}
			rtest.Equal(t, "Retried", tt.wantRetried, res.Retried)
			n := logs.FilterMessage("atime probe chunk was replaced during the probe, retrying once").Len()
			rtest.Equal(t, "retry logs", map[bool]int{false: 0, true: 1}[tt.wantRetried], n)
			if errors.Is(err, ErrProbeChunkReplaced) && !strings.Contains(err.Error(), "changed twice") {
				t.Errorf("error %q does not say the chunk changed twice", err)
			}
		})
	}
}

// replaceFile replaces the file at path by renaming a fresh copy over it: same
// name and content, another inode.
func replaceFile(t testing.TB, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Error(err)
		return
	}
	tmp := path + ".replacement"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Error(err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Error(err)
	}
}

func TestProbeAtimeTouchEIO(t *testing.T) {
	set := faultfs.New(t, nil)
	// The probe's chunk is new: its insert touches nothing, so the first
	// utimensat is the probe's touch.
	f := set.Add(faultfs.Fault{Op: faultfs.UtimesNanoAt, Nth: 1, Err: unix.EIO})
	opts := testOpts(t)
	opts.Syscalls = set
	opts.probeDelay = time.Millisecond // fails before the atime matters
	s := miniStore(t, t.TempDir(), opts, zeroPrefix)
	_, err := s.ProbeAtime(context.Background())
	rtest.Equal(t, "fault fired", 1, f.Fired())
	if !errors.Is(err, unix.EIO) || errors.Is(err, ErrAtimeNotHonoured) {
		t.Fatalf("probe: want EIO, got %v", err)
	}
	_, d := zeroChunk(t)
	if !strings.Contains(err.Error(), s.ChunkPath(d)) {
		t.Errorf("error %q does not name the chunk", err)
	}
}

// TestProbeAtimeCancelled: the probe's real 1 s sleep is not waited out on
// a context cancelled before the probe or during the sleep. The bounds are
// generous (this is a behaviour check, not a performance target): half the
// sleep.
func TestProbeAtimeCancelled(t *testing.T) {
	const prompt = probeSleep / 2
	t.Run("before", func(t *testing.T) {
		s := miniStore(t, t.TempDir(), testOpts(t), zeroPrefix)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		_, err := s.ProbeAtime(ctx)
		took := time.Since(start)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("probe on a cancelled context: %v", err)
		}
		if took >= prompt {
			t.Errorf("probe on a cancelled context took %v, want well under the %v sleep", took, probeSleep)
		}
	})
	t.Run("during the sleep", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var (
			wg          sync.WaitGroup
			cancelledAt atomic.Pointer[time.Time]
		)
		defer wg.Wait()
		// The sleep starts right after the insert's rename of the new
		// chunk: cancel 100 ms into it, from another goroutine.
		set := faultfs.New(t, nil)
		set.Add(faultfs.Fault{Op: faultfs.Renameat, Nth: 1, Before: func(string) {
			wg.Go(func() {
				timer := time.NewTimer(100 * time.Millisecond)
				defer timer.Stop()
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
				now := time.Now()
				cancelledAt.Store(&now)
				cancel()
			})
		}})
		opts := testOpts(t)
		opts.Syscalls = set
		s := miniStore(t, t.TempDir(), opts, zeroPrefix)
		start := time.Now()
		_, err := s.ProbeAtime(ctx)
		returned := time.Now()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("probe cancelled during its sleep: %v", err)
		}
		at := cancelledAt.Load()
		if at == nil {
			t.Fatal("the probe returned before it was cancelled")
		}
		if d := returned.Sub(*at); d >= prompt {
			t.Errorf("probe returned %v after the cancel, want well under the %v sleep", d, probeSleep)
		}
		t.Logf("returned %v after the start, %v after the cancel", returned.Sub(start), returned.Sub(*at))
	})
}

// TestProbeAtimeOwnership is seed 002: as root, the probe's zero chunk (like
// every dir of the store) belongs to the backup user, so that a probe or a
// writer running later as the backup user can touch it. A root-owned chunk
// makes utimensat({UTIME_NOW, UTIME_OMIT}) fail with EPERM for them.
func TestProbeAtimeOwnership(t *testing.T) {
	rtest.RequireRoot(t)
	owner, err := fsys.LookupOwner("backup")
	rtest.OK(t, err)
	mnt := testfs.Tmpfs(t, "")
	storetest.Reachable(t, mnt)
	base := filepath.Join(mnt, "store")
	opts := testOpts(t)
	opts.Owner = owner
	s, err := Create(context.Background(), base, opts, nil)
	rtest.OK(t, err)
	t.Cleanup(func() { checkNoTmp(t, s); rtest.OK(t, s.Close()) })

	res, err := s.ProbeAtime(context.Background())
	rtest.OK(t, err)
	st := lstat(t, res.Path)
	if int(st.Uid) != owner.UID || int(st.Gid) != owner.GID {
		t.Fatalf("zero chunk owned by %d:%d, want %v", st.Uid, st.Gid, owner)
	}
	rtest.OK(t, s.VerifyLayout(context.Background()))

	bin := storetest.CopyTestBinary(t)
	t.Run("probe as backup user", func(t *testing.T) {
		out, err := runAsBackup(t, bin, base)
		if err != nil {
			t.Fatalf("probe as the backup user: %v\n%s", err, out)
		}
		if !strings.Contains(out, "probe passed as uid 34") {
			t.Fatalf("helper output: %s", out)
		}
	})
	t.Run("root-owned chunk fails as backup user", func(t *testing.T) {
		rtest.OK(t, os.Lchown(res.Path, 0, 0))
		defer func() { rtest.OK(t, os.Lchown(res.Path, owner.UID, owner.GID)) }()
		out, err := runAsBackup(t, bin, base)
		if err == nil {
			t.Fatalf("probe as the backup user on a root-owned chunk succeeded: %s", out)
		}
		if !strings.Contains(out, "utimensat") || !strings.Contains(out, "operation not permitted") {
			t.Fatalf("want EPERM from utimensat, got: %s", out)
		}
	})
}

// runAsBackup runs the atime probe on base in the test binary bin (a copy
// of this one) as uid and gid 34 and returns its combined output.
func runAsBackup(t testing.TB, bin, base string) (string, error) {
	t.Helper()
	cmd := rtest.Helper("probe", base)
	cmd.Path, cmd.Args[0] = bin, bin
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 34, Gid: 34}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
