package datastore

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
)

// fixtureIndexes is what WalkIndexFiles finds in the fixture, in its order.
var fixtureIndexes = []string{
	"ct/200/" + t1 + "/root.pxar.didx",
	"dir.fidx/a.didx",
	"host/h1/" + t1 + "/x.fidx",
	deepNS + "/ns/h/vm/1/" + t1 + "/d.img.fidx",
	deepNS + "/vm/1/" + t1 + "/d.img.fidx",
	"ns/a/vm/101/" + t1 + "/d.img.fidx",
	"qemu/1/" + t1 + "/x.fidx",
	"stray/x.fidx",
	"vm/100/2025-04-04T15:02:49.5Z/y.fidx",
	"vm/100/" + t1 + "/drive-scsi0.img.fidx",
	"vm/100/" + t2 + "/catalog.pcat1.didx",
	"vm/100/" + t2 + "/drive-scsi0.img.fidx",
	"vm/100/not-a-time/y.fidx",
}

// without returns list without the items for which drop is true.
func without(list []string, drop func(string) bool) []string {
	return slices.DeleteFunc(slices.Clone(list), drop)
}

func walkAll(t *testing.T, base string, hooks walkHooks) ([]string, error) {
	t.Helper()
	var got []string
	err := walkIndexFiles(t.Context(), base, zaptest.NewLogger(t), func(rel string) error {
		got = append(got, rel)
		return nil
	}, hooks)
	return got, err
}

func TestWalkIndexFiles(t *testing.T) {
	base := newFixture(t)
	got, err := walkAll(t, base, walkHooks{})
	rtest.OK(t, err)
	equalLists(t, "index files", fixtureIndexes, got)

	again, err := walkAll(t, base, walkHooks{})
	rtest.OK(t, err)
	equalLists(t, "index files of a second walk", got, again)

	// Every index in the scheme is also reached through the tree functions,
	// and those are exactly the ones InScheme accepts.
	snaps, err := ListAllSnapshots(base)
	rtest.OK(t, err)
	var viaTree []string
	for _, s := range snaps {
		names, err := IndexFiles(base, s)
		rtest.OK(t, err)
		for _, n := range names {
			viaTree = append(viaTree, s.RelPath()+"/"+n)
		}
	}
	slices.Sort(viaTree)
	inScheme := without(got, func(rel string) bool { return !InScheme(rel) })
	slices.Sort(inScheme)
	equalLists(t, "index files in the scheme", viaTree, inScheme)
}

func TestWalkIndexFilesBaseSymlink(t *testing.T) {
	base := newFixture(t)
	link := filepath.Join(t.TempDir(), "store")
	rtest.OK(t, os.Symlink(base, link))
	got, err := walkAll(t, link, walkHooks{})
	rtest.OK(t, err)
	equalLists(t, "index files through a symlinked base", fixtureIndexes, got)
}

// TestWalkIndexFilesUnknownType walks with every d_type replaced by
// DT_UNKNOWN, as some filesystems report it: fstatat decides instead.
func TestWalkIndexFilesUnknownType(t *testing.T) {
	base := newFixture(t)
	got, err := walkAll(t, base, walkHooks{afterList: func(rel string, ents []dirent) {
		for i := range ents {
			ents[i].typ = unix.DT_UNKNOWN
		}
	}})
	rtest.OK(t, err)
	equalLists(t, "index files", fixtureIndexes, got)
}

// TestWalkIndexFilesConcurrentChanges changes the tree between a
// directory's listing and the look at its entries, as a concurrent prune
// does.
func TestWalkIndexFilesConcurrentChanges(t *testing.T) {
	tests := []struct {
		name    string
		at      string // the directory whose listing is followed by change
		unknown bool   // report DT_UNKNOWN for its entries (fstatat path)
		change  func(t *testing.T, base string)
		gone    string // prefix of the index files no longer found
	}{
		{
			name: "snapshot removed", at: "vm/100", gone: "vm/100/" + t2 + "/",
			change: func(t *testing.T, base string) { rtest.OK(t, os.RemoveAll(filepath.Join(base, "vm/100", t2))) },
		},
		{
			name: "index removed, type unknown", at: "vm/100/" + t2, unknown: true, gone: "vm/100/" + t2 + "/catalog",
			change: func(t *testing.T, base string) {
				rtest.OK(t, os.Remove(filepath.Join(base, "vm/100", t2, "catalog.pcat1.didx")))
			},
		},
		{
			name: "dir replaced by a file", at: "", gone: "stray/",
			change: func(t *testing.T, base string) {
				rtest.OK(t, os.RemoveAll(filepath.Join(base, "stray")))
				rtest.OK(t, os.WriteFile(filepath.Join(base, "stray"), nil, 0o644))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFixture(t)
			fired := false
			got, err := walkAll(t, base, walkHooks{afterList: func(rel string, ents []dirent) {
				if rel != tt.at {
					return
				}
				fired = true
				if tt.unknown {
					for i := range ents {
						ents[i].typ = unix.DT_UNKNOWN
					}
				}
				tt.change(t, base)
			}})
			rtest.OK(t, err)
			rtest.Equal(t, "hook fired", true, fired)
			want := without(fixtureIndexes, func(rel string) bool { return strings.HasPrefix(rel, tt.gone) })
			rtest.Equal(t, "some index files gone", true, len(want) < len(fixtureIndexes))
			equalLists(t, "index files", want, got)
		})
	}
}

