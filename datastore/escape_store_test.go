package datastore

import (
	"os"
	"path/filepath"
	"testing"

	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// isSymlink reports whether p is a symlink (not followed).
func isSymlink(t testing.TB, p string) bool {
	t.Helper()
	fi, err := os.Lstat(p)
	ok(t, err)
	return fi.Mode()&os.ModeSymlink != 0
}

// TestEscapeForgetAndIngest plants, as the backup user, symlinks to the
// victim tree in place of the namespace, type, group and snapshot
// components forget and ingest resolve: each is an error naming the
// component, nothing outside the store changes, and the planted link is not
// removed either. Then a forget of a snapshot holding symlinks to the
// victim removes the links, not what they point to.
func TestEscapeForgetAndIngest(t *testing.T) {
	testfs.RequireRoot(t)
	s := newTestStore(t)
	src := writeSource(t, "disk", 2*MinChunkSize, 21)
	g := Group{Type: "vm", ID: "100"}
	s.ingest(t, g, t1, src)
	storetest.ChownTree(t, s.base)
	reachable(t, s.base)
	v := storetest.NewVictim(t)
	// The victim holds the snapshot an attacker wants forget to remove.
	victimTarget, err := ParseSnapshot(victimSnap)
	ok(t, err)

	forgetTests := []struct {
		name    string
		plant   string // as backup in base; $V is the victim
		ns      string
		link    string // the planted component, relative to base
		restore string // as backup, after the row
	}{
		{name: "type dir", plant: `mv vm .vm && ln -s "$V/vm" vm`, link: "vm", restore: `rm vm && mv .vm vm`},
		{name: "group", plant: `mv vm/100 vm/.100 && ln -s "$V/vm/100" vm/100`, link: "vm/100", restore: `rm vm/100 && mv vm/.100 vm/100`},
		{name: "snapshot", plant: `ln -s "$V/` + victimSnap + `" ` + victimSnap, link: victimSnap, restore: `rm ` + victimSnap},
		{name: "namespace", plant: `mkdir -p ns && ln -s "$V" ns/x`, ns: "x", link: "ns/x", restore: `rm ns/x`},
	}
	for _, tt := range forgetTests {
		t.Run("forget through "+tt.name, func(t *testing.T) {
			storetest.AsBackup(t, s.base, "V="+v.Dir+"; "+tt.plant)
			snap := victimTarget
			snap.NS, err = ParseNamespace(tt.ns)
			ok(t, err)
			err := Forget(t.Context(), s.base, s.lk, snap, s.log)
			link := filepath.Join(s.base, tt.link)
			wantDoubt(t, "forget", err, link, true)
			equal(t, "planted link kept", true, isSymlink(t, link))
			v.Check(t)
			storetest.AsBackup(t, s.base, tt.restore)
		})
	}

	ingestTests := []struct {
		name  string
		plant string
		g     Group
		link  string
	}{
		{name: "type dir", plant: `ln -s "$V/vm" ct`, g: Group{Type: "ct", ID: "100"}, link: "ct"},
		{name: "group", plant: `ln -s "$V/vm/100" vm/200`, g: Group{Type: "vm", ID: "200"}, link: "vm/200"},
		{name: "namespace", plant: `mkdir -p ns && ln -s "$V/ns/a" ns/b`, g: Group{NS: Namespace{"b"}, Type: "vm", ID: "100"}, link: "ns/b"},
		{name: "ns", plant: `rmdir ns && ln -s "$V/ns" ns`, g: Group{NS: Namespace{"a"}, Type: "vm", ID: "100"}, link: "ns"},
	}
	for _, tt := range ingestTests {
		t.Run("ingest through "+tt.name, func(t *testing.T) {
			storetest.AsBackup(t, s.base, "V="+v.Dir+"; "+tt.plant)
			_, err := Ingest(t.Context(), s.store, s.lk, tt.g, []string{src}, IngestOptions{ChunkSize: MinChunkSize, Now: at(t, t2)}, s.log)
			link := filepath.Join(s.base, tt.link)
			wantDoubt(t, "ingest", err, link, true)
			equal(t, "planted link kept", true, isSymlink(t, link))
			v.Check(t)
			ok(t, os.Remove(link))
		})
	}

	t.Run("forget removes planted links, not their targets", func(t *testing.T) {
		snap := s.ingest(t, g, t2, src)
		dir := filepath.Join(s.base, snap.RelPath())
		storetest.ChownTree(t, dir)
		storetest.AsBackup(t, dir, `V=`+v.Dir+`; ln -s "$V" victim && ln -s "$V/etc/passwd" passwd &&
			ln -s "$V/drive.fidx" z.fidx && mkdir sub && ln -s "$V/bb9f" sub/bb9f && ln -s "$V/vm/100" sub/g && mkfifo fifo`)
		ok(t, Forget(t.Context(), s.base, s.lk, snap, s.log))
		equal(t, "snapshot removed", false, exists(t, dir))
		v.Check(t)
		if _, err := os.Lstat(filepath.Join(v.Dir, "etc/passwd")); err != nil {
			t.Errorf("victim file: %v", err)
		}
		snaps, err := ListSnapshots(s.base, g)
		ok(t, err)
		equal(t, "snapshots left", 1, len(snaps))
	})

	v.Check(t)
}
