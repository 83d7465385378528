package gc

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/datastore"
	"chunkgc/index"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

const (
	escT1 = "2025-04-04T15:02:49Z"
	escT2 = "2025-04-05T15:02:49Z"
	// escVictimSnap is the snapshot every victim tree holds.
	escVictimSnap = "vm/100/2025-01-01T00:00:00Z"
)

// attackFixture is a store on a tmpfs, owned by the backup user and
// reachable by it, with old chunks referenced from the root and a nested
// namespace, an old unreferenced chunk a successful run removes, and a
// victim tree outside.
type attackFixture struct {
	*fixture
	victim  *storetest.Victim
	refs    []blob.Digest
	garbage blob.Digest
}

func newAttackFixture(t *testing.T) *attackFixture {
	t.Helper()
	rtest.RequireRoot(t)
	mnt := testfs.Tmpfs(t, "")
	f := newFixtureAt(t, filepath.Join(mnt, "store"))
	a := &attackFixture{fixture: f}
	a.refs = f.chunks(3, 4096, 48*time.Hour)
	a.garbage, _ = f.chunk(4096, 48*time.Hour)
	f.snapshot("vm/100/"+escT1, a.refs[0])
	f.snapshot("vm/100/"+escT2, a.refs[0], a.refs[1])
	f.snapshot("ns/a/vm/101/"+escT1, a.refs[2])
	storetest.ChownTree(t, f.base)
	storetest.Reachable(t, f.base)
	a.victim = storetest.NewVictim(t)
	return a
}

// chunkFiles lists every file under .chunks.
func (a *attackFixture) chunkFiles() []string {
	a.t.Helper()
	var files []string
	root := filepath.Join(a.base, ".chunks")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, strings.TrimPrefix(p, root+"/"))
		}
		return err
	})
	rtest.OK(a.t, err)
	slices.Sort(files)
	return files
}

// runNoProbe runs GC without the atime probe (tmpfs, and the tests are
// about what phase 1 sees).
func (a *attackFixture) runNoProbe(mod ...func(*Options)) (*Status, error) {
	return a.run(append(mod, func(o *Options) { o.Tuning.AtimeSafetyCheck = false })...)
}

// wantStopped fails t unless Run failed naming path with an error
// matching target, and removed nothing.
func (a *attackFixture) wantStopped(t *testing.T, err error, target error, path string, before []string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("gc succeeded, want it to stop naming %s", path)
	case !errors.Is(err, target):
		t.Errorf("gc: want an error matching %v, got %v", target, err)
	case !strings.Contains(err.Error(), path):
		t.Errorf("gc: error does not name %s: %v", path, err)
	case !strings.Contains(err.Error(), "phase 1"):
		t.Errorf("gc: want it stopped in phase 1: %v", err)
	}
	if after := a.chunkFiles(); !slices.Equal(before, after) {
		t.Errorf("gc removed chunk files: %d before, %d after", len(before), len(after))
	}
	rtest.Equal(t, "garbage chunk kept", true, a.exists(a.store.ChunkPath(a.garbage)))
}

