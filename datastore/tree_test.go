package datastore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
)

const (
	t1 = "2025-04-04T15:02:49Z"
	t2 = "2025-04-05T15:02:49Z"
	// deepNS is a namespace of the maximum depth, 7.
	deepNS = "ns/a/ns/b/ns/c/ns/d/ns/e/ns/f/ns/g"
)

// fixture is a store tree with every kind of entry the tree functions and
// the walk must tell apart. outside is a directory outside the store that
// symlinks point to.
func fixture(t testing.TB, base, outside string) {
	t.Helper()
	mkTree(t, outside, idx("z.fidx"), idx("vm/1/"+t1+"/z.fidx"))
	mkTree(t, base,
		// the scheme
		idx("vm/100/"+t1+"/drive-scsi0.img.fidx"),
		file("vm/100/"+t1+"/index.json.blob"),
		idx("vm/100/"+t2+"/drive-scsi0.img.fidx"),
		idx("vm/100/"+t2+"/catalog.pcat1.didx"),
		file("vm/100/owner"),
		idx("ct/200/"+t1+"/root.pxar.didx"),
		idx("host/h1/"+t1+"/x.fidx"),
		idx("ns/a/vm/101/"+t1+"/d.img.fidx"),
		dir("ns/a/ns/empty"),
		idx(deepNS+"/vm/1/"+t1+"/d.img.fidx"),
		// an eighth namespace level: walked, but not part of the scheme
		idx(deepNS+"/ns/h/vm/1/"+t1+"/d.img.fidx"),
		// hidden entries: never walked
		idx(".hidden/vm/1/"+t1+"/d.img.fidx"),
		idx("vm/100/.tmp/x.fidx"),
		idx("vm/100/"+t1+"/.x.fidx"),
		dir(".chunks/0000"),
		// outside the scheme: walked
		idx("stray/x.fidx"),
		idx("vm/100/not-a-time/y.fidx"),
		idx("vm/100/2025-04-04T15:02:49.5Z/y.fidx"),
		idx("qemu/1/"+t1+"/x.fidx"),
		idx("dir.fidx/a.didx"),
		// not index files or not groups
		file("vm/100/"+t1+"/notes.fidx.bak"),
		file("ns/file"),
		dir("ns/-bad"),
		dir("ns/a/ns/.hidden"),
		dir("vm/-x"),
		file("vm/200"),
		dir("lost+found"),
		// symlinks and a FIFO where the scheme expects nothing: never
		// followed, skipped (doubtEntries has those the tree must stop on)
		symlink("outside", outside),
		symlink("vm/-link", filepath.Join(outside, "vm/1")),
		symlink("ns/-l", filepath.Join(outside, "vm")),
		symlink("vm/100/not-a-time-link", filepath.Join(outside, "vm/1/"+t1)),
		symlink("vm/100/"+t1+"/client.log.blob", filepath.Join(outside, "z.fidx")),
		symlink("vm/100/"+t1+"/deep/x", filepath.Join(outside, "z.fidx")),
		fifo("vm/100/"+t1+"/p.blob"),
	)
}

func newFixture(t *testing.T) string {
	t.Helper()
	base, outside := t.TempDir(), t.TempDir()
	fixture(t, base, outside)
	t.Cleanup(func() { storetest.CheckReferenced(t, base) })
	return base
}

// parseCase is a case of a parse test: give parses, or fails to parse with
// wantErr; want is what the test checks the result against when it is not
// give itself.
type parseCase struct {
	name    string
	give    string
	want    string
	wantErr bool
}

// testParse runs the cases of the parse function fn: parse fails on each
// wantErr case, and otherwise succeeds with a result that check accepts.
func testParse[T any](t *testing.T, fn string, parse func(string) (T, error), tests []parseCase, check func(t *testing.T, tt parseCase, v T)) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := parse(tt.give)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("%s(%q) = %q, want an error", fn, tt.give, any(v))
				}
				return
			}
			rtest.OK(t, err)
			check(t, tt, v)
		})
	}
}

func TestParseNamespace(t *testing.T) {
	// want is the RelPath.
	testParse(t, "ParseNamespace", ParseNamespace, []parseCase{
		{name: "root", give: "", want: ""},
		{name: "one", give: "a", want: "ns/a"},
		{name: "two", give: "a/b", want: "ns/a/ns/b"},
		{name: "max depth", give: "a/b/c/d/e/f/g", want: deepNS},
		{name: "syntax", give: "A_1.x-y/_9", want: "ns/A_1.x-y/ns/_9"},
		{name: "too deep", give: "a/b/c/d/e/f/g/h", wantErr: true},
		{name: "empty component", give: "a//b", wantErr: true},
		{name: "trailing slash", give: "a/", wantErr: true},
		{name: "leading slash", give: "/a", wantErr: true},
		{name: "hidden", give: ".a", wantErr: true},
		{name: "dash first", give: "-a", wantErr: true},
		{name: "dotdot", give: "a/..", wantErr: true},
		{name: "colon", give: "a:b", wantErr: true},
		{name: "space", give: "a b", wantErr: true},
	}, func(t *testing.T, tt parseCase, ns Namespace) {
		rtest.Equal(t, "RelPath", tt.want, ns.RelPath())
		rtest.Equal(t, "String", tt.give, ns.String())
		rtest.Equal(t, "IsRoot", tt.give == "", ns.IsRoot())
	})
}

