package datastore

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"chunkgc/index"
	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
)

// victimSnap is the snapshot directory every victim tree holds (see
// storetest.NewVictim): what an attacker wants a root-run forget to remove.
const victimSnap = "vm/100/2025-01-01T00:00:00Z"

// attackTree is the tree fixture owned by the backup user, with a victim
// tree outside it.
func attackTree(t *testing.T) (base string, v *storetest.Victim) {
	t.Helper()
	rtest.RequireRoot(t)
	base = filepath.Join(t.TempDir(), "store")
	fixture(t, base, t.TempDir())
	storetest.ChownTree(t, base)
	storetest.Reachable(t, base)
	return base, storetest.NewVictim(t)
}

// needPerl skips (fails under CI) unless perl is there: the attacker uses it
// for renameat2(RENAME_EXCHANGE) and for binding a socket.
func needPerl(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("perl"); err != nil {
		rtest.SkipOrFail(t, "needs perl for the attacker's renameat2 and sockets")
	}
}

// doubt is what an error of doubt matches: ErrUnexpectedEntry, and
// nofollow.ErrSymlink too for a symlink.
func doubt(symlink bool) []error {
	if symlink {
		return []error{ErrUnexpectedEntry, nofollow.ErrSymlink}
	}
	return []error{ErrUnexpectedEntry}
}

// listEverything lists every snapshot and the index files of each, and
// opens every index, through one tree, as GC's mark does.
func listEverything(t *testing.T, base string) error {
	t.Helper()
	tree, err := OpenTree(base)
	rtest.OK(t, err)
	defer tree.Close()
	snaps, err := tree.ListAllSnapshots()
	if err != nil {
		return err
	}
	for _, s := range snaps {
		names, err := tree.IndexFiles(s)
		if err != nil {
			return err
		}
		for _, n := range names {
			r, err := tree.OpenIndex(s.RelPath() + "/" + n)
			if err != nil {
				return err
			}
			r.Close()
		}
	}
	return nil
}

// TestDoubtStopsTree plants, as the backup user, an entry of the wrong type
// where the scheme expects a namespace, ns, a type, a group, a snapshot or
// an index: the walk and the listings stop with an error naming it, and the
// victim tree the symlinks point to is left alone.
func TestDoubtStopsTree(t *testing.T) {
	tests := []struct {
		name    string
		plant   string // shell script run as backup in base; $V is the victim
		path    string // what the error names, relative to base
		symlink bool
		listed  bool // the listings reach it (else only the walk does)
	}{
		{name: "namespace", plant: `ln -s "$V/ns/a" ns/b`, path: "ns/b", symlink: true, listed: true},
		{name: "nested namespace", plant: `ln -s "$V/ns/a" ns/a/ns/x`, path: "ns/a/ns/x", symlink: true, listed: true},
		{name: "ns", plant: `mv ns .ns-real && ln -s "$V/ns" ns`, path: "ns", symlink: true, listed: true},
		{name: "type dir", plant: `mv vm .vm-real && ln -s "$V/vm" vm`, path: "vm", symlink: true, listed: true},
		{name: "group", plant: `ln -s "$V/vm/100" vm/300`, path: "vm/300", symlink: true, listed: true},
		{name: "snapshot", plant: `ln -s "$V/` + victimSnap + `" vm/100/2025-01-01T00:00:00Z`, path: "vm/100/2025-01-01T00:00:00Z", symlink: true, listed: true},
		{name: "index", plant: `ln -s "$V/drive.fidx" vm/100/` + t1 + `/evil.fidx`, path: "vm/100/" + t1 + "/evil.fidx", symlink: true, listed: true},
		{name: "index outside the scheme", plant: `ln -s "$V/drive.fidx" stray/evil.didx`, path: "stray/evil.didx", symlink: true},
		{name: "FIFO index", plant: `mkfifo vm/100/` + t1 + `/p.fidx`, path: "vm/100/" + t1 + "/p.fidx", listed: true},
		{name: "socket index", path: "vm/100/" + t1 + "/s.didx", listed: true,
			plant: `perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 1) or die "$!"' vm/100/` + t1 + `/s.didx`},
		{name: "FIFO group", plant: `mkfifo ct/201`, path: "ct/201", listed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, v := attackTree(t)
			if strings.Contains(tt.plant, "perl") {
				needPerl(t)
			}
			storetest.AsBackup(t, base, "V="+v.Dir+"; "+tt.plant)
			path := filepath.Join(base, tt.path)

			got, err := walkAll(t, base, walkHooks{})
			rtest.ErrorAt(t, "walk", err, path, doubt(tt.symlink)...)
			for _, rel := range got {
				if strings.HasPrefix(rel, tt.path) {
					t.Errorf("walk reported %s", rel)
				}
			}
			err = listEverything(t, base)
			if tt.listed {
				rtest.ErrorAt(t, "listing", err, path, doubt(tt.symlink)...)
			} else if err != nil {
				t.Errorf("listing: %v", err)
			}

			v.Check(t)
			// CheckReferenced cannot open a socket; it is no index.
			if strings.Contains(tt.name, "socket") {
				rtest.OK(t, os.Remove(path))
			}
			storetest.CheckReferenced(t, base)
		})
	}
}

