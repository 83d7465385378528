package objstore

import (
	"strings"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

// TestInUseMarker: the marker is PBS's serde output byte for byte, parses
// back, and content that is no JSON object is an error; the node name has
// no domain part.
func TestInUseMarker(t *testing.T) {
	rtest.Equal(t, "marker", `{"hostname":"pbs1"}`, string(InUse{Hostname: "pbs1"}.Marshal()))
	rtest.Equal(t, "marker without a host", `{}`, string(InUse{}.Marshal()))
	for _, tt := range []struct {
		give string
		want string
	}{
		{`{"hostname":"pbs1"}`, "pbs1"},
		{`{"hostname": "pbs2", "other": 1}`, "pbs2"},
		{`{}`, ""},
	} {
		m, err := ParseInUse([]byte(tt.give))
		rtest.OK(t, err)
		rtest.Equal(t, tt.give, tt.want, m.Hostname)
	}
	for _, give := range []string{``, `pbs1`, `["pbs1"]`} {
		if _, err := ParseInUse([]byte(give)); err == nil {
			t.Errorf("ParseInUse(%q): no error", give)
		}
	}
	n, err := Nodename()
	rtest.OK(t, err)
	if n == "" || strings.Contains(n, ".") {
		t.Errorf("Nodename() = %q, want a name without a dot", n)
	}
	rtest.Equal(t, "in-use key", "st1/.in-use", InUseKey("st1"))
	rtest.Equal(t, "content key", "st1/.cnt/ns/a/vm/100/owner", ContentKey("st1", "ns/a/vm/100/owner"))
}
