package promcheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

// TestCheck: a well-formed textfile passes, one that breaks the format and
// one that breaks a naming convention (a counter without _total) fail.
func TestCheck(t *testing.T) {
	promtool := Promtool(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		name, text string
		wantErr    bool
	}{
		{"good", "# HELP x_seconds A duration.\n# TYPE x_seconds gauge\nx_seconds 1\n", false},
		{"bad format", "# TYPE x gauge\nx one\n", true},
		{"counter without _total", "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests 1\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".prom")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			r := &rtest.Recorder{TB: t}
			Check(r, promtool, path)
			if got := len(r.ErrorTexts) > 0; got != tt.wantErr {
				t.Errorf("Check(%q) reported an error: %v, want %v (%v)", tt.text, got, tt.wantErr, r.ErrorTexts)
			}
		})
	}
}