func TestParseGroup(t *testing.T) {
	testParse(t, "ParseGroup", ParseGroup, []parseCase{
		{name: "vm", give: "vm/100"},
		{name: "ct", give: "ct/a.b-c_d"},
		{name: "host", give: "host/H"},
		{name: "bad type", give: "qemu/100", wantErr: true},
		{name: "bad id", give: "vm/.100", wantErr: true},
		{name: "no id", give: "vm", wantErr: true},
		{name: "empty id", give: "vm/", wantErr: true},
		{name: "extra part", give: "vm/1/2", wantErr: true},
	}, func(t *testing.T, tt parseCase, g Group) {
		rtest.Equal(t, "RelPath", tt.give, g.RelPath())
		rtest.Equal(t, "String", tt.give, g.String())
		rtest.Equal(t, "root namespace", true, g.NS.IsRoot())
	})
}

func TestParseSnapshot(t *testing.T) {
	testParse(t, "ParseSnapshot", ParseSnapshot, []parseCase{
		{name: "vm", give: "vm/100/" + t1},
		{name: "host", give: "host/h.1/1970-01-01T00:00:00Z"},
		{name: "leap day", give: "ct/1/2024-02-29T23:59:59Z"},
		{name: "extra part", give: "vm/1/2/" + t1, wantErr: true},
		{name: "bad group", give: "vm/" + t1, wantErr: true},
		{name: "fraction", give: "vm/1/2025-04-04T15:02:49.5Z", wantErr: true},
		{name: "offset", give: "vm/1/2025-04-04T15:02:49+01:00", wantErr: true},
		{name: "lowercase z", give: "vm/1/2025-04-04T15:02:49z", wantErr: true},
		{name: "short month", give: "vm/1/2025-4-04T15:02:49Z", wantErr: true},
		{name: "bad day", give: "vm/1/2025-02-30T15:02:49Z", wantErr: true},
		{name: "no time", give: "vm/1/", wantErr: true},
		{name: "no slash", give: "vm", wantErr: true},
	}, func(t *testing.T, tt parseCase, s Snapshot) {
		rtest.Equal(t, "RelPath", tt.give, s.RelPath())
		rtest.Equal(t, "String", tt.give, s.String())
		rtest.Equal(t, "TimeString", tt.give[len(tt.give)-len(t1):], s.TimeString())
		rtest.Equal(t, "location", time.UTC, s.Time.Location())
	})
}

func TestRelPathsWithNamespace(t *testing.T) {
	ns, err := ParseNamespace("a/b")
	rtest.OK(t, err)
	s := Snapshot{Group: Group{NS: ns, Type: "vm", ID: "100"}, Time: time.Date(2025, 4, 4, 17, 2, 49, 0, time.FixedZone("CEST", 2*3600))}
	rtest.Equal(t, "group", "ns/a/ns/b/vm/100", s.Group.RelPath())
	rtest.Equal(t, "snapshot", "ns/a/ns/b/vm/100/2025-04-04T15:02:49Z", s.RelPath())
	rtest.Equal(t, "string", s.RelPath(), s.String())
}

func TestListNamespaces(t *testing.T) {
	base := newFixture(t)
	nss, err := ListNamespaces(base)
	rtest.OK(t, err)
	var got []string
	for _, ns := range nss {
		got = append(got, ns.String())
	}
	equalLists(t, "namespaces", []string{
		"",
		"a",
		"a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e", "a/b/c/d/e/f", "a/b/c/d/e/f/g",
		"a/empty",
	}, got)
	if !nss[0].IsRoot() {
		t.Errorf("first namespace %q is not the root", nss[0])
	}

	empty := t.TempDir()
	nss, err = ListNamespaces(empty)
	rtest.OK(t, err)
	rtest.Equal(t, "namespaces of an empty store", 1, len(nss))
}

func TestListGroups(t *testing.T) {
	base := newFixture(t)
	tests := []struct {
		name string
		give string // namespace
		want []string
	}{
		{name: "root", give: "", want: []string{"ct/200", "host/h1", "vm/100"}},
		{name: "nested", give: "a", want: []string{"ns/a/vm/101"}},
		{name: "deepest", give: "a/b/c/d/e/f/g", want: []string{deepNS + "/vm/1"}},
		{name: "no groups", give: "a/empty", want: nil},
		{name: "missing namespace", give: "nope/nope", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, err := ParseNamespace(tt.give)
			rtest.OK(t, err)
			groups, err := ListGroups(base, ns)
			rtest.OK(t, err)
			var got []string
			for _, g := range groups {
				got = append(got, g.RelPath())
				rtest.Equal(t, "namespace of "+g.RelPath(), ns.String(), g.NS.String())
			}
			equalLists(t, "groups", tt.want, got)
		})
	}
}