// TestWalkIndexFilesRemovedAfterOpen removes a snapshot directory between
// its open and its listing: getdents then fails with ENOENT, which is a
// concurrent prune like any other.
func TestWalkIndexFilesRemovedAfterOpen(t *testing.T) {
	base := newFixture(t)
	fired := false
	got, err := walkAll(t, base, walkHooks{afterOpen: func(rel string) {
		if rel == "vm/100/"+t2 {
			fired = true
			rtest.OK(t, os.RemoveAll(filepath.Join(base, rel)))
		}
	}})
	rtest.OK(t, err)
	rtest.Equal(t, "hook fired", true, fired)
	equalLists(t, "index files", without(fixtureIndexes, func(rel string) bool { return strings.HasPrefix(rel, "vm/100/"+t2+"/") }), got)
}

func TestWalkIndexFilesStops(t *testing.T) {
	base := newFixture(t)
	errStop := errors.New("stop")

	n := 0
	err := WalkIndexFiles(t.Context(), base, zaptest.NewLogger(t), func(rel string) error {
		n++
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("fn error: want it returned, got %v", err)
	}
	rtest.Equal(t, "calls after fn failed", 1, n)

	ctx, cancel := context.WithCancel(t.Context())
	n = 0
	err = WalkIndexFiles(ctx, base, zaptest.NewLogger(t), func(rel string) error {
		n++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled walk: want context.Canceled, got %v", err)
	}
	rtest.Equal(t, "calls after cancel", 1, n)

	err = WalkIndexFiles(t.Context(), filepath.Join(base, "nope"), nil, func(string) error { return nil })
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing base: want fs.ErrNotExist, got %v", err)
	}
	err = WalkIndexFiles(t.Context(), filepath.Join(base, "vm/100/owner"), nil, func(string) error { return nil })
	if !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("base not a dir: want ENOTDIR, got %v", err)
	}
}

// TestWalkIndexFilesPermissions walks as a user that cannot read parts of
// the tree: an unreadable lost+found directly under base is skipped, any
// other permission error stops the walk naming the path.
func TestWalkIndexFilesPermissions(t *testing.T) {
	tests := []struct {
		name    string
		chmod   map[string]os.FileMode
		wantErr string // path (relative) the error names; "" for success
	}{
		{name: "lost+found skipped", chmod: map[string]os.FileMode{"lost+found": 0}},
		{name: "unreadable snapshot", chmod: map[string]os.FileMode{"lost+found": 0, "vm/100/" + t2: 0}, wantErr: "vm/100/" + t2},
		{name: "no search permission", chmod: map[string]os.FileMode{"vm/100": 0o644}, wantErr: "vm/100/2025-04-04T15:02:49.5Z"},
		{name: "unreadable group dir", chmod: map[string]os.FileMode{"ns/a/vm/101": 0o311}, wantErr: "ns/a/vm/101"},
		{name: "lost+found deeper", chmod: map[string]os.FileMode{"vm/lost+found": 0}, wantErr: "vm/lost+found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := newFixture(t)
			rtest.OK(t, os.MkdirAll(filepath.Join(base, "vm/lost+found"), 0o755))
			for rel, mode := range tt.chmod {
				p := filepath.Join(base, rel)
				rtest.OK(t, os.Chmod(p, mode))
				t.Cleanup(func() { os.Chmod(p, 0o755) }) // before CheckReferenced and TempDir's RemoveAll
			}
			r := walkAsOtherUser(t, base)
			if tt.wantErr == "" {
				if r.err != "" {
					t.Fatalf("walk: %s", r.err)
				}
				equalLists(t, "index files", fixtureIndexes, r.rels)
				if r.log != "" && !strings.Contains(r.log, "skipping unreadable lost+found") {
					t.Errorf("no debug line for the skipped lost+found in the log:\n%s", r.log)
				}
				return
			}
			if r.err == "" {
				t.Fatalf("walk succeeded with %d index files, want a permission error on %s", len(r.rels), tt.wantErr)
			}
			rtest.Equal(t, "permission error", true, r.perm)
			if want := filepath.Join(base, tt.wantErr); !strings.Contains(r.err, want+":") {
				t.Errorf("error %q does not name %s", r.err, want)
			}
		})
	}
}

// walkAsOtherUser walks base as a user without root's bypass of
// permissions: in this process when not root, else in a helper process run
// as the backup user.
func walkAsOtherUser(t *testing.T, base string) walkResult {
	t.Helper()
	if os.Geteuid() == 0 {
		return runAsBackup(t, "walk", base)
	}
	var r walkResult
	err := WalkIndexFiles(t.Context(), base, zaptest.NewLogger(t), func(rel string) error {
		r.rels = append(r.rels, rel)
		return nil
	})
	if err != nil {
		r.err, r.perm = err.Error(), isPermission(err)
	}
	return r
}

// runAsBackup runs helper (see TestMain) on base in a copy of the test
// binary as the backup user (uid/gid 34, no supplementary groups) and
// returns its report.
func runAsBackup(t *testing.T, helper, base string) walkResult {
	t.Helper()
	// The backup user must reach base and the helper binary: the test's
	// temporary directories are 0700.
	for _, p := range []string{filepath.Dir(base), base} {
		rtest.OK(t, os.Chmod(p, 0o755))
	}
	bin := storetest.CopyTestBinary(t)
	cmd := rtest.Helper(helper, base)
	cmd.Path, cmd.Args[0] = bin, bin
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: storetest.BackupUID, Gid: storetest.BackupGID, Groups: []uint32{}}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper %s: %v\n%s%s", helper, err, stdout.String(), stderr.String())
	}
	r, err := parseWalk(stdout.String())
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, stderr.String())
	}
	r.log = stderr.String()
	return r
}
