package locking

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

// TestFlockBetweenProcesses checks shared/exclusive semantics against a
// holder in another process, with try-once acquisitions.
func TestFlockBetweenProcesses(t *testing.T) {
	tests := []struct {
		name       string
		hold       string // helper's mode
		give       Mode
		wantLocked bool
	}{
		{name: "shared beside shared", hold: "sh", give: Shared},
		{name: "exclusive beside shared", hold: "sh", give: Exclusive, wantLocked: true},
		{name: "shared beside exclusive", hold: "ex", give: Shared, wantLocked: true},
		{name: "exclusive beside exclusive", hold: "ex", give: Exclusive, wantLocked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lock")
			h := startProc(t, "flock", path, tt.hold, "0")
			h.expectLocked()
			l, err := Flock(t.Context(), path, tt.give, 0)
			if !tt.wantLocked {
				rtest.OK(t, err)
				rtest.Equal(t, "l.Path()", path, l.Path())
				rtest.OK(t, l.Unlock())
				return
			}
			le, isLocked := errors.AsType[*LockedError](err)
			if !isLocked {
				t.Fatalf("want *LockedError, got %v", err)
			}
			rtest.Equal(t, "le.Path", path, le.Path)
			if !errors.Is(err, ErrLocked) {
				t.Errorf("%v does not match ErrLocked", err)
			}
			// Once the holder is gone, the same call succeeds.
			h.stop()
			l, err = Flock(t.Context(), path, tt.give, 0)
			rtest.OK(t, err)
			rtest.OK(t, l.Unlock())
		})
	}
}

// lockResult is what a flocker's lock returned.
type lockResult struct {
	l   *Lock
	err error
}

// lockInBackground takes path's exclusive lock with f, waiting up to an
// hour, in a goroutine, and returns the channel its result arrives on.
func lockInBackground(t *testing.T, f *flocker, path string) <-chan lockResult {
	res := make(chan lockResult, 1)
	go func() {
		l, err := f.lock(t.Context(), path, Exclusive, time.Hour)
		res <- lockResult{l, err}
	}()
	return res
}

// TestFlockWaitsForHolder: with a timeout, Flock gets the lock once the
// holding process exits.
func TestFlockWaitsForHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	h := startProc(t, "flock", path, "ex", "0")
	h.expectLocked()

	waiting := make(chan struct{})
	f := newFlocker(fsys.Real{}, fsys.Keep)
	f.afterBusy = func(n int) {
		if n == 1 {
			close(waiting)
		}
	}
	res := lockInBackground(t, &f, path)
	<-waiting
	h.stop()
	r := <-res
	rtest.OK(t, r.err)
	rtest.Equal(t, "fdInode(t, r.l)", inode(t, path), fdInode(t, r.l))
	rtest.OK(t, r.l.Unlock())
}

// TestFlockTimeoutRunsOut: a holder that stays gives *LockedError after the
// timeout.
func TestFlockTimeoutRunsOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	h := startProc(t, "flock", path, "sh", "0")
	h.expectLocked()
	_, err := Flock(t.Context(), path, Exclusive, 20*time.Millisecond)
	if _, isLocked := errors.AsType[*LockedError](err); !isLocked {
		t.Fatalf("want *LockedError, got %v", err)
	}
}

// TestFlockCancel: cancelling ctx stops the wait with the cancellation, not a
// LockedError.
func TestFlockCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	h := startProc(t, "flock", path, "ex", "0")
	h.expectLocked()
	errStop := errors.New("stop requested")

	t.Run("while waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancelCause(t.Context())
		defer cancel(nil)
		f := newFlocker(fsys.Real{}, fsys.Keep)
		f.afterBusy = func(n int) {
			if n == 2 {
				cancel(errStop)
			}
		}
		_, err := f.lock(ctx, path, Exclusive, time.Hour)
		if !errors.Is(err, context.Canceled) || !errors.Is(err, errStop) {
			t.Fatalf("want context.Canceled with cause, got %v", err)
		}
		if errors.Is(err, ErrLocked) {
			t.Errorf("%v matches ErrLocked", err)
		}
	})
	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := Flock(ctx, path, Shared, time.Hour)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, got %v", err)
		}
	})
}

