package backup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"chunkgc/datastore"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/locking"
)

// lockFile returns the path of the lock file of a group or snapshot.
func (s *testStore) lockFile(ns datastore.Namespace, rel string) string {
	return filepath.Join(s.lk.Path(), locking.LockFileName(ns, rel))
}

func TestForget(t *testing.T) {
	s := newTestStore(t)
	g := datastore.Group{Type: "vm", ID: "100"}
	src := writeSource(t, "disk", 3*MinChunkSize, 11)
	old := s.ingest(t, g, t1, src)
	newer := s.ingest(t, g, t2, src)
	rtest.Equal(t, "snapshot lock file", true, exists(t, s.lockFile(nil, old.Group.Type+"/"+old.ID+"/"+t1)))

	rtest.OK(t, s.forget(t, old))
	rtest.Equal(t, "forgotten snapshot", false, exists(t, filepath.Join(s.base, old.RelPath())))
	rtest.Equal(t, "its lock file", false, exists(t, s.lockFile(nil, "vm/100/"+t1)))
	rtest.Equal(t, "other snapshot", true, exists(t, filepath.Join(s.base, newer.RelPath(), "disk"+imageSuffix)))
	rtest.Equal(t, "group owner", true, exists(t, filepath.Join(s.base, "vm/100", ownerName)))

	// The last snapshot takes the group, and its lock file, with it.
	rtest.OK(t, s.forget(t, newer))
	rtest.Equal(t, "group", false, exists(t, filepath.Join(s.base, "vm/100")))
	rtest.Equal(t, "group lock file", false, exists(t, s.lockFile(nil, "vm/100")))
	rtest.Equal(t, "snapshot lock file", false, exists(t, s.lockFile(nil, "vm/100/"+t2)))
	rtest.Equal(t, "type dir", true, exists(t, filepath.Join(s.base, "vm")))
	rtest.Equal(t, "removed-group log lines", 1, s.logs.FilterMessage("removed empty group").Len())

	// A new backup recreates the group.
	s.ingest(t, g, t2, src)
	rtest.Equal(t, "group owner", true, exists(t, filepath.Join(s.base, "vm/100", ownerName)))
}

func TestForgetNamespace(t *testing.T) {
	s := newTestStore(t)
	ns, err := datastore.ParseNamespace("a/b")
	rtest.OK(t, err)
	g := datastore.Group{NS: ns, Type: "ct", ID: "9"}
	snap := s.ingest(t, g, t1, writeSource(t, "disk", 1000, 12))
	rtest.OK(t, s.forget(t, snap))
	rtest.Equal(t, "group", false, exists(t, filepath.Join(s.base, "ns/a/ns/b/ct/9")))
	rtest.Equal(t, "group lock file", false, exists(t, s.lockFile(ns, "ct/9")))
	// Namespaces are not removed with their last group.
	nss, err := datastore.ListNamespaces(s.base)
	rtest.OK(t, err)
	rtest.Equal(t, "namespaces", 3, len(nss))
}

func TestForgetRefused(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, s *testStore, snap datastore.Snapshot) // may return a cleanup via t.Cleanup
		want    error
	}{
		{
			name: "protected",
			prepare: func(t *testing.T, s *testStore, snap datastore.Snapshot) {
				rtest.OK(t, os.WriteFile(filepath.Join(s.base, snap.RelPath(), protectedName), nil, 0o644))
			},
			want: ErrProtected,
		},
		{
			name: "snapshot in use",
			prepare: func(t *testing.T, s *testStore, snap datastore.Snapshot) {
				l, err := s.lk.LockSnapshot(t.Context(), nil, snap.Type, snap.ID, snap.TimeString(), locking.Shared, 0)
				rtest.OK(t, err)
				t.Cleanup(func() { rtest.OK(t, l.Unlock()) })
			},
			want: locking.ErrLocked,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t)
			snap := s.ingest(t, datastore.Group{Type: "vm", ID: "1"}, t1, writeSource(t, "disk", 2*MinChunkSize, 13))
			tt.prepare(t, s, snap)
			err := s.forget(t, snap)
			if !errors.Is(err, tt.want) {
				t.Fatalf("want %v, got %v", tt.want, err)
			}
			rtest.Equal(t, "snapshot index", true, exists(t, filepath.Join(s.base, snap.RelPath(), "disk"+imageSuffix)))
			rtest.Equal(t, "snapshot manifest", true, exists(t, filepath.Join(s.base, snap.RelPath(), manifestName)))
		})
	}
}

func TestForgetMissing(t *testing.T) {
	s := newTestStore(t)
	snap, err := datastore.ParseSnapshot("vm/1/" + t1)
	rtest.OK(t, err)
	err = s.forget(t, snap)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing snapshot: want fs.ErrNotExist, got %v", err)
	}
	rtest.Equal(t, "lock file left", false, exists(t, s.lockFile(nil, "vm/1/"+t1)))

	if err := s.forget(t, datastore.Snapshot{Group: datastore.Group{Type: "vm", ID: "1"}}); err == nil {
		t.Error("snapshot without time: want an error")
	}
}

