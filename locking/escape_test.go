package locking

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

// systemdEscape runs the real `systemd-escape --path`, or skips t when it
// is not installed (a failure under CI).
func systemdEscape(t *testing.T, s string) string {
	t.Helper()
	bin, err := exec.LookPath("systemd-escape")
	if err != nil {
		rtest.SkipOrFail(t, "systemd-escape not installed")
	}
	out, err := exec.Command(bin, "--path", "--", s).Output()
	if err != nil {
		t.Fatalf("systemd-escape --path %q: %v", s, err)
	}
	return strings.TrimSuffix(string(out), "\n")
}

// TestEscapePath checks EscapePath against want and against the real
// systemd-escape --path, except for the inputs systemd-escape refuses
// ("." and ".." components): for those EscapePath returns no error all the
// same, so its result is pinned, deterministic and without a path
// separator.
func TestEscapePath(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    string
		refused bool // by systemd-escape
	}{
		{name: "group", give: "vm/100", want: "vm-100"},
		{name: "snapshot", give: "vm/100/2022-05-02T08:11:33Z", want: `vm-100-2022\x2d05\x2d02T08:11:33Z`},
		{name: "dotted dashed id", give: "ct/my.host-1/2025-04-04T15:02:49Z", want: `ct-my.host\x2d1-2025\x2d04\x2d04T15:02:49Z`},
		{name: "spaces", give: "host/my backup/x y", want: `host-my\x20backup-x\x20y`},
		{name: "unicode", give: "vm/ümlaut/日本", want: `vm-\xc3\xbcmlaut-\xe6\x97\xa5\xe6\x9c\xac`},
		{name: "leading dot", give: ".hidden/.x", want: `\x2ehidden-.x`},
		{name: "only dots", give: "...", want: `\x2e..`},
		{name: "double and trailing slash", give: "a//b/", want: "a-b"},
		{name: "root", give: "/", want: "-"},
		{name: "many slashes", give: "///", want: "-"},
		{name: "empty", give: "", want: "-"},
		{name: "absolute", give: "/mnt/datastore/store1", want: "mnt-datastore-store1"},
		{name: "dot components", give: "./a/./b/.", want: "a-b"},
		{name: "dot component before hidden", give: "./.x", want: `\x2ex`},
		{name: "backslash", give: `a\b`, want: `a\x5cb`},
		{name: "dash", give: "-", want: `\x2d`},
		{name: "colon and underscore", give: "a:b_c", want: "a:b_c"},
		{name: "punctuation", give: "x~y+z@w%v", want: `x\x7ey\x2bz\x40w\x25v`},
		{name: "control byte", give: "a\x01b", want: `a\x01b`},
		{name: "invalid utf-8", give: "a\xffb", want: `a\xffb`},
		{name: "dot", give: ".", want: "-", refused: true},
		{name: "dotdot", give: "..", want: `\x2e.`, refused: true},
		{name: "dotdot inside", give: "a/../b", want: "a-..-b", refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := EscapePath(tt.give)
			rtest.Equal(t, "got", tt.want, got)
			if !tt.refused {
				rtest.Equal(t, "got", systemdEscape(t, tt.give), got)
			}
		})
	}
}

func TestLockFileName(t *testing.T) {
	ns7 := []string{"ns1", "ns2", "ns3", "ns4", "ns5", "ns6", "ns7"}
	const snap = `2022\x2d05\x2d02T08\x3a11\x3a33Z` // escaped "2022-05-02T08:11:33Z"
	tests := []struct {
		name string
		ns   []string
		rel  string
		want string
	}{
		// The three examples of lock_file_path_helper (seed 001).
		{name: "group", rel: "vm/100", want: "vm-100"},
		{name: "snapshot", rel: "vm/100/2022-05-02T08:11:33Z", want: "vm-100-" + snap},
		{name: "seven namespaces", ns: ns7, rel: "vm/100/2022-05-02T08:11:33Z",
			want: "ns1:ns2:ns3:ns4:ns5:ns6:ns7/vm-100-" + snap},

		{name: "empty namespace", ns: []string{}, rel: "ct/101", want: "ct-101"},
		{name: "one namespace", ns: []string{"prod"}, rel: "host/my.host-1", want: `prod/host-my.host\x2d1`},
		{name: "escaped 254 bytes", rel: "vm/" + strings.Repeat("a", 251), want: "vm-" + strings.Repeat("a", 251)},
		{name: "escaped 255 bytes is hashed", rel: "vm/" + strings.Repeat("a", 252),
			want: "hashed/vm-" + strings.Repeat("a", 77) + "..." + strings.Repeat("a", 80) +
				"-e563063363edb2a04bb53447895c682f083b3c2f9511bfde1ae160cadb3bd207"},
		{name: "hashed snapshot in namespaces", ns: ns7[:3], rel: "vm/" + strings.Repeat("a", 300) + "/2022-05-02T08:11:33Z",
			want: "ns1:ns2:ns3/hashed/vm-" + strings.Repeat("a", 77) + "..." + strings.Repeat("a", 47) + "-" + snap +
				"-d312595ea07de7c7e2e8f2f76c375cace0cf94089662784a1c7bdfaeda8c4d9e"},
		{name: "hashed cut inside escapes", rel: "ct/" + strings.Repeat("-", 100),
			want: `hashed/ct-` + strings.Repeat(`\x2d`, 19) + `\...` + strings.Repeat(`\x2d`, 20) +
				"-1e86805c983d22d18e6baeffb194839c7473194896e15762cd1e894732d1b412"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := LockFileName(tt.ns, tt.rel)
			rtest.Equal(t, "got", tt.want, got)
			base := got[strings.LastIndexByte(got, '/')+1:]
			if len(base) >= maxLockName {
				t.Errorf("file name is %d bytes, want < %d", len(base), maxLockName)
			}
		})
	}
}

// TestLockFileNameDiffersFromSystemdOnlyInColon documents why LockFileName
// does not use EscapePath: PBS's escaping escapes ":", systemd-escape keeps it.
func TestLockFileNameDiffersFromSystemdOnlyInColon(t *testing.T) {
	for _, rel := range []string{"vm/100", "ct/my.host-1/2025-04-04T15:02:49Z", ".x/y z/ü"} {
		want := strings.ReplaceAll(systemdEscape(t, rel), ":", `\x3a`)
		rtest.Equal(t, "LockFileName(nil, rel)", want, LockFileName(nil, rel))
	}
}

// TestDefaultRoot: the default lock directory of a store is
// <DefaultRoot>/<store>, /run/chunkgc/locks/<store>.
func TestDefaultRoot(t *testing.T) {
	rtest.Equal(t, "default lock dir", "/run/chunkgc/locks/store1", filepath.Join(DefaultRoot, "store1"))
}