// TestSeed000 replays the sequence of seed 000 with processes: A holds the
// lock exclusively and removes its file; B had opened the old file and was
// waiting; C recreates the file and locks it. B must not believe it holds the
// lock while C does; it ends up holding C's file after C lets go.
func TestSeed000(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vm-100")
	a := startProc(t, "flock", path, "ex", "0")
	inoA := a.expectLocked()

	firstBusy, resume := make(chan struct{}), make(chan struct{})
	replaced, busyOnNew := make(chan struct{}), make(chan struct{})
	sawReplaced := false // only touched by B's goroutine, in hooks
	b := newFlocker(fsys.Real{}, fsys.Keep)
	b.afterBusy = func(n int) {
		switch {
		case n == 1:
			close(firstBusy)
			<-resume
		case sawReplaced && busyOnNew != nil:
			close(busyOnNew)
			busyOnNew = nil
		}
	}
	b.afterReplaced = func() {
		if !sawReplaced {
			sawReplaced = true
			close(replaced)
		}
	}
	busyOnNewCh := busyOnNew
	res := lockInBackground(t, &b, path)

	<-firstBusy // B holds the old file open and found it locked
	a.send("remove")
	a.expect("removed") // A unlinked it while holding it, then released it
	c := startProc(t, "flock", path, "ex", "0")
	inoC := c.expectLocked() // C created a new file and locked it
	if inoC == inoA {
		t.Fatalf("C locked inode %d, the old file B still has open", inoC)
	}
	close(resume)

	// B gets the flock on A's unlinked file, notices and drops it, then
	// finds C's file locked. It must not return in between.
	for _, step := range []chan struct{}{replaced, busyOnNewCh} {
		select {
		case r := <-res:
			t.Fatalf("B returned while C holds the lock: %+v", r)
		case <-step:
		}
	}
	select {
	case r := <-res:
		t.Fatalf("B returned while C holds the lock: %+v", r)
	default:
	}

	c.send("unlock")
	c.expect("unlocked")
	r := <-res
	rtest.OK(t, r.err)
	rtest.Equal(t, "fdInode(t, r.l)", inoC, fdInode(t, r.l))
	rtest.Equal(t, "inode(t, path)", inoC, inode(t, path))
	rtest.OK(t, r.l.Unlock())
}

// TestWaitMovesToNewFile: while waiting, a lock file removed by a holder
// that keeps holding it does not keep the waiter waiting: it moves on to the
// file now at the path (created by itself here) and gets it.
func TestWaitMovesToNewFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	h := startProc(t, "flock", path, "ex", "0")
	old := h.expectLocked()
	f := newFlocker(fsys.Real{}, fsys.Keep)
	f.afterBusy = func(n int) {
		if n == 1 {
			rtest.OK(t, os.Remove(path)) // as the holder would before releasing
		}
	}
	l, err := f.lock(t.Context(), path, Exclusive, time.Hour)
	rtest.OK(t, err)
	if got := fdInode(t, l); got == old || got != inode(t, path) {
		t.Errorf("locked inode %d, old file %d, file at path %d", got, old, inode(t, path))
	}
	rtest.OK(t, l.Unlock())
}

