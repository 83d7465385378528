package config

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/tuning"
)

var update = flag.Bool("update", false, "rewrite the golden files under ../testdata/config")

const pbsConfig = "../testdata/config/pbs-datastore.cfg"

func parseString(t *testing.T, s string) *File {
	t.Helper()
	c, err := Parse(strings.NewReader(s), "test.cfg")
	rtest.OK(t, err)
	return c
}

// golden compares got with the file at path, or rewrites it under -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		rtest.OK(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	rtest.OK(t, err)
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs (run go test -update to rewrite it)\nwant:\n%s\ngot:\n%s", path, want, got)
	}
}

func TestPBSConfigRoundTrip(t *testing.T) {
	raw, err := os.ReadFile(pbsConfig)
	rtest.OK(t, err)
	c, err := Read(pbsConfig)
	rtest.OK(t, err)
	if got := c.Bytes(); !bytes.Equal(raw, got) {
		t.Fatalf("Bytes differs from the file\nwant:\n%q\ngot:\n%q", raw, got)
	}
	want := []Datastore{
		{Name: "store1", Path: "/mnt/datastore/store1", Tuning: "gc-atime-safety-check=1,gc-atime-cutoff=1445", Comment: "main pool"},
		{Name: "offsite_2", Path: "/mnt/datastore/offsite-2", Tuning: "chunk-order=none,sync-level=file,gc-cache-capacity=524288", Comment: "offsite copy: synced nightly, kept 30 days"},
		{Name: "usb.removable", Path: "/mnt/removable"},
		{Name: "scratch", Path: "/srv/scratch"},
	}
	rtest.Equal(t, "datastores", want, c.Datastores())
	for _, d := range want {
		got, found := c.Datastore(d.Name)
		if !found {
			t.Fatalf("Datastore(%q) not found", d.Name)
		}
		rtest.Equal(t, "datastore "+d.Name, d, got)
		_, err := tuning.Parse(got.Tuning)
		rtest.OK(t, err)
	}
	// Sections of other types are not datastores.
	if d, found := c.Datastore("minio-lab"); found {
		t.Errorf("Datastore(minio-lab) = %+v, want not found", d)
	}
	p, err := tuning.Parse(want[1].Tuning)
	rtest.OK(t, err)
	rtest.Equal(t, "offsite_2 sync-level", tuning.SyncFile, p.Apply(tuning.Defaults()).SyncLevel)
	rtest.Equal(t, "offsite_2 chunk-order", tuning.OrderNone, p.Apply(tuning.Defaults()).ChunkOrder)
}

// TestPBSConfigSetDatastore edits the PBS config the way create and an
// operator would, and checks the result against a golden file and that
// every line chunkgc does not own is still there.
func TestPBSConfigSetDatastore(t *testing.T) {
	raw, err := os.ReadFile(pbsConfig)
	rtest.OK(t, err)
	c, err := Read(pbsConfig)
	rtest.OK(t, err)
	edits := []Datastore{
		// Change tuning only.
		{Name: "store1", Path: "/mnt/datastore/store1", Tuning: "gc-atime-cutoff=60", Comment: "main pool"},
		// Remove tuning and comment.
		{Name: "offsite_2", Path: "/mnt/datastore/offsite-2"},
		// Add comment (sorts first) and tuning (sorts last), indented
		// like the section's other properties (spaces).
		{Name: "scratch", Path: "/srv/scratch", Tuning: "sync-level=none", Comment: "temporary"},
		// New path, next to an indented comment.
		{Name: "usb.removable", Path: "/mnt/usb", Comment: "USB"},
		// A new store.
		{Name: "newstore", Path: "/mnt/new", Tuning: "gc-atime-safety-check=false", Comment: "added by chunkgc"},
	}
	for _, d := range edits {
		rtest.OK(t, d.Validate())
		c.SetDatastore(d)
	}
	got := c.Bytes()
	golden(t, "../testdata/config/pbs-datastore-set.cfg", got)

	c2, err := Parse(bytes.NewReader(got), "edited")
	rtest.OK(t, err)
	rtest.Equal(t, "first datastore after the edits", edits[:1], c2.Datastores()[:1])
	for _, d := range edits {
		back, found := c2.Datastore(d.Name)
		if !found {
			t.Fatalf("%s lost", d.Name)
		}
		rtest.Equal(t, "datastore "+d.Name+" read back", d, back)
	}
	// Order: existing sections keep their place, the new one is last.
	var names []string
	for _, d := range c2.Datastores() {
		names = append(names, d.Name)
	}
	rtest.Equal(t, "datastore order", []string{"store1", "offsite_2", "usb.removable", "scratch", "newstore"}, names)

	// Every line that is not a path, tuning or comment of a datastore is
	// kept verbatim, in order.
	var kept []string
	for l := range strings.Lines(string(raw)) {
		key, _ := splitProp(strings.TrimSpace(l))
		if key != PropPath && key != PropTuning && key != PropComment || strings.Contains(l, "not a datastore") {
			kept = append(kept, l)
		}
	}
	rest := string(got)
	for _, l := range kept {
		i := strings.Index(rest, l)
		if i < 0 {
			t.Fatalf("line %q lost or reordered", l)
		}
		rest = rest[i+len(l):]
	}
	// Unchanged after a second identical round.
	for _, d := range edits {
		c2.SetDatastore(d)
	}
	if !bytes.Equal(got, c2.Bytes()) {
		t.Errorf("setting the same values again changed the config:\n%s", c2.Bytes())
	}
}

