package datastore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"chunkgc/internal/fsys"
	"chunkgc/locking"
)

// lockFile returns the path of the lock file of a group or snapshot.
func (s *testStore) lockFile(ns Namespace, rel string) string {
	return filepath.Join(s.lk.Path(), locking.LockFileName(ns, rel))
}

func TestForget(t *testing.T) {
	s := newTestStore(t)
	g := Group{Type: "vm", ID: "100"}
	src := writeSource(t, "disk", 3*MinChunkSize, 11)
	old := s.ingest(t, g, t1, src)
	newer := s.ingest(t, g, t2, src)
	equal(t, "snapshot lock file", true, exists(t, s.lockFile(nil, old.Group.Type+"/"+old.ID+"/"+t1)))

	ok(t, Forget(t.Context(), s.base, s.lk, old, s.log))
	equal(t, "forgotten snapshot", false, exists(t, filepath.Join(s.base, old.RelPath())))
	equal(t, "its lock file", false, exists(t, s.lockFile(nil, "vm/100/"+t1)))
	equal(t, "other snapshot", true, exists(t, filepath.Join(s.base, newer.RelPath(), "disk"+imageSuffix)))
	equal(t, "group owner", true, exists(t, filepath.Join(s.base, "vm/100", ownerName)))

	// The last snapshot takes the group, and its lock file, with it.
	ok(t, Forget(t.Context(), s.base, s.lk, newer, s.log))
	equal(t, "group", false, exists(t, filepath.Join(s.base, "vm/100")))
	equal(t, "group lock file", false, exists(t, s.lockFile(nil, "vm/100")))
	equal(t, "snapshot lock file", false, exists(t, s.lockFile(nil, "vm/100/"+t2)))
	equal(t, "type dir", true, exists(t, filepath.Join(s.base, "vm")))
	equal(t, "removed-group log lines", 1, s.logs.FilterMessage("removed empty group").Len())

	// A new backup recreates the group.
	s.ingest(t, g, t2, src)
	equal(t, "group owner", true, exists(t, filepath.Join(s.base, "vm/100", ownerName)))
}

func TestForgetNamespace(t *testing.T) {
	s := newTestStore(t)
	ns, err := ParseNamespace("a/b")
	ok(t, err)
	g := Group{NS: ns, Type: "ct", ID: "9"}
	snap := s.ingest(t, g, t1, writeSource(t, "disk", 1000, 12))
	ok(t, Forget(t.Context(), s.base, s.lk, snap, s.log))
	equal(t, "group", false, exists(t, filepath.Join(s.base, "ns/a/ns/b/ct/9")))
	equal(t, "group lock file", false, exists(t, s.lockFile(ns, "ct/9")))
	// Namespaces are not removed with their last group.
	nss, err := ListNamespaces(s.base)
	ok(t, err)
	equal(t, "namespaces", 3, len(nss))
}

func TestForgetRefused(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, s *testStore, snap Snapshot) // may return a cleanup via t.Cleanup
		want    error
	}{
		{
			name: "protected",
			prepare: func(t *testing.T, s *testStore, snap Snapshot) {
				ok(t, os.WriteFile(filepath.Join(s.base, snap.RelPath(), protectedName), nil, 0o644))
			},
			want: ErrProtected,
		},
		{
			name: "snapshot in use",
			prepare: func(t *testing.T, s *testStore, snap Snapshot) {
				l, err := s.lk.LockSnapshot(t.Context(), nil, snap.Type, snap.ID, snap.TimeString(), locking.Shared, 0)
				ok(t, err)
				t.Cleanup(func() { ok(t, l.Unlock()) })
			},
			want: locking.ErrLocked,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t)
			snap := s.ingest(t, Group{Type: "vm", ID: "1"}, t1, writeSource(t, "disk", 2*MinChunkSize, 13))
			tt.prepare(t, s, snap)
			err := Forget(t.Context(), s.base, s.lk, snap, s.log)
			if !errors.Is(err, tt.want) {
				t.Fatalf("want %v, got %v", tt.want, err)
			}
			equal(t, "snapshot index", true, exists(t, filepath.Join(s.base, snap.RelPath(), "disk"+imageSuffix)))
			equal(t, "snapshot manifest", true, exists(t, filepath.Join(s.base, snap.RelPath(), manifestName)))
		})
	}
}

