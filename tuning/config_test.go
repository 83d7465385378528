package tuning

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
)

var update = flag.Bool("update", false, "rewrite the golden files under ../testdata/tuning")

const pbsConfig = "../testdata/tuning/pbs-datastore.cfg"

func parseString(t *testing.T, s string) *Config {
	t.Helper()
	c, err := ParseConfig(strings.NewReader(s), "test.cfg")
	ok(t, err)
	return c
}

// golden compares got with the file at path, or rewrites it under -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		ok(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	ok(t, err)
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs (run go test -update to rewrite it)\nwant:\n%s\ngot:\n%s", path, want, got)
	}
}

func TestPBSConfigRoundTrip(t *testing.T) {
	raw, err := os.ReadFile(pbsConfig)
	ok(t, err)
	c, err := ReadConfig(pbsConfig)
	ok(t, err)
	if got := c.Bytes(); !bytes.Equal(raw, got) {
		t.Fatalf("Bytes differs from the file\nwant:\n%q\ngot:\n%q", raw, got)
	}
	want := []Datastore{
		{Name: "store1", Path: "/mnt/datastore/store1", Tuning: "gc-atime-safety-check=1,gc-atime-cutoff=1445", Comment: "main pool"},
		{Name: "offsite_2", Path: "/mnt/datastore/offsite-2", Tuning: "chunk-order=none,sync-level=file,gc-cache-capacity=524288", Comment: "offsite copy: synced nightly, kept 30 days"},
		{Name: "usb.removable", Path: "/mnt/removable"},
		{Name: "scratch", Path: "/srv/scratch"},
	}
	equal(t, want, c.Datastores())
	for _, d := range want {
		got, found := c.Datastore(d.Name)
		if !found {
			t.Fatalf("Datastore(%q) not found", d.Name)
		}
		equal(t, d, got)
		_, err := Parse(got.Tuning)
		ok(t, err)
	}
	// Sections of other types are not datastores.
	if d, found := c.Datastore("minio-lab"); found {
		t.Errorf("Datastore(minio-lab) = %+v, want not found", d)
	}
	p := mustParse(t, want[1].Tuning)
	equal(t, SyncFile, p.Apply(Defaults()).SyncLevel)
	equal(t, OrderNone, p.Apply(Defaults()).ChunkOrder)
}

// TestPBSConfigSetDatastore edits the PBS config the way create and an
// operator would, and checks the result against a golden file and that
// every line chunkgc does not own is still there.
func TestPBSConfigSetDatastore(t *testing.T) {
	raw, err := os.ReadFile(pbsConfig)
	ok(t, err)
	c, err := ReadConfig(pbsConfig)
	ok(t, err)
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
		ok(t, d.Validate())
		c.SetDatastore(d)
	}
	got := c.Bytes()
	golden(t, "../testdata/tuning/pbs-datastore-set.cfg", got)

	c2, err := ParseConfig(bytes.NewReader(got), "edited")
	ok(t, err)
	equal(t, edits[:1], c2.Datastores()[:1])
	for _, d := range edits {
		back, found := c2.Datastore(d.Name)
		if !found {
			t.Fatalf("%s lost", d.Name)
		}
		equal(t, d, back)
	}
	// Order: existing sections keep their place, the new one is last.
	var names []string
	for _, d := range c2.Datastores() {
		names = append(names, d.Name)
	}
	equal(t, []string{"store1", "offsite_2", "usb.removable", "scratch", "newstore"}, names)

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
	c, err := ReadConfig(pbsConfig)
	ok(t, err)
	before := c.Bytes()
	for _, d := range c.Datastores() {
		c.SetDatastore(d)
	}
	if !bytes.Equal(before, c.Bytes()) {
		t.Errorf("SetDatastore with the current values changed the config:\n%s", c.Bytes())
	}
}