// TestDoubtStopsGC plants, as the backup user, entries of the wrong type
// where the tree expects a namespace, ns, a type, a group, a snapshot or an
// index, or swaps a snapshot for a symlink while phase 1 runs: GC stops in
// phase 1 naming the path, nothing is removed, and the victim tree is
// unchanged.
func TestDoubtStopsGC(t *testing.T) {
	tests := []struct {
		name  string
		plant string // shell script run as backup in base; $V is the victim
		path  string // what the error names, relative to base
		swap  string // run from the afterGroupList hook of vm/100 instead
	}{
		{name: "namespace", plant: `ln -s "$V/ns/a" ns/b`, path: "ns/b"},
		{name: "ns", plant: `mv ns .ns-real && ln -s "$V/ns" ns`, path: "ns"},
		{name: "type dir", plant: `mv vm .vm-real && ln -s "$V/vm" vm`, path: "vm"},
		{name: "group", plant: `ln -s "$V/vm/100" vm/300`, path: "vm/300"},
		{name: "snapshot", plant: `ln -s "$V/` + escVictimSnap + `" ` + escVictimSnap, path: escVictimSnap},
		{name: "index", plant: `ln -s "$V/drive.fidx" vm/100/` + escT1 + `/evil.fidx`, path: "vm/100/" + escT1 + "/evil.fidx"},
		{name: "FIFO index", plant: `mkfifo vm/100/` + escT2 + `/p.didx`, path: "vm/100/" + escT2 + "/p.didx"},
		{name: "socket index", path: "vm/100/" + escT2 + "/s.fidx",
			plant: `perl -MIO::Socket::UNIX -e 'IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $ARGV[0], Listen => 1) or die "$!"' vm/100/` + escT2 + `/s.fidx`},
		{name: "snapshot swapped while marking", path: "vm/100/" + escT2,
			swap: `mv vm/100/` + escT2 + ` vm/100/.gone && ln -s "$V/` + escVictimSnap + `" vm/100/` + escT2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.plant, "perl") {
				if _, err := exec.LookPath("perl"); err != nil {
					rtest.SkipOrFail(t, "needs perl to bind a socket")
				}
			}
			a := newAttackFixture(t)
			if tt.plant != "" {
				storetest.AsBackup(t, a.base, "V="+a.victim.Dir+"; "+tt.plant)
			}
			before := a.chunkFiles()
			fired := false
			_, err := a.runNoProbe(func(o *Options) {
				if tt.swap == "" {
					return
				}
				o.hooks.afterGroupList = func(g datastore.Group, attempt int) {
					if g.RelPath() == "vm/100" && !fired {
						fired = true
						storetest.AsBackup(t, a.base, "V="+a.victim.Dir+"; "+tt.swap)
					}
				}
			})
			if tt.swap != "" {
				rtest.Equal(t, "swap hook fired", true, fired)
			}
			a.wantStopped(t, err, datastore.ErrUnexpectedEntry, filepath.Join(a.base, tt.path), before)
			a.victim.Check(t)
			if strings.Contains(tt.name, "socket") { // storetest cannot open it; it is no index
				rtest.OK(t, os.Remove(filepath.Join(a.base, tt.path)))
			}
		})
	}
}

// TestIndexPathTooLongStopsGC hides an index referencing an old chunk below
// directories nested beyond PATH_MAX: GC stops naming it and removes
// nothing, not even that chunk.
func TestIndexPathTooLongStopsGC(t *testing.T) {
	a := newAttackFixture(t)
	hidden, _ := a.chunk(4096, 48*time.Hour)
	fd, p := storetest.MkdirDeep(t, a.base)
	rtest.OK(t, index.WriteFixedFileAt(fd, p, "x.fidx", fsys.Keep, 4096, 4096, []blob.Digest{hidden}))
	before := a.chunkFiles()
	_, err := a.runNoProbe()
	a.wantStopped(t, err, unix.ENAMETOOLONG, p+"/x.fidx", before)
	rtest.Equal(t, "chunk of the deep index kept", true, a.exists(a.store.ChunkPath(hidden)))
	a.victim.Check(t)
	// storetest walks by path and cannot reach it.
	top, _, _ := strings.Cut(strings.TrimPrefix(p, a.base+"/"), "/")
	rtest.OK(t, os.RemoveAll(filepath.Join(a.base, top)))
}

// TestRacingAttackerGC runs GC again and again for about 2 s while the
// backup user swaps a group directory with a symlink to the victim
// (renameat2 RENAME_EXCHANGE): every run either succeeds or stops naming
// the group, no run removes a referenced chunk, and the victim stays
// unchanged.
func TestRacingAttackerGC(t *testing.T) {
	a := newAttackFixture(t)
	swap := storetest.StartSwap(t, a.base, "vm/100", a.victim, time.Millisecond)
	group := filepath.Join(a.base, "vm/100")
	var runs, failed int
	for start := time.Now(); time.Since(start) < 2500*time.Millisecond; runs++ {
		_, err := a.runNoProbe(func(o *Options) { o.Tuning.Concurrency = 1 })
		if err != nil {
			failed++
			if !errors.Is(err, datastore.ErrUnexpectedEntry) || !strings.Contains(err.Error(), group) {
				t.Errorf("run %d: want a stop naming %s, got %v", runs, group, err)
			}
		}
		for _, d := range a.refs {
			if !a.exists(a.store.ChunkPath(d)) {
				t.Fatalf("run %d (err %v) removed referenced chunk %s", runs, err, d)
			}
		}
	}
	t.Logf("%d runs, %d stopped on the swap", runs, failed)
	swap.Stop(t)
	a.victim.Check(t)
}