// TestForgetKeepsGroup covers the cases where the last snapshot goes but
// the group stays.
func TestForgetKeepsGroup(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, s *testStore)
		log     string
	}{
		{
			name: "group locked by a writer",
			prepare: func(t *testing.T, s *testStore) {
				l, err := s.lk.LockGroup(t.Context(), nil, "vm", "1", locking.Exclusive, 0)
				rtest.OK(t, err)
				t.Cleanup(func() { rtest.OK(t, l.Unlock()) })
			},
			log: "group in use, not checking whether it is empty",
		},
		{
			name: "group notes",
			prepare: func(t *testing.T, s *testStore) {
				rtest.OK(t, os.WriteFile(filepath.Join(s.base, "vm/1/notes"), []byte("keep me"), 0o644))
			},
			log: "group holds no snapshot but other entries, kept",
		},
		{
			name: "non-snapshot directory",
			prepare: func(t *testing.T, s *testStore) {
				rtest.OK(t, os.Mkdir(filepath.Join(s.base, "vm/1/not-a-time"), 0o755))
			},
			log: "group holds no snapshot but other entries, kept",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t)
			snap := s.ingest(t, datastore.Group{Type: "vm", ID: "1"}, t1, writeSource(t, "disk", 1000, 14))
			tt.prepare(t, s)
			rtest.OK(t, s.forget(t, snap))
			rtest.Equal(t, "snapshot", false, exists(t, filepath.Join(s.base, snap.RelPath())))
			owner, err := os.ReadFile(filepath.Join(s.base, "vm/1", ownerName))
			rtest.OK(t, err)
			rtest.Equal(t, "owner", DefaultOwner+"\n", string(owner))
			rtest.Equal(t, "log line "+tt.log, 1, s.logs.FilterMessage(tt.log).Len())
		})
	}
}

// TestForgetGroupRace is seed 000's race: Forget found the group empty and
// is about to remove it when another backup creates a snapshot in it. The
// new snapshot must survive.
//
// The writer here does not share Forget's lock directory (a PBS with other
// lock settings), so nothing but the rmdir protects the snapshot. In
// "before owner" it writes while Forget has checked the listing; in "after
// owner" while the owner file is unlinked, so the writer also writes its own
// owner file, which Forget must leave alone.
func TestForgetGroupRace(t *testing.T) {
	tests := []struct {
		name      string
		hook      func(h *forgetHooks, fn func())
		wantOwner string
	}{
		{name: "before owner", hook: func(h *forgetHooks, fn func()) { h.beforeGroupRemoval = fn }, wantOwner: "alice@pbs\n"},
		{name: "after owner", hook: func(h *forgetHooks, fn func()) { h.beforeRmdir = fn }, wantOwner: DefaultOwner + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t)
			g := datastore.Group{Type: "vm", ID: "1"}
			src := writeSource(t, "disk", 3*MinChunkSize, 15)
			old := s.ingest(t, g, t1, src)
			// An owner that differs from what Ingest writes, to see whose
			// owner file survives.
			rtest.OK(t, os.WriteFile(filepath.Join(s.base, "vm/1", ownerName), []byte("alice@pbs\n"), 0o640))

			other, err := locking.OpenDir(filepath.Join(t.TempDir(), "other-locks"), fsys.Keep)
			rtest.OK(t, err)
			var hooks forgetHooks
			var newSnap datastore.Snapshot
			fired := 0
			tt.hook(&hooks, func() {
				fired++
				newSnap, err = Ingest(t.Context(), s.store, other, g, []string{src}, IngestOptions{ChunkSize: MinChunkSize, Now: at(t, t2)}, s.log)
				rtest.OK(t, err)
			})
			rtest.OK(t, forget(t.Context(), s.tree, s.lk, old, nil, s.log, hooks))
			rtest.Equal(t, "hook fired", 1, fired)

			rtest.Equal(t, "old snapshot", false, exists(t, filepath.Join(s.base, old.RelPath())))
			names, err := datastore.IndexFiles(s.base, newSnap)
			rtest.OK(t, err)
			rtest.Equal(t, "new snapshot's index files", []string{"disk" + imageSuffix}, names)
			rtest.Equal(t, "new snapshot's manifest", true, exists(t, filepath.Join(s.base, newSnap.RelPath(), manifestName)))
			owner, err := os.ReadFile(filepath.Join(s.base, "vm/1", ownerName))
			rtest.OK(t, err)
			rtest.Equal(t, "owner", tt.wantOwner, string(owner))
			rtest.Equal(t, "group lock file kept", true, exists(t, s.lockFile(nil, "vm/1")))
			rtest.Equal(t, "kept log line", 1, s.logs.FilterMessage("group got new entries while being removed, kept").Len())
			// storetest.CheckReferenced (cleanup) checks the new snapshot's
			// chunks.
		})
	}
}

// TestForgetGroupRaceCooperating races Forget's group removal against an
// Ingest that shares the lock directory: it waits for the group lock that
// Forget holds. Whichever way the lock hand-over goes, the new snapshot and
// its group exist afterwards.
func TestForgetGroupRaceCooperating(t *testing.T) {
	s := newTestStore(t)
	g := datastore.Group{Type: "vm", ID: "1"}
	src := writeSource(t, "disk", 3*MinChunkSize, 16)
	old := s.ingest(t, g, t1, src)

	var wg sync.WaitGroup
	var newSnap datastore.Snapshot
	var ingestErr error
	hooks := forgetHooks{beforeGroupRemoval: func() {
		wg.Go(func() {
			newSnap, ingestErr = Ingest(t.Context(), s.store, s.lk, g, []string{src},
				IngestOptions{ChunkSize: MinChunkSize, Now: at(t, t2)}, s.log)
		})
	}}
	rtest.OK(t, forget(t.Context(), s.tree, s.lk, old, nil, s.log, hooks))
	wg.Wait()
	rtest.OK(t, ingestErr)

	names, err := datastore.IndexFiles(s.base, newSnap)
	rtest.OK(t, err)
	rtest.Equal(t, "new snapshot's index files", []string{"disk" + imageSuffix}, names)
	rtest.Equal(t, "owner", true, exists(t, filepath.Join(s.base, "vm/1", ownerName)))
	snaps, err := datastore.ListSnapshots(s.base, g)
	rtest.OK(t, err)
	rtest.Equal(t, "snapshots", 1, len(snaps))
}