func TestSetDatastoreUnchangedKeepsBytes(t *testing.T) {
	c, err := Read(pbsConfig)
	rtest.OK(t, err)
	before := c.Bytes()
	for _, d := range c.Datastores() {
		c.SetDatastore(d)
	}
	if !bytes.Equal(before, c.Bytes()) {
		t.Errorf("SetDatastore with the current values changed the config:\n%s", c.Bytes())
	}
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		give string
		want []Datastore
	}{
		{"empty", "", nil},
		{"blank lines", "\n\n  \n\t\n", nil},
		{"comments only", "# a\n  # b\n", nil},
		{"no final newline", "datastore: abc\n\tpath /a", []Datastore{{Name: "abc", Path: "/a"}}},
		{"crlf", "datastore: abc\r\n\tpath /a\r\n\tcomment x y\r\n", []Datastore{{Name: "abc", Path: "/a", Comment: "x y"}}},
		{"no space after colon", "datastore:abc\n path /a\n", []Datastore{{Name: "abc", Path: "/a"}}},
		{"spaces around id", "datastore :  abc  \n path /a\n", []Datastore{{Name: "abc", Path: "/a"}}},
		{"value keeps inner spaces", "datastore: abc\n\tpath /a\n\tcomment  two  words \n", []Datastore{{Name: "abc", Path: "/a", Comment: "two  words"}}},
		{"value separated by a tab", "datastore: abc\n\tpath\t/a\n", []Datastore{{Name: "abc", Path: "/a"}}},
		{"empty values", "datastore: abc\n\tpath /a\n\tcomment\n\ttuning   \n\tverify-new\n", []Datastore{{Name: "abc", Path: "/a"}}},
		{"comment inside a section", "datastore: abc\n# note\n\tpath /a\n", []Datastore{{Name: "abc", Path: "/a"}}},
		{"unknown keys kept, even repeated", "datastore: abc\n\tpath /a\n\tx 1\n\tx 2\n", []Datastore{{Name: "abc", Path: "/a"}}},
		{"unknown section types unchecked", "foo: a b c\n\tpath\n\tpath\n\n\u00e9t\u00e9: ?\n\t\n", nil},
		{"bad tuning is not checked here", "datastore: abc\n\tpath /a\n\ttuning nonsense\n", []Datastore{{Name: "abc", Path: "/a", Tuning: "nonsense"}}},
		{"whitespace-only line ends a section", "datastore: abc\n\tpath /a\n \t \ndatastore: def\n\tpath /d\n", []Datastore{{Name: "abc", Path: "/a"}, {Name: "def", Path: "/d"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := parseString(t, tt.give)
			rtest.Equal(t, "datastores", tt.want, c.Datastores())
			rtest.Equal(t, "Bytes", tt.give, string(c.Bytes()))
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		give     string
		wantLine int
		wantIn   string
	}{
		{"property outside a section", "\tpath /a\n", 1, "outside a section"},
		{"property after a blank line", "datastore: abc\n\tpath /a\n\n\tcomment x\n", 4, "outside a section"},
		{"no colon", "datastore abc\n", 1, "section header"},
		{"header starts with a digit", "1datastore: abc\n", 1, "section header"},
		{"unindented property", "datastore: abc\n\tpath /a\ncomment x\n", 3, "starts with white space"},
		{"header without blank line", "datastore: abc\n\tpath /a\ndatastore: def\n\tpath /d\n", 3, "blank line"},
		{"bad name", "datastore: a b\n\tpath /a\n", 1, "invalid datastore name"},
		{"short name", "datastore: ab\n\tpath /a\n", 1, "invalid datastore name \"ab\": want 3 to 32"},
		{"empty name", "datastore:\n\tpath /a\n", 1, "invalid datastore name"},
		{"duplicate datastore", "datastore: abc\n\tpath /a\n\ndatastore: abc\n\tpath /b\n", 4, "duplicate datastore abc (first on line 1)"},
		{"no path", "# c\ndatastore: abc\n\tcomment x\n\ndatastore: def\n\tpath /d\n", 2, "datastore abc has no path"},
		{"no path at end", "datastore: abc\n", 1, "has no path"},
		{"empty path", "datastore: abc\n\tpath\n", 2, "empty path"},
		{"duplicate path", "datastore: abc\n\tpath /a\n\tpath /b\n", 3, "duplicate property path (first on line 2)"},
		{"duplicate tuning", "datastore: abc\n\tpath /a\n\ttuning a\n\ttuning b\n", 4, "duplicate property tuning"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tt.give), "/etc/x.cfg")
			if err == nil {
				t.Fatalf("no error; parsed %q", c.Bytes())
			}
			ce, isCE := errors.AsType[*ParseError](err)
			if !isCE {
				t.Fatalf("error %T %v, want *ParseError", err, err)
			}
			rtest.Equal(t, "error path", "/etc/x.cfg", ce.Path)
			if strings.Contains(tt.wantIn, "datastore name") != errors.Is(err, ErrInvalidStoreName) {
				t.Errorf("errors.Is(%v, ErrInvalidStoreName) = %v", err, errors.Is(err, ErrInvalidStoreName))
			}
			rtest.Equal(t, "error line", tt.wantLine, ce.Line)
			if !strings.HasPrefix(err.Error(), "/etc/x.cfg:") || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("message %q, want /etc/x.cfg:%d: …%s…", err, tt.wantLine, tt.wantIn)
			}
		})
	}
}

func TestReadErrorNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "datastore.cfg")
	rtest.OK(t, os.WriteFile(path, []byte("datastore: abc\n\tpath /a\nbad\n"), 0o644))
	_, err := Read(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":3: ") {
		t.Errorf("error %v, want it to start with %s:3:", err, path)
	}
	// A directory is not a config.
	_, err = Read(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "read datastore config") {
		t.Errorf("error %v, want a read error", err)
	}
}

func TestReadMissing(t *testing.T) {
	c, err := Read(filepath.Join(t.TempDir(), "nope", "datastore.cfg"))
	rtest.OK(t, err)
	rtest.Equal(t, "bytes of a missing config", 0, len(c.Bytes()))
	rtest.Equal(t, "datastores of a missing config", []Datastore(nil), c.Datastores())
	_, found := c.Datastore("abc")
	rtest.Equal(t, "datastore abc found", false, found)
}

func TestSetDatastore(t *testing.T) {
	tests := []struct {
		name string
		give string
		set  Datastore
		want string
	}{
		{
			"into empty",
			"",
			Datastore{Name: "store1", Path: "/mnt/s1", Tuning: "gc-atime-cutoff=60", Comment: "main pool"},
			"datastore: store1\n\tcomment main pool\n\tpath /mnt/s1\n\ttuning gc-atime-cutoff=60\n",
		},
		{
			"path only",
			"",
			Datastore{Name: "store1", Path: "/mnt/s1"},
			"datastore: store1\n\tpath /mnt/s1\n",
		},
		{
			"update keeps others and indent",
			"datastore: abc\n  gc-schedule daily\n  path /a\n  tuning sync-level=none\n  verify-new true\n",
			Datastore{Name: "abc", Path: "/b", Tuning: "sync-level=file"},
			"datastore: abc\n  gc-schedule daily\n  path /b\n  tuning sync-level=file\n  verify-new true\n",
		},
		{
			"insert sorted",
			"datastore: abc\n\tgc-schedule daily\n\tpath /a\n\tverify-new true\n",
			Datastore{Name: "abc", Path: "/a", Tuning: "sync-level=file", Comment: "c"},
			"datastore: abc\n\tcomment c\n\tgc-schedule daily\n\tpath /a\n\ttuning sync-level=file\n\tverify-new true\n",
		},
		{
			"insert after last property, before trailing comment",
			"datastore: abc\n\tpath /a\n\t# note\n\ndatastore: def\n\tpath /d\n",
			Datastore{Name: "abc", Path: "/a", Tuning: "sync-level=file"},
			"datastore: abc\n\tpath /a\n\ttuning sync-level=file\n\t# note\n\ndatastore: def\n\tpath /d\n",
		},
		{
			"insert into last section without final newline",
			"datastore: abc\n\tpath /a",
			Datastore{Name: "abc", Path: "/a", Tuning: "sync-level=file"},
			"datastore: abc\n\tpath /a\n\ttuning sync-level=file\n",
		},
		{
			"remove",
			"datastore: abc\n\tcomment old\n\tpath /a\n\ttuning sync-level=file\n\tx y\n",
			Datastore{Name: "abc", Path: "/a"},
			"datastore: abc\n\tpath /a\n\tx y\n",
		},
		{
			"empty values are replaced",
			"datastore: abc\n\tcomment\n\tpath /a\n",
			Datastore{Name: "abc", Path: "/a", Comment: "now"},
			"datastore: abc\n\tcomment now\n\tpath /a\n",
		},
		{
			"crlf",
			"datastore: abc\r\n\tpath /a\r\n",
			Datastore{Name: "abc", Path: "/b", Comment: "c"},
			"datastore: abc\r\n\tcomment c\r\n\tpath /b\r\n",
		},
		{
			"values made one line",
			"",
			Datastore{Name: "abc", Path: "/a", Comment: " evil\n\ndatastore: x\n\tpath /etc \x7f"},
			"datastore: abc\n\tcomment evil  datastore: x  path /etc\n\tpath /a\n",
		},
		{
			"same name in another section type is not it",
			"foo: abc\n\tpath /x\n",
			Datastore{Name: "abc", Path: "/a"},
			"foo: abc\n\tpath /x\n\ndatastore: abc\n\tpath /a\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkSetDatastore(t, tt.give, tt.set, tt.want) })
	}
}

// TestSetDatastoreAppends: a new datastore goes after all the file holds,
// with one blank line before it.
func TestSetDatastoreAppends(t *testing.T) {
	def := Datastore{Name: "def", Path: "/d"}
	tests := []struct {
		name string
		give string
		want string
	}{
		{"after a section", "datastore: abc\n\tpath /a\n", "datastore: abc\n\tpath /a\n\ndatastore: def\n\tpath /d\n"},
		{"after a section without final newline", "datastore: abc\n\tpath /a", "datastore: abc\n\tpath /a\n\ndatastore: def\n\tpath /d\n"},
		{"after a trailing blank line", "datastore: abc\n\tpath /a\n\n", "datastore: abc\n\tpath /a\n\ndatastore: def\n\tpath /d\n"},
		{"after a comment", "# only a comment", "# only a comment\n\ndatastore: def\n\tpath /d\n"},
		{"after an unknown section", "foo: bar\n\tx 1\n", "foo: bar\n\tx 1\n\ndatastore: def\n\tpath /d\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkSetDatastore(t, tt.give, def, tt.want) })
	}
	t.Run("s3 backend", func(t *testing.T) {
		s3 := Datastore{Name: "s3st", Path: "/c", Backend: "type=s3,client=ep1,bucket=b1", Comment: "x"}
		checkSetDatastore(t, "datastore: abc\n\tpath /a\n", s3,
			"datastore: abc\n\tpath /a\n\ndatastore: s3st\n\tbackend type=s3,client=ep1,bucket=b1\n\tcomment x\n\tpath /c\n")
	})
}

// checkSetDatastore asserts that SetDatastore(set) on the config give
// makes want, and that want reads back set (its comment made one line).
func checkSetDatastore(t *testing.T, give string, set Datastore, want string) {
	t.Helper()
	c := parseString(t, give)
	c.SetDatastore(set)
	rtest.Equal(t, "config after SetDatastore", want, string(c.Bytes()))
	back := parseString(t, want)
	got, found := back.Datastore(set.Name)
	if !found {
		t.Fatalf("%s not found after SetDatastore", set.Name)
	}
	set.Comment = cleanValue(set.Comment)
	rtest.Equal(t, "datastore read back", set, got)
}

func TestValidateStoreName(t *testing.T) {
	tests := []struct {
		give string
		want bool
	}{
		{"abc", true},
		{"store1", true},
		{"_a_", true},
		{"0ab", true},
		{"a.b-c_d", true},
		{"A-Z.09", true},
		{strings.Repeat("x", 32), true},
		{"", false},
		{"ab", false},
		{strings.Repeat("x", 33), false},
		{".abc", false},
		{"-abc", false},
		{"a b", false},
		{"a/b", false},
		{"abc:", false},
		{"abc\n", false},
		{"ab\u00e9", false},
		{"..", false},
		{"a\x00bc", false},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			err := ValidateStoreName(tt.give)
			if (err == nil) != tt.want {
				t.Fatalf("ValidateStoreName(%q) = %v, want valid %v", tt.give, err, tt.want)
			}
			if err != nil && !errors.Is(err, ErrInvalidStoreName) {
				t.Errorf("error %v does not match ErrInvalidStoreName", err)
			}
		})
	}
}