// TestDoubtSwappedWhileWalking swaps, as the backup user, a directory for a
// symlink to the victim between its listing and its open: the walk stops
// naming it, as do the listings when the swap falls between ListSnapshots
// and IndexFiles.
func TestDoubtSwappedWhileWalking(t *testing.T) {
	for _, at := range []string{"vm", "", "vm/100"} {
		t.Run("after listing "+at, func(t *testing.T) {
			base, v := attackTree(t)
			var swap, target string
			switch at {
			case "vm":
				swap, target = "vm/100", "vm/100"
			case "":
				swap, target = "stray", "vm" // outside the scheme: doubt all the same
			case "vm/100":
				swap, target = "vm/100/"+t2, victimSnap
			}
			fired := false
			_, err := walkAll(t, base, walkHooks{afterList: func(rel string, ents []dirent) {
				if rel != at || fired {
					return
				}
				fired = true
				storetest.AsBackup(t, base, `mv `+swap+` `+filepath.Dir(swap)+`/.swapped && ln -s "`+v.Dir+`/`+target+`" `+swap)
			}})
			rtest.Equal(t, "hook fired", true, fired)
			rtest.ErrorAt(t, "walk", err, filepath.Join(base, swap), doubt(true)...)
			v.Check(t)
			storetest.CheckReferenced(t, base)
		})
	}

	t.Run("between ListSnapshots and IndexFiles", func(t *testing.T) {
		base, v := attackTree(t)
		tree, err := OpenTree(base)
		rtest.OK(t, err)
		defer tree.Close()
		snaps, err := tree.ListSnapshots(Group{Type: "vm", ID: "100"})
		rtest.OK(t, err)
		rtest.Equal(t, "snapshots", 2, len(snaps))
		storetest.AsBackup(t, base, `mv vm/100 vm/.100 && ln -s "`+v.Dir+`/vm/100" vm/100`)
		_, err = tree.IndexFiles(snaps[1])
		rtest.ErrorAt(t, "IndexFiles", err, filepath.Join(base, "vm/100"), doubt(true)...)
		_, err = tree.OpenIndex(snaps[1].RelPath() + "/drive-scsi0.img.fidx")
		rtest.ErrorAt(t, "OpenIndex", err, filepath.Join(base, "vm/100"), doubt(true)...)
		v.Check(t)
		storetest.CheckReferenced(t, base)
	})
}

// TestDoubtRacingAttacker runs the walk and the listings again and again
// for about 2 s while the backup user swaps a group directory with a
// symlink to the victim (renameat2 RENAME_EXCHANGE, so the real directory
// is always at one of the two names and no index can hide from a walk that
// succeeds): every walk either finds exactly the index files of the tree or
// fails naming the group, and the victim stays unchanged.
func TestDoubtRacingAttacker(t *testing.T) {
	base, v := attackTree(t)
	needPerl(t)
	const d = 2 * time.Second
	swap := storetest.StartSwap(t, base, "vm/100", v, 500*time.Microsecond)
	group := filepath.Join(base, "vm/100")
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	var runs, failed int
	for start := time.Now(); time.Since(start) < d+500*time.Millisecond; runs++ {
		var got []string
		err := WalkIndexFiles(t.Context(), base, log, func(rel string) error {
			got = append(got, rel)
			return nil
		})
		// Under the race, nofollow may find the entry a directory again
		// when it looks at why the open failed: then it is doubt without
		// being named a symlink.
		if err != nil {
			failed++
			rtest.ErrorAt(t, "walk", err, group, doubt(false)...)
		} else {
			equalLists(t, "index files of a successful walk", fixtureIndexes, got)
		}
		if err := listEverything(t, base); err != nil {
			rtest.ErrorAt(t, "listing", err, group, doubt(false)...)
		}
	}
	t.Logf("%d walks, %d stopped on the swap", runs, failed)
	swap.Stop(t)
	if failed == 0 || failed == runs {
		t.Logf("note: the race never hit both ways (%d of %d walks stopped)", failed, runs)
	}
	v.Check(t)
	storetest.CheckReferenced(t, base)
}