func TestForgetMissing(t *testing.T) {
	s := newTestStore(t)
	snap, err := ParseSnapshot("vm/1/" + t1)
	ok(t, err)
	err = Forget(t.Context(), s.base, s.lk, snap, s.log)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing snapshot: want fs.ErrNotExist, got %v", err)
	}
	equal(t, "lock file left", false, exists(t, s.lockFile(nil, "vm/1/"+t1)))

	if err := Forget(t.Context(), s.base, s.lk, Snapshot{Group: Group{Type: "vm", ID: "1"}}, s.log); err == nil {
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
				ok(t, err)
				t.Cleanup(func() { ok(t, l.Unlock()) })
			},
			log: "group in use, not checking whether it is empty",
		},
		{
			name: "group notes",
			prepare: func(t *testing.T, s *testStore) {
				ok(t, os.WriteFile(filepath.Join(s.base, "vm/1/notes"), []byte("keep me"), 0o644))
			},
			log: "group holds no snapshot but other entries, kept",
		},
		{
			name: "non-snapshot directory",
			prepare: func(t *testing.T, s *testStore) {
				ok(t, os.Mkdir(filepath.Join(s.base, "vm/1/not-a-time"), 0o755))
			},
			log: "group holds no snapshot but other entries, kept",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t)
			snap := s.ingest(t, Group{Type: "vm", ID: "1"}, t1, writeSource(t, "disk", 1000, 14))
			tt.prepare(t, s)
			ok(t, Forget(t.Context(), s.base, s.lk, snap, s.log))
			equal(t, "snapshot", false, exists(t, filepath.Join(s.base, snap.RelPath())))
			owner, err := os.ReadFile(filepath.Join(s.base, "vm/1", ownerName))
			ok(t, err)
			equal(t, "owner", DefaultOwner+"\n", string(owner))
			equal(t, "log line "+tt.log, 1, s.logs.FilterMessage(tt.log).Len())
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
			g := Group{Type: "vm", ID: "1"}
			src := writeSource(t, "disk", 3*MinChunkSize, 15)
			old := s.ingest(t, g, t1, src)
			// An owner that differs from what Ingest writes, to see whose
			// owner file survives.
			ok(t, os.WriteFile(filepath.Join(s.base, "vm/1", ownerName), []byte("alice@pbs\n"), 0o640))

			other, err := locking.OpenDir(filepath.Join(t.TempDir(), "other-locks"), fsys.Keep)
			ok(t, err)
			var hooks forgetHooks
			var newSnap Snapshot
			fired := 0
			tt.hook(&hooks, func() {
				fired++
				newSnap, err = Ingest(t.Context(), s.store, other, g, []string{src}, IngestOptions{ChunkSize: MinChunkSize, Now: at(t, t2)}, s.log)
				ok(t, err)
			})
			ok(t, forget(t.Context(), s.base, s.lk, old, s.log, hooks))
			equal(t, "hook fired", 1, fired)

			equal(t, "old snapshot", false, exists(t, filepath.Join(s.base, old.RelPath())))
			names, err := IndexFiles(s.base, newSnap)
			ok(t, err)
			equalLists(t, "new snapshot's index files", []string{"disk" + imageSuffix}, names)
			equal(t, "new snapshot's manifest", true, exists(t, filepath.Join(s.base, newSnap.RelPath(), manifestName)))
			owner, err := os.ReadFile(filepath.Join(s.base, "vm/1", ownerName))
			ok(t, err)
			equal(t, "owner", tt.wantOwner, string(owner))
			equal(t, "group lock file kept", true, exists(t, s.lockFile(nil, "vm/1")))
			equal(t, "kept log line", 1, s.logs.FilterMessage("group got new entries while being removed, kept").Len())
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
	g := Group{Type: "vm", ID: "1"}
	src := writeSource(t, "disk", 3*MinChunkSize, 16)
	old := s.ingest(t, g, t1, src)

	var wg sync.WaitGroup
	var newSnap Snapshot
	var ingestErr error
	hooks := forgetHooks{beforeGroupRemoval: func() {
		wg.Go(func() {
			newSnap, ingestErr = Ingest(t.Context(), s.store, s.lk, g, []string{src},
				IngestOptions{ChunkSize: MinChunkSize, Now: at(t, t2)}, s.log)
		})
	}}
	ok(t, forget(t.Context(), s.base, s.lk, old, s.log, hooks))
	wg.Wait()
	ok(t, ingestErr)

	names, err := IndexFiles(s.base, newSnap)
	ok(t, err)
	equalLists(t, "new snapshot's index files", []string{"disk" + imageSuffix}, names)
	equal(t, "owner", true, exists(t, filepath.Join(s.base, "vm/1", ownerName)))
	snaps, err := ListSnapshots(s.base, g)
	ok(t, err)
	equal(t, "snapshots", 1, len(snaps))
}