func TestDatastoreValidate(t *testing.T) {
	good := Datastore{Name: "abc", Path: "/a", Tuning: "gc-atime-cutoff=60", Comment: "x y"}
	rtest.OK(t, good.Validate())
	tests := []struct {
		name   string
		give   func(d *Datastore)
		wantIn string
	}{
		{"bad name", func(d *Datastore) { d.Name = "a" }, "invalid datastore name"},
		{"no path", func(d *Datastore) { d.Path = "" }, "empty path"},
		{"bad tuning", func(d *Datastore) { d.Tuning = "gc-atime-cutoff=0" }, "gc-atime-cutoff=0: out of range"},
		{"newline in comment", func(d *Datastore) { d.Comment = "a\nb" }, "control characters"},
		{"tab in path", func(d *Datastore) { d.Path = "/a\tb" }, "control characters"},
		{"trailing space", func(d *Datastore) { d.Comment = "a " }, "white space"},
		{"invalid utf-8", func(d *Datastore) { d.Comment = "a\xffb" }, "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := good
			tt.give(&d)
			err := d.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantIn)
			}
		})
	}
}

// noTmp fails when dir holds anything but the names in want.
func noTmp(t *testing.T, dir string, want ...string) {
	t.Helper()
	rtest.Equal(t, "directory entries", want, rtest.DirNames(t, dir))
}

func TestWriteFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "chunkgc")
	path := filepath.Join(dir, "datastore.cfg")
	c := &File{}
	c.SetDatastore(Datastore{Name: "store1", Path: "/mnt/s1", Tuning: "gc-atime-cutoff=60"})
	rtest.OK(t, c.WriteFile(path, fsys.Keep)) // creates the parent dirs
	fi, err := os.Stat(dir)
	rtest.OK(t, err)
	if !fi.IsDir() {
		t.Fatalf("%s is not a directory", dir)
	}
	noTmp(t, dir, "datastore.cfg")
	fi, err = os.Stat(path)
	rtest.OK(t, err)
	rtest.Equal(t, "mode", fs.FileMode(0o640), fi.Mode())
	b, err := os.ReadFile(path)
	rtest.OK(t, err)
	rtest.Equal(t, "content", string(c.Bytes()), string(b))

	// Replace: a hard link to the old file keeps the old content (the new
	// file was renamed into place, not written over the old one), and the
	// mode is 0640 whatever it was.
	old := filepath.Join(dir, "..", "old.cfg")
	rtest.OK(t, os.Link(path, old))
	rtest.OK(t, os.Chmod(path, 0o600))
	c.SetDatastore(Datastore{Name: "store2", Path: "/mnt/s2"})
	rtest.OK(t, c.WriteFile(path, fsys.Keep))
	noTmp(t, dir, "datastore.cfg")
	fi, err = os.Stat(path)
	rtest.OK(t, err)
	rtest.Equal(t, "mode after replace", fs.FileMode(0o640), fi.Mode())
	got, err := Read(path)
	rtest.OK(t, err)
	rtest.Equal(t, "datastores after replace", 2, len(got.Datastores()))
	ob, err := os.ReadFile(old)
	rtest.OK(t, err)
	rtest.Equal(t, "content of the old hard link", string(b), string(ob))
}