// TestIndexPathTooLong puts an index below directories nested deeper than
// PATH_MAX: the walk stops naming it instead of handing GC a path nobody
// can open.
func TestIndexPathTooLong(t *testing.T) {
	base := newFixture(t)
	fd, p := storetest.MkdirDeep(t, filepath.Join(base, "stray"))
	rtest.OK(t, unix.Mkdirat(fd, "x.fidx.d", 0o755)) // a directory near the end does not count
	rtest.OK(t, index.WriteFixedFileAt(fd, p, "x.fidx", fsys.Keep, 0, 4096, nil))
	_, err := walkAll(t, base, walkHooks{})
	if !errors.Is(err, unix.ENAMETOOLONG) {
		t.Fatalf("walk: want ENAMETOOLONG, got %v", err)
	}
	if !strings.Contains(err.Error(), p+"/x.fidx") {
		t.Errorf("error does not name the index %s/x.fidx: %v", p[:80]+"…", err)
	}
	tree, err := OpenTree(base)
	rtest.OK(t, err)
	defer tree.Close()
	rel := strings.TrimPrefix(p, base+"/") + "/x.fidx"
	if _, err := tree.OpenIndex(rel); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("OpenIndex of the long path: want ENAMETOOLONG, got %v", err)
	}
	// storetest walks by path and cannot reach it either.
	rtest.OK(t, os.RemoveAll(filepath.Join(base, "stray", strings.Repeat("d", 200))))
}

// TestWalkSkipsOddEntriesOutsideTheScheme: symlinks and FIFOs where the
// scheme expects nothing are skipped, logged, not followed.
func TestWalkSkipsOddEntriesOutsideTheScheme(t *testing.T) {
	base := newFixture(t)
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	var got []string
	rtest.OK(t, walkIndexFiles(t.Context(), base, log, func(rel string) error {
		got = append(got, rel)
		return nil
	}, walkHooks{}))
	equalLists(t, "index files", fixtureIndexes, got)
	var skipped []string
	for _, e := range logs.FilterMessage("skipping entry outside the scheme that is neither a file nor a directory").All() {
		rel, _ := filepath.Rel(base, e.ContextMap()["path"].(string))
		skipped = append(skipped, rel)
	}
	slices.Sort(skipped)
	equalLists(t, "skipped entries", []string{
		"ns/-l", "outside", "vm/-link", "vm/100/" + t1 + "/client.log.blob", "vm/100/" + t1 + "/deep/x",
		"vm/100/" + t1 + "/p.blob", "vm/100/not-a-time-link",
	}, skipped)
}

// TestSchemeRole pins what the walk treats as a place of the scheme.
func TestSchemeRole(t *testing.T) {
	tests := []struct{ give, want string }{
		{"ns", wantNSDir},
		{"ns/a", wantNS},
		{"ns/a/ns", wantNSDir},
		{"ns/a/ns/b", wantNS},
		{"ns/-a", ""},
		{"vm", wantType},
		{"ns/a/ct", wantType},
		{"vm/100", wantGroup},
		{"vm/-1", ""},
		{"vm/100/" + t1, wantSnapshot},
		{"vm/100/not-a-time", ""},
		{"vm/100/" + t1 + "/x", ""},
		{"qemu", ""},
		{"stray/vm", ""},
		{deepNS, wantNS},
		{deepNS + "/ns", ""},
		{deepNS + "/vm/1", wantGroup},
	}
	for _, tt := range tests {
		rtest.Equal(t, "role of "+tt.give, tt.want, schemeRole(tt.give))
	}
}
