package tuning

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// go test -run '^$' -fuzz FuzzParse -fuzztime 60s ./tuning
func FuzzParse(f *testing.F) {
	// More seeds are in testdata/fuzz/FuzzParse.
	f.Add("gc-atime-safety-check=0,gc-atime-cutoff=60")
	f.Add("sync-level=file,chunk-order=none,gc-cache-capacity=0,gc-concurrency=256")
	f.Add("gc-max-clock-skew=900")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tuning ") {
				t.Errorf("Parse(%q) error %q does not start with \"tuning \"", s, err)
			}
			return
		}
		out := p.String()
		q, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but Parse of its String %q: %v", s, out, err)
		}
		if !reflect.DeepEqual(p, q) || q.String() != out {
			t.Fatalf("Parse(%q).String() = %q parses to %q", s, out, q)
		}
		tu := p.Apply(Defaults())
		if tu.AtimeCutoff < time.Minute || tu.AtimeCutoff > 2880*time.Minute || tu.AtimeCutoff%time.Minute != 0 ||
			tu.CacheCapacity < 0 || tu.CacheCapacity > 8<<20 || tu.Concurrency < 0 || tu.Concurrency > 256 ||
			tu.MaxClockSkew < 0 || tu.MaxClockSkew > time.Hour || tu.MaxClockSkew%time.Second != 0 ||
			tu.SyncLevel > SyncFile || tu.ChunkOrder > OrderInode {
			t.Fatalf("Parse(%q) applies to an out-of-range %+v", s, tu)
		}
		var r Props
		if err := r.Set(s); err != nil || !reflect.DeepEqual(p, r) {
			t.Fatalf("Set(%q) = %v, %q; Parse gave %q", s, err, r, p)
		}
	})
}
