package backup

import (
	"os"
	"path/filepath"
	"testing"

	"chunkgc/datastore"
	"chunkgc/internal/nofollow"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
)

// isSymlink reports whether p is a symlink (not followed).
func isSymlink(t testing.TB, p string) bool {
	t.Helper()
	fi, err := os.Lstat(p)
	rtest.OK(t, err)
	return fi.Mode()&os.ModeSymlink != 0
}

// TestEscapeForgetAndIngest plants, as the backup user, symlinks to the
// victim tree in place of the namespace, type, group and snapshot
// components forget and ingest resolve: each is an error naming the
// component, nothing outside the store changes, and the planted link is not
// removed either. Then a forget of a snapshot holding symlinks to the
// victim removes the links, not what they point to.
func TestEscapeForgetAndIngest(t *testing.T) {
	rtest.RequireRoot(t)
	s := newTestStore(t)
	src := writeSource(t, "disk", 2*MinChunkSize, 21)
	g := datastore.Group{Type: "vm", ID: "100"}
	s.ingest(t, g, t1, src)
	storetest.ChownTree(t, s.base)
	storetest.Reachable(t, s.base)
	v := storetest.NewVictim(t)
	// The victim holds the snapshot an attacker wants forget to remove.
	victimTarget, err := datastore.ParseSnapshot(victimSnap)
	rtest.OK(t, err)

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
			snap.NS, err = datastore.ParseNamespace(tt.ns)
			rtest.OK(t, err)
			err := s.forget(t, snap)
			link := filepath.Join(s.base, tt.link)
			rtest.ErrorAt(t, "forget", err, link, datastore.ErrUnexpectedEntry, nofollow.ErrSymlink)
			rtest.Equal(t, "planted link kept", true, isSymlink(t, link))
			v.Check(t)
			storetest.AsBackup(t, s.base, tt.restore)
		})
	}

	ingestTests := []struct {
		name  string
		plant string
		g     datastore.Group
		link  string
	}{
		{name: "type dir", plant: `ln -s "$V/vm" ct`, g: datastore.Group{Type: "ct", ID: "100"}, link: "ct"},
		{name: "group", plant: `ln -s "$V/vm/100" vm/200`, g: datastore.Group{Type: "vm", ID: "200"}, link: "vm/200"},
		{name: "namespace", plant: `mkdir -p ns && ln -s "$V/ns/a" ns/b`, g: datastore.Group{NS: datastore.Namespace{"b"}, Type: "vm", ID: "100"}, link: "ns/b"},
		{name: "ns", plant: `rmdir ns && ln -s "$V/ns" ns`, g: datastore.Group{NS: datastore.Namespace{"a"}, Type: "vm", ID: "100"}, link: "ns"},
	}
	for _, tt := range ingestTests {
		t.Run("ingest through "+tt.name, func(t *testing.T) {
			storetest.AsBackup(t, s.base, "V="+v.Dir+"; "+tt.plant)
			_, err := Ingest(t.Context(), s.store, s.lk, tt.g, []string{src}, IngestOptions{ChunkSize: MinChunkSize, Now: at(t, t2)}, s.log)
			link := filepath.Join(s.base, tt.link)
			rtest.ErrorAt(t, "ingest", err, link, datastore.ErrUnexpectedEntry, nofollow.ErrSymlink)
			rtest.Equal(t, "planted link kept", true, isSymlink(t, link))
			v.Check(t)
			rtest.OK(t, os.Remove(link))
		})
	}

	t.Run("forget removes planted links, not their targets", func(t *testing.T) {
		snap := s.ingest(t, g, t2, src)
		dir := filepath.Join(s.base, snap.RelPath())
		storetest.ChownTree(t, dir)
		storetest.AsBackup(t, dir, `V=`+v.Dir+`; ln -s "$V" victim && ln -s "$V/etc/passwd" passwd &&
			ln -s "$V/drive.fidx" z.fidx && mkdir sub && ln -s "$V/bb9f" sub/bb9f && ln -s "$V/vm/100" sub/g && mkfifo fifo`)
		rtest.OK(t, s.forget(t, snap))
		rtest.Equal(t, "snapshot removed", false, exists(t, dir))
		v.Check(t)
		if _, err := os.Lstat(filepath.Join(v.Dir, "etc/passwd")); err != nil {
			t.Errorf("victim file: %v", err)
		}
		snaps, err := datastore.ListSnapshots(s.base, g)
		rtest.OK(t, err)
		rtest.Equal(t, "snapshots left", 1, len(snaps))
	})

	v.Check(t)
}
