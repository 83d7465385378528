package main

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// TestFloor: the floor touches every reference (one chunk referenced twice
// is touched twice; chunkgc's digest cache would spare one), keeps the fd
// of every prefix dir they occupy, stats every chunk file of the store and
// removes nothing.
func TestFloor(t *testing.T) {
	const refs, garbage = 30, 12
	chunks, names := storetest.Chunks("chunk", refs+garbage, storetest.Age(48*time.Hour))
	st := storetest.Build(t, storetest.At(filepath.Join(testfs.Tmpfs(t, ""), "store")), chunks,
		storetest.Snapshot("vm/100/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", names[:refs/2+1]...),
		storetest.Snapshot("ct/200/2025-01-01T00:00:00Z", "root.pxar.didx", names[refs/2:refs]...))
	dirs := map[string]bool{}
	for _, n := range names[:refs] {
		dirs[filepath.Base(filepath.Dir(st.Path(n)))] = true
	}
	start := time.Now()
	r, err := run(st.Base(), 4)
	rtest.OK(t, err)
	rtest.Equal(t, "touched", int64(refs+1), r.touched)
	rtest.Equal(t, "prefix dirs kept", int64(len(dirs)), r.touchedDirs)
	rtest.Equal(t, "chunk files stat'ed", int64(refs+garbage), r.stat)
	for i, n := range names {
		var s unix.Stat_t
		rtest.OK(t, unix.Stat(st.Path(n), &s))
		atime := time.Unix(s.Atim.Unix())
		if fresh := !atime.Before(start.Add(-time.Second)); fresh != (i < refs) {
			t.Errorf("%s: atime %v, fresh %v, want fresh only for the %d referenced chunks", n, atime, fresh, refs)
		}
	}
}