func TestWriteFileChown(t *testing.T) {
	if os.Geteuid() != 0 {
		rtest.SkipOrFail(t, "chown needs root")
	}
	path := filepath.Join(t.TempDir(), "datastore.cfg")
	c := parseString(t, "datastore: abc\n\tpath /a\n")
	rtest.OK(t, c.WriteFile(path, fsys.Owner{UID: 0, GID: 65534}))
	owner := func() (uint32, uint32) {
		fi, err := os.Stat(path)
		rtest.OK(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}
	uid, gid := owner()
	rtest.Equal(t, "owner", [2]uint32{0, 65534}, [2]uint32{uid, gid})
	rtest.OK(t, c.WriteFile(path, fsys.Owner{UID: 65534, GID: -1})) // GID -1 keeps the group of the new file: root's
	uid, gid = owner()
	rtest.Equal(t, "owner after a chown that keeps the group", [2]uint32{65534, uint32(os.Getegid())}, [2]uint32{uid, gid})
}

func TestWriteFileSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.cfg")
	link := filepath.Join(dir, "datastore.cfg")
	rtest.OK(t, os.WriteFile(target, []byte("# old\n"), 0o644))
	rtest.OK(t, os.Symlink("real.cfg", link))
	c := parseString(t, "# new\n")
	rtest.OK(t, c.WriteFile(link, fsys.Keep))
	fi, err := os.Lstat(link)
	rtest.OK(t, err)
	if fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("the symlink was replaced")
	}
	b, err := os.ReadFile(target)
	rtest.OK(t, err)
	rtest.Equal(t, "target content", "# new\n", string(b))
	noTmp(t, dir, "datastore.cfg", "real.cfg")
}

func TestWriteFileDanglingSymlink(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "datastore.cfg")
	rtest.OK(t, os.Symlink("pbs/datastore.cfg", link))
	c := parseString(t, "# new\n")
	rtest.OK(t, c.WriteFile(link, fsys.Keep))
	b, err := os.ReadFile(filepath.Join(dir, "pbs", "datastore.cfg"))
	rtest.OK(t, err)
	rtest.Equal(t, "content written through the dangling link", "# new\n", string(b))

	loop := filepath.Join(dir, "loop.cfg")
	rtest.OK(t, os.Symlink("loop.cfg", loop))
	err = c.WriteFile(loop, fsys.Keep)
	if !errors.Is(err, syscall.ELOOP) {
		t.Errorf("error %v, want ELOOP", err)
	}
	noTmp(t, dir, "datastore.cfg", "loop.cfg", "pbs")
}

func TestParseReadError(t *testing.T) {
	_, err := Parse(iotest.ErrReader(syscall.EIO), "pipe")
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "pipe") {
		t.Errorf("error %v, want EIO naming pipe", err)
	}
}

func TestWriteFileErrorLeavesNoTmp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "datastore.cfg")
	rtest.OK(t, os.Mkdir(path, 0o755)) // rename of a file over a directory fails
	rtest.OK(t, os.WriteFile(filepath.Join(path, "keep"), nil, 0o644))
	c := parseString(t, "# x\n")
	err := c.WriteFile(path, fsys.Keep)
	if err == nil || !strings.Contains(err.Error(), "write datastore config "+path) {
		t.Fatalf("error %v, want one naming %s", err, path)
	}
	noTmp(t, dir, "datastore.cfg")

	// The parent is a file: MkdirAll fails.
	err = c.WriteFile(filepath.Join(path, "keep", "x.cfg"), fsys.Keep)
	if err == nil {
		t.Fatal("no error writing below a regular file")
	}
}

// TestBackendType: the backend property's type, from PBS's property string
// (a type key or a lone value, PBS's default key); absent is the
// filesystem.
func TestBackendType(t *testing.T) {
	for _, row := range []struct{ backend, typ string }{
		{"", BackendFilesystem},
		{"type=filesystem", BackendFilesystem},
		{"type=s3,client=ep1,bucket=bucket1", BackendS3},
		{"client=ep1, type = s3 ,bucket=bucket1,max-cache-size=1G", BackendS3},
		{"s3,client=ep1,bucket=bucket1", BackendS3},
	} {
		f := parseString(t, "datastore: st1\n\tpath /srv/st1\n\tbackend "+row.backend+"\n")
		d, ok := f.Datastore("st1")
		if !ok {
			t.Fatal("st1 not found")
		}
		rtest.Equal(t, "Backend", strings.TrimSpace(row.backend), d.Backend)
		b, err := d.ParseBackend()
		rtest.OK(t, err)
		rtest.Equal(t, "type of "+row.backend, row.typ, b.Type)
	}
}
