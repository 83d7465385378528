package locking

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
)

var (
	t1 = time.Date(2025, 4, 4, 15, 2, 49, 123456789, time.UTC)
	t2 = t1.Add(90 * time.Minute)
)

func writerEntries(t *testing.T, d *Dir) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(d.Path(), writersDir))
	rtest.OK(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func oldestWriter(t *testing.T, d *Dir, log *zap.Logger) (time.Time, int, bool) {
	t.Helper()
	oldest, live, found, err := d.OldestWriter(log)
	rtest.OK(t, err)
	return oldest, live, found
}

// TestWriterRegistryLive: a writer in another process and one in this
// process are live; the oldest start wins; closing them empties the registry.
func TestWriterRegistryLive(t *testing.T) {
	d, err := OpenDir(t.TempDir(), fsys.Keep)
	rtest.OK(t, err)
	_, live, found := oldestWriter(t, d, zaptest.NewLogger(t))
	rtest.Equal(t, "live", 0, live)
	rtest.Equal(t, "found", false, found)

	h := startProc(t, "writer", d.Path(), strconv.FormatInt(t1.UnixNano(), 10))
	reg := h.line()
	if !strings.HasPrefix(reg, "registered ") {
		t.Fatalf("helper: %s", reg)
	}
	w, err := d.RegisterWriter(t2)
	rtest.OK(t, err)
	rtest.Equal(t, "w.Start()", t2, w.Start())

	oldest, live, found := oldestWriter(t, d, zaptest.NewLogger(t))
	rtest.Equal(t, "live", 2, live)
	rtest.Equal(t, "found", true, found)
	if !oldest.Equal(t1) {
		t.Errorf("oldest %v, want %v", oldest, t1)
	}

	rtest.OK(t, w.Close())
	if err := w.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Close: want fs.ErrClosed, got %v", err)
	}
	oldest, live, _ = oldestWriter(t, d, zaptest.NewLogger(t))
	rtest.Equal(t, "live", 1, live)
	if !oldest.Equal(t1) {
		t.Errorf("oldest %v, want %v", oldest, t1)
	}
	h.send("close")
	h.expect("closed")
	_, live, found = oldestWriter(t, d, zaptest.NewLogger(t))
	rtest.Equal(t, "live", 0, live)
	rtest.Equal(t, "found", false, found)
	rtest.Equal(t, "len(writerEntries(t, d))", 0, len(writerEntries(t, d)))
}

// TestWriterRegistryKilledWriter: a writer process killed with SIGKILL leaves
// its entry behind, unlocked; OldestWriter removes it as stale, counts it,
// and nothing is blocked afterwards.
func TestWriterRegistryKilledWriter(t *testing.T) {
	d, err := OpenDir(t.TempDir(), fsys.Keep)
	rtest.OK(t, err)
	h := startProc(t, "writer", d.Path(), strconv.FormatInt(t1.UnixNano(), 10))
	name, found := strings.CutPrefix(h.line(), "registered ")
	if !found {
		t.Fatal("helper did not register")
	}
	h.kill()
	rtest.Equal(t, "strings.Join(writerEntries(t, d), \",\")", name, strings.Join(writerEntries(t, d), ","))

	core, logs := observer.New(zapcore.InfoLevel)
	_, live, found := oldestWriter(t, d, zap.New(core))
	rtest.Equal(t, "live", 0, live)
	rtest.Equal(t, "found", false, found)
	rtest.Equal(t, "len(writerEntries(t, d))", 0, len(writerEntries(t, d)))
	stale := logs.FilterMessage("removed stale writer registry entries").All()
	if len(stale) != 1 || stale[0].ContextMap()["stale"] != int64(1) {
		t.Fatalf("want one log line with stale=1, got %v", logs.All())
	}

	// Nothing is left blocking: a new writer registers and counts, the GC
	// lock is free.
	w, err := d.RegisterWriter(t2)
	rtest.OK(t, err)
	oldest, live, _ := oldestWriter(t, d, zaptest.NewLogger(t))
	rtest.Equal(t, "live", 1, live)
	if !oldest.Equal(t2) {
		t.Errorf("oldest %v, want %v", oldest, t2)
	}
	rtest.OK(t, w.Close())
	gc, err := d.GCLock()
	rtest.OK(t, err)
	rtest.OK(t, gc.Unlock())
}