func TestParseConfigGood(t *testing.T) {
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
			equal(t, tt.want, c.Datastores())
			equal(t, tt.give, string(c.Bytes()))
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
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
			c, err := ParseConfig(strings.NewReader(tt.give), "/etc/x.cfg")
			if err == nil {
				t.Fatalf("no error; parsed %q", c.Bytes())
			}
			ce, isCE := errors.AsType[*ConfigError](err)
			if !isCE {
				t.Fatalf("error %T %v, want *ConfigError", err, err)
			}
			equal(t, "/etc/x.cfg", ce.Path)
			if strings.Contains(tt.wantIn, "datastore name") != errors.Is(err, ErrInvalidStoreName) {
				t.Errorf("errors.Is(%v, ErrInvalidStoreName) = %v", err, errors.Is(err, ErrInvalidStoreName))
			}
			equal(t, tt.wantLine, ce.Line)
			if !strings.HasPrefix(err.Error(), "/etc/x.cfg:") || !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("message %q, want /etc/x.cfg:%d: …%s…", err, tt.wantLine, tt.wantIn)
			}
		})
	}
}

func TestReadConfigErrorNamesPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "datastore.cfg")
	ok(t, os.WriteFile(path, []byte("datastore: abc\n\tpath /a\nbad\n"), 0o644))
	_, err := ReadConfig(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":3: ") {
		t.Errorf("error %v, want it to start with %s:3:", err, path)
	}
	// A directory is not a config.
	_, err = ReadConfig(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "read datastore config") {
		t.Errorf("error %v, want a read error", err)
	}
}

func TestReadConfigMissing(t *testing.T) {
	c, err := ReadConfig(filepath.Join(t.TempDir(), "nope", "datastore.cfg"))
	ok(t, err)
	equal(t, 0, len(c.Bytes()))
	equal(t, []Datastore(nil), c.Datastores())
	_, found := c.Datastore("abc")
	equal(t, false, found)
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
			"after a section",
			"datastore: abc\n\tpath /a\n",
			Datastore{Name: "def", Path: "/d"},
			"datastore: abc\n\tpath /a\n\ndatastore: def\n\tpath /d\n",
		},
		{
			"after a section without final newline",
			"datastore: abc\n\tpath /a",
			Datastore{Name: "def", Path: "/d"},
			"datastore: abc\n\tpath /a\n\ndatastore: def\n\tpath /d\n",
		},
		{
			"after a trailing blank line",
			"datastore: abc\n\tpath /a\n\n",
			Datastore{Name: "def", Path: "/d"},
			"datastore: abc\n\tpath /a\n\ndatastore: def\n\tpath /d\n",
		},
		{
			"after a comment",
			"# only a comment",
			Datastore{Name: "def", Path: "/d"},
			"# only a comment\n\ndatastore: def\n\tpath /d\n",
		},
		{
			"after an unknown section",
			"foo: bar\n\tx 1\n",
			Datastore{Name: "def", Path: "/d"},
			"foo: bar\n\tx 1\n\ndatastore: def\n\tpath /d\n",
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
		t.Run(tt.name, func(t *testing.T) {
			c := parseString(t, tt.give)
			c.SetDatastore(tt.set)
			equal(t, tt.want, string(c.Bytes()))
			back := parseString(t, tt.want)
			got, found := back.Datastore(tt.set.Name)
			if !found {
				t.Fatalf("%s not found after SetDatastore", tt.set.Name)
			}
			want := tt.set
			want.Comment = cleanValue(want.Comment)
			equal(t, want, got)
		})
	}
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
	ok(t, good.Validate())
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
	entries, err := os.ReadDir(dir)
	ok(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	equal(t, want, names)
}

func TestWriteFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc", "chunkgc")
	path := filepath.Join(dir, "datastore.cfg")
	c := &Config{}
	c.SetDatastore(Datastore{Name: "store1", Path: "/mnt/s1", Tuning: "gc-atime-cutoff=60"})
	ok(t, c.WriteFile(path, -1, -1)) // creates the parent dirs
	fi, err := os.Stat(dir)
	ok(t, err)
	if !fi.IsDir() {
		t.Fatalf("%s is not a directory", dir)
	}
	noTmp(t, dir, "datastore.cfg")
	fi, err = os.Stat(path)
	ok(t, err)
	equal(t, fs.FileMode(0o640), fi.Mode())
	b, err := os.ReadFile(path)
	ok(t, err)
	equal(t, string(c.Bytes()), string(b))

	// Replace: a hard link to the old file keeps the old content (the new
	// file was renamed into place, not written over the old one), and the
	// mode is 0640 whatever it was.
	old := filepath.Join(dir, "..", "old.cfg")
	ok(t, os.Link(path, old))
	ok(t, os.Chmod(path, 0o600))
	c.SetDatastore(Datastore{Name: "store2", Path: "/mnt/s2"})
	ok(t, c.WriteFile(path, -1, -1))
	noTmp(t, dir, "datastore.cfg")
	fi, err = os.Stat(path)
	ok(t, err)
	equal(t, fs.FileMode(0o640), fi.Mode())
	got, err := ReadConfig(path)
	ok(t, err)
	equal(t, 2, len(got.Datastores()))
	ob, err := os.ReadFile(old)
	ok(t, err)
	equal(t, string(b), string(ob))
}

func TestWriteFileChown(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "" {
			t.Skip("chown needs root")
		}
		t.Fatal("chown needs root (CI runs as root)")
	}
	path := filepath.Join(t.TempDir(), "datastore.cfg")
	c := parseString(t, "datastore: abc\n\tpath /a\n")
	ok(t, c.WriteFile(path, 0, 65534))
	owner := func() (uint32, uint32) {
		fi, err := os.Stat(path)
		ok(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}
	uid, gid := owner()
	equal(t, [2]uint32{0, 65534}, [2]uint32{uid, gid})
	ok(t, c.WriteFile(path, 65534, -1)) // -1 keeps the group of the new file: root's
	uid, gid = owner()
	equal(t, [2]uint32{65534, uint32(os.Getegid())}, [2]uint32{uid, gid})
}

func TestWriteFileSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.cfg")
	link := filepath.Join(dir, "datastore.cfg")
	ok(t, os.WriteFile(target, []byte("# old\n"), 0o644))
	ok(t, os.Symlink("real.cfg", link))
	c := parseString(t, "# new\n")
	ok(t, c.WriteFile(link, -1, -1))
	fi, err := os.Lstat(link)
	ok(t, err)
	if fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("the symlink was replaced")
	}
	b, err := os.ReadFile(target)
	ok(t, err)
	equal(t, "# new\n", string(b))
	noTmp(t, dir, "datastore.cfg", "real.cfg")
}

func TestWriteFileDanglingSymlink(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "datastore.cfg")
	ok(t, os.Symlink("pbs/datastore.cfg", link))
	c := parseString(t, "# new\n")
	ok(t, c.WriteFile(link, -1, -1))
	b, err := os.ReadFile(filepath.Join(dir, "pbs", "datastore.cfg"))
	ok(t, err)
	equal(t, "# new\n", string(b))

	loop := filepath.Join(dir, "loop.cfg")
	ok(t, os.Symlink("loop.cfg", loop))
	err = c.WriteFile(loop, -1, -1)
	if !errors.Is(err, syscall.ELOOP) {
		t.Errorf("error %v, want ELOOP", err)
	}
	noTmp(t, dir, "datastore.cfg", "loop.cfg", "pbs")
}

func TestParseConfigReadError(t *testing.T) {
	_, err := ParseConfig(iotest.ErrReader(syscall.EIO), "pipe")
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "pipe") {
		t.Errorf("error %v, want EIO naming pipe", err)
	}
}

func TestWriteFileErrorLeavesNoTmp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "datastore.cfg")
	ok(t, os.Mkdir(path, 0o755)) // rename of a file over a directory fails
	ok(t, os.WriteFile(filepath.Join(path, "keep"), nil, 0o644))
	c := parseString(t, "# x\n")
	err := c.WriteFile(path, -1, -1)
	if err == nil || !strings.Contains(err.Error(), "write datastore config "+path) {
		t.Fatalf("error %v, want one naming %s", err, path)
	}
	noTmp(t, dir, "datastore.cfg")

	// The parent is a file: MkdirAll fails.
	err = c.WriteFile(filepath.Join(path, "keep", "x.cfg"), -1, -1)
	if err == nil {
		t.Fatal("no error writing below a regular file")
	}
}