// TestDoubleStat replaces or removes the lock file between Flock's open and
// its flock: try-once gives ErrReplaced, a wait moves on to the new file.
func TestDoubleStat(t *testing.T) {
	tests := []struct {
		name      string
		recreate  bool
		timeout   time.Duration
		wantError error
	}{
		{name: "removed, try once", wantError: ErrReplaced},
		{name: "replaced, try once", recreate: true, wantError: ErrReplaced},
		{name: "removed, waiting", timeout: time.Hour},
		{name: "replaced, waiting", recreate: true, timeout: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lock")
			rtest.OK(t, os.WriteFile(path, nil, 0o644))
			old := inode(t, path)
			replaced := 0
			f := newFlocker(fsys.Real{}, fsys.Keep)
			f.beforeFlock = func() {
				if replaced > 0 {
					return
				}
				rtest.OK(t, os.Remove(path))
				if tt.recreate {
					rtest.OK(t, os.WriteFile(path, nil, 0o644))
				}
			}
			f.afterReplaced = func() { replaced++ }
			l, err := f.lock(t.Context(), path, Exclusive, tt.timeout)
			rtest.Equal(t, "replaced", 1, replaced)
			if tt.wantError != nil {
				if !errors.Is(err, tt.wantError) {
					t.Fatalf("want %v, got %v", tt.wantError, err)
				}
				return
			}
			rtest.OK(t, err)
			// The inode number of the removed file may be reused, so
			// only the recreated case can tell old and new apart by it.
			if got := fdInode(t, l); got != inode(t, path) || tt.recreate && got == old {
				t.Errorf("locked inode %d, old file %d, file at path %d", got, old, inode(t, path))
			}
			rtest.OK(t, l.Unlock())
		})
	}
}

// TestExclusionUnderRemovals runs processes that take the exclusive lock in
// a loop and remove the lock file every other time (the pattern double-stat
// exists for); each proves it is alone in the critical section by creating a
// witness file with O_EXCL.
func TestExclusionUnderRemovals(t *testing.T) {
	dir := t.TempDir()
	path, witness := filepath.Join(dir, "lock"), filepath.Join(dir, "witness")
	rounds := 300
	if os.Getenv("CHUNKGC_LONG") != "" {
		rounds = 5000
	}
	var procs []*proc
	for range 3 {
		procs = append(procs, startProc(t, "stress", path, strconv.Itoa(rounds), witness))
	}
	for _, p := range procs {
		p.expect("done")
	}
}

func TestUnlockTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	l, err := Flock(t.Context(), path, Exclusive, 0)
	rtest.OK(t, err)
	rtest.OK(t, l.Unlock())
	if err := l.Unlock(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Unlock: want fs.ErrClosed, got %v", err)
	}
	if err := l.RemoveAndUnlock(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("RemoveAndUnlock after Unlock: want fs.ErrClosed, got %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("lock file: %v", err)
	}
}

func TestUnlockConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	l, err := Flock(t.Context(), path, Exclusive, 0)
	rtest.OK(t, err)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = l.Unlock() })
	}
	wg.Wait()
	succeeded := 0
	for _, err := range errs {
		if err == nil {
			succeeded++
		} else if !errors.Is(err, fs.ErrClosed) {
			t.Errorf("Unlock: %v", err)
		}
	}
	rtest.Equal(t, "succeeded", 1, succeeded)
}

func TestRemoveAndUnlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	l, err := Flock(t.Context(), path, Exclusive, 0)
	rtest.OK(t, err)
	rtest.OK(t, l.RemoveAndUnlock())
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("lock file after RemoveAndUnlock: %v", err)
	}
	if err := l.Unlock(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("Unlock after RemoveAndUnlock: want fs.ErrClosed, got %v", err)
	}
}

// TestRemoveAndUnlockShared: a shared holder may not remove the file; the
// call still releases its lock.
func TestRemoveAndUnlockShared(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	l, err := Flock(t.Context(), path, Shared, 0)
	rtest.OK(t, err)
	if err := l.RemoveAndUnlock(); err == nil {
		t.Fatal("RemoveAndUnlock of a shared lock succeeded")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("lock file: %v", err)
	}
	l, err = Flock(t.Context(), path, Exclusive, 0) // released
	rtest.OK(t, err)
	rtest.OK(t, l.Unlock())
}