// TestWriterRegistryHiddenAndForeign covers entries that are not live
// writers: hidden ones (registrations in progress or abandoned), a directory,
// and a locked entry without a start time.
func TestWriterRegistryHiddenAndForeign(t *testing.T) {
	d, err := OpenDir(t.TempDir(), fsys.Keep)
	rtest.OK(t, err)
	wdir := filepath.Join(d.Path(), writersDir)
	// Abandoned registration: hidden, unlocked. Reaped.
	rtest.OK(t, os.WriteFile(filepath.Join(wdir, ".tmp-dead"), nil, 0o644))
	// Registration in progress: hidden, locked. Ignored and kept.
	busy, err := Flock(t.Context(), filepath.Join(wdir, ".tmp-busy"), Exclusive, 0)
	rtest.OK(t, err)
	// Not a regular file: skipped with a warning.
	rtest.OK(t, os.Mkdir(filepath.Join(wdir, "junk"), 0o755))
	rtest.OK(t, os.Symlink("/dev/null", filepath.Join(wdir, "link")))
	// Locked, but no start time inside: counts with its mtime.
	legacy := filepath.Join(wdir, "legacy")
	rtest.OK(t, os.WriteFile(legacy, []byte("not a time"), 0o644))
	rtest.OK(t, os.Chtimes(legacy, t1, t1))
	legacyLock, err := Flock(t.Context(), legacy, Exclusive, 0)
	rtest.OK(t, err)

	core, logs := observer.New(zapcore.InfoLevel)
	oldest, live, found := oldestWriter(t, d, zap.New(core))
	rtest.Equal(t, "live", 1, live)
	rtest.Equal(t, "found", true, found)
	if !oldest.Equal(t1) {
		t.Errorf("oldest %v, want %v (mtime)", oldest, t1)
	}
	rtest.Equal(t, "strings.Join(writerEntries(t, d), \",\")", ".tmp-busy,junk,legacy,link", strings.Join(writerEntries(t, d), ","))
	rtest.Equal(t, "logs.FilterMessage(\"writer registry entry holds no start time, using its modification time\").Len()", 1, logs.FilterMessage("writer registry entry holds no start time, using its modification time").Len())
	rtest.Equal(t, "logs.FilterMessage(\"skipping writer registry entry that is not a regular file\").Len()", 2, logs.FilterMessage("skipping writer registry entry that is not a regular file").Len())
	rtest.Equal(t, "logs.FilterMessage(\"removed stale writer registry entries\").Len()", 1, logs.FilterMessage("removed stale writer registry entries").Len())

	rtest.OK(t, busy.Unlock())
	rtest.OK(t, legacyLock.Unlock())
	_, live, found = oldestWriter(t, d, zaptest.NewLogger(t))
	rtest.Equal(t, "live", 0, live)
	rtest.Equal(t, "found", false, found)
	rtest.Equal(t, "strings.Join(writerEntries(t, d), \",\")", "junk,link", strings.Join(writerEntries(t, d), ","))
}

// TestWriterRegistryRace registers writers while OldestWriter runs in a
// loop, reaping the hidden entries of registrations in progress whenever it
// catches one unlocked. Every writer must be counted from the moment
// RegisterWriter returns until Close.
func TestWriterRegistryRace(t *testing.T) {
	d, err := OpenDir(t.TempDir(), fsys.Keep)
	rtest.OK(t, err)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var reaperErr error
	wg.Go(func() {
		for !stop.Load() {
			if _, _, _, err := d.OldestWriter(nil); err != nil {
				reaperErr = err
				return
			}
		}
	})
	defer func() {
		stop.Store(true)
		wg.Wait()
		rtest.OK(t, reaperErr)
	}()
	rounds := 300
	if os.Getenv("CHUNKGC_LONG") != "" {
		rounds = 10000
	}
	for i := range rounds {
		start := t1.Add(time.Duration(i) * time.Second)
		w, err := d.RegisterWriter(start)
		rtest.OK(t, err)
		oldest, live, found := oldestWriter(t, d, nil)
		if live != 1 || !found || !oldest.Equal(start) {
			t.Fatalf("round %d: live %d found %v oldest %v, want 1 writer from %v", i, live, found, oldest, start)
		}
		rtest.OK(t, w.Close())
	}
}

// TestRegisterWriterRetries: a GC that reaps the hidden entry between its
// creation and the writer's flock makes registration start over, whether the
// GC still holds the entry's lock (EWOULDBLOCK) or has already removed it
// (the writer locks an orphan and its rename fails with ENOENT).
func TestRegisterWriterRetries(t *testing.T) {
	d, err := OpenDir(t.TempDir(), fsys.Keep)
	rtest.OK(t, err)
	wdir := filepath.Join(d.Path(), writersDir)
	var held *Lock
	calls := 0
	d.afterTmpCreate = func(tmp string) {
		calls++
		switch calls {
		case 1: // a GC is in the middle of reaping it
			held, err = Flock(t.Context(), tmp, Exclusive, 0)
			rtest.OK(t, err)
		case 2: // a GC reaped it completely
			l, err := Flock(t.Context(), tmp, Exclusive, 0)
			rtest.OK(t, err)
			rtest.OK(t, l.RemoveAndUnlock())
		}
	}
	w, err := d.RegisterWriter(t1)
	rtest.OK(t, err)
	rtest.Equal(t, "calls", 3, calls)
	rtest.OK(t, held.RemoveAndUnlock()) // the first GC finishes its removal

	name := filepath.Base(w.Path())
	rtest.Equal(t, "filepath.Dir(w.Path())", wdir, filepath.Dir(w.Path()))
	rtest.Equal(t, "strings.Join(writerEntries(t, d), \",\")", name, strings.Join(writerEntries(t, d), ","))
	content, err := os.ReadFile(w.Path())
	rtest.OK(t, err)
	rtest.Equal(t, "string(content)", strconv.FormatInt(t1.UnixNano(), 10), string(content))
	oldest, live, _ := oldestWriter(t, d, nil)
	rtest.Equal(t, "live", 1, live)
	if !oldest.Equal(t1) {
		t.Errorf("oldest %v, want %v", oldest, t1)
	}
	rtest.OK(t, w.Close())
	rtest.Equal(t, "len(writerEntries(t, d))", 0, len(writerEntries(t, d)))
}