func TestListSnapshots(t *testing.T) {
	base := newFixture(t)
	g := Group{Type: "vm", ID: "100"}
	snaps, err := ListSnapshots(base, g)
	rtest.OK(t, err)
	var got []string
	for _, s := range snaps {
		got = append(got, s.RelPath())
	}
	// not-a-time, the fraction, .tmp and not-a-time-link are not
	// snapshots.
	equalLists(t, "snapshots", []string{"vm/100/" + t1, "vm/100/" + t2}, got)
	if len(snaps) == 2 && !snaps[0].Time.Before(snaps[1].Time) {
		t.Errorf("snapshots not oldest first: %v", snaps)
	}

	snaps, err = ListSnapshots(base, Group{Type: "vm", ID: "999"})
	rtest.OK(t, err)
	rtest.Equal(t, "snapshots of a missing group", 0, len(snaps))
}

func TestListAllSnapshots(t *testing.T) {
	base := newFixture(t)
	snaps, err := ListAllSnapshots(base)
	rtest.OK(t, err)
	var got []string
	for _, s := range snaps {
		got = append(got, s.RelPath())
	}
	equalLists(t, "snapshots", []string{
		"ct/200/" + t1,
		"host/h1/" + t1,
		"vm/100/" + t1,
		"vm/100/" + t2,
		"ns/a/vm/101/" + t1,
		deepNS + "/vm/1/" + t1,
	}, got)
}

func TestIndexFiles(t *testing.T) {
	base := newFixture(t)
	s, err := ParseSnapshot("vm/100/" + t1)
	rtest.OK(t, err)
	names, err := IndexFiles(base, s)
	rtest.OK(t, err)
	// Not .x.fidx (hidden) or notes.fidx.bak.
	equalLists(t, "index files", []string{"drive-scsi0.img.fidx"}, names)

	s2, err := ParseSnapshot("vm/100/" + t2)
	rtest.OK(t, err)
	names, err = IndexFiles(base, s2)
	rtest.OK(t, err)
	equalLists(t, "index files", []string{"catalog.pcat1.didx", "drive-scsi0.img.fidx"}, names)

	gone, err := ParseSnapshot("vm/100/2020-01-01T00:00:00Z")
	rtest.OK(t, err)
	_, err = IndexFiles(base, gone)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("IndexFiles of a missing snapshot: want fs.ErrNotExist, got %v", err)
	}
}

// TestListUnreadable lists the groups of a store whose type directory the
// lister may not read: as the backup user (in a helper process) when the
// test runs as root, which reads any directory, else in this process.
func TestListUnreadable(t *testing.T) {
	base := newFixture(t)
	p := filepath.Join(base, "vm")
	rtest.OK(t, os.Chmod(p, 0))
	t.Cleanup(func() { os.Chmod(p, 0o755) })
	if os.Geteuid() == 0 {
		r := runAsBackup(t, "list-groups", base)
		if !r.perm {
			t.Errorf("ListGroups with an unreadable type dir: want a permission error, got %q (groups %q)", r.err, r.rels)
		}
		if want := p + ":"; !strings.Contains(r.err, want) {
			t.Errorf("error %q does not name %s", r.err, p)
		}
		return
	}
	if _, err := ListGroups(base, nil); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("ListGroups with an unreadable type dir: want fs.ErrPermission, got %v", err)
	}
}

func TestInScheme(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"vm/100/" + t1 + "/drive-scsi0.img.fidx", true},
		{"ct/200/" + t1 + "/root.pxar.didx", true},
		{"host/h1/" + t1 + "/x.fidx", true},
		{"ns/a/vm/101/" + t1 + "/d.img.fidx", true},
		{deepNS + "/vm/1/" + t1 + "/d.img.fidx", true},
		{deepNS + "/ns/h/vm/1/" + t1 + "/d.img.fidx", false},
		{"stray/x.fidx", false},
		{"x.fidx", false},
		{"vm/100/not-a-time/y.fidx", false},
		{"vm/100/2025-04-04T15:02:49.5Z/y.fidx", false},
		{"qemu/1/" + t1 + "/x.fidx", false},
		{"vm/-1/" + t1 + "/x.fidx", false},
		{"vm/100/" + t1 + "/.x.fidx", false},
		{"vm/100/" + t1 + "/x.blob", false},
		{"vm/100/" + t1 + "/sub/x.fidx", false},
		{"ns/vm/100/" + t1 + "/x.fidx", false},
		{"nx/a/vm/100/" + t1 + "/x.fidx", false},
		{"ns/.a/vm/100/" + t1 + "/x.fidx", false},
		{"/vm/100/" + t1 + "/x.fidx", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			rtest.Equal(t, "InScheme", tt.want, InScheme(tt.give))
		})
	}
}