// TestRemoveAndUnlockReplaced: a holder whose file was replaced behind its
// back (a protocol violation) does not remove the new file.
func TestRemoveAndUnlockReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	l, err := Flock(t.Context(), path, Exclusive, 0)
	rtest.OK(t, err)
	rtest.OK(t, os.Remove(path))
	rtest.OK(t, os.WriteFile(path, nil, 0o644))
	if err := l.RemoveAndUnlock(); !errors.Is(err, ErrReplaced) {
		t.Fatalf("want ErrReplaced, got %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("new lock file: %v", err)
	}
}

func TestFlockInvalidMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	if _, err := Flock(t.Context(), path, 0, 0); err == nil {
		t.Fatal("Flock with mode 0 succeeded")
	}
}

// TestFlockSymlink: a lock file is never a symlink (O_NOFOLLOW).
func TestFlockSymlink(t *testing.T) {
	dir := t.TempDir()
	target, path := filepath.Join(dir, "target"), filepath.Join(dir, "lock")
	rtest.OK(t, os.WriteFile(target, nil, 0o644))
	rtest.OK(t, os.Symlink(target, path))
	if _, err := Flock(t.Context(), path, Exclusive, 0); err == nil {
		t.Fatal("Flock through a symlink succeeded")
	}
}

// TestOFDLockConflictsWithPOSIXReadLock: a PBS-style classic read lock held
// by another process keeps OFDLock out until that process exits.
func TestOFDLockConflictsWithPOSIXReadLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".lock")
	rtest.OK(t, os.WriteFile(path, nil, 0o644))
	h := startProc(t, "posix-rdlock", path)
	h.expect("locked")
	_, err := OFDLock(path)
	le, isLocked := errors.AsType[*LockedError](err)
	if !isLocked {
		t.Fatalf("want *LockedError, got %v", err)
	}
	rtest.Equal(t, "le.Path", path, le.Path)
	h.stop()
	l, err := OFDLock(path)
	rtest.OK(t, err)
	rtest.OK(t, l.Unlock())
}

// TestOFDLockSurvivesClose: closing another fd of .lock in this process
// does not drop the OFD lock (it would drop a classic POSIX lock).
func TestOFDLockSurvivesClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".lock")
	l, err := OFDLock(path) // creates it
	rtest.OK(t, err)
	f, err := os.Open(path)
	rtest.OK(t, err)
	rtest.OK(t, f.Close())

	h := startProc(t, "ofd", path)
	h.expect("busy")
	// Another open file description in this process conflicts too.
	if _, err := OFDLock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second OFDLock in this process: want ErrLocked, got %v", err)
	}

	rtest.OK(t, l.Unlock())
	if err := l.Unlock(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Unlock: want fs.ErrClosed, got %v", err)
	}
	h = startProc(t, "ofd", path)
	h.expectLocked()
}

// TestOFDLockCreatesOwnedLikeParent: as root, a missing .lock is created
// with the owner of the store base, so PBS (running as backup) can open it.
func TestOFDLockCreatesOwnedLikeParent(t *testing.T) {
	rtest.RequireRoot(t)
	base := filepath.Join(t.TempDir(), "store")
	rtest.OK(t, os.Mkdir(base, 0o755))
	rtest.OK(t, os.Chown(base, 34, 34))
	path := filepath.Join(base, ".lock")
	l, err := OFDLock(path)
	rtest.OK(t, err)
	defer l.Unlock()
	uid, gid := owner(t, path)
	rtest.Equal(t, "uid", uint32(34), uid)
	rtest.Equal(t, "gid", uint32(34), gid)
	st, err := os.Stat(path)
	rtest.OK(t, err)
	if perm := st.Mode().Perm(); perm&^0o644 != 0 {
		t.Errorf("mode %v, want at most 0644", perm)
	}
}
