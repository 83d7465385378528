package config

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// go test -run '^$' -fuzz FuzzParse -fuzztime 60s ./config
func FuzzParse(f *testing.F) {
	// More seeds are in testdata/fuzz/FuzzParse.
	if b, err := os.ReadFile(pbsConfig); err == nil {
		f.Add(b)
	}
	f.Add([]byte("datastore: store1\n\tpath /mnt/datastore/store1\n\ttuning gc-atime-safety-check=1,gc-atime-cutoff=1445\n\tcomment main pool\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(bytes.NewReader(b), "fuzz.cfg")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.cfg:") {
				t.Errorf("error %q does not name the file", err)
			}
			return
		}
		if !bytes.Equal(b, c.Bytes()) {
			t.Fatalf("Bytes() = %q, want the input %q", c.Bytes(), b)
		}
		before := c.Datastores()
		for _, d := range before {
			if err := ValidateStoreName(d.Name); err != nil || d.Path == "" {
				t.Fatalf("parsed datastore %+v: name %v, path %q", d, err, d.Path)
			}
		}

		// Updating the first store and adding one keeps the rest and
		// reads back as set.
		set := []Datastore{{Name: "fuzz-new", Path: "/fuzz", Tuning: "gc-atime-cutoff=5", Comment: "added"}}
		if len(before) > 0 && before[0].Name != "fuzz-new" {
			set = append(set, Datastore{Name: before[0].Name, Path: "/changed", Comment: "c"})
		}
		for _, d := range set {
			c.SetDatastore(d)
		}
		c2, err := Parse(bytes.NewReader(c.Bytes()), "fuzz.cfg")
		if err != nil {
			t.Fatalf("config after SetDatastore does not parse: %v\n%q", err, c.Bytes())
		}
		for _, d := range set {
			if got, found := c2.Datastore(d.Name); !found || got != d {
				t.Fatalf("after SetDatastore(%+v): got %+v, %v\n%q", d, got, found, c.Bytes())
			}
		}
		for _, d := range before[min(1, len(before)):] {
			if got, _ := c2.Datastore(d.Name); got != d {
				t.Fatalf("datastore %+v became %+v\n%q", d, got, c.Bytes())
			}
		}
		if len(c2.Datastores()) != len(before)+1 && !(len(before) > 0 && before[0].Name == "fuzz-new") {
			t.Fatalf("%d datastores after adding one to %d", len(c2.Datastores()), len(before))
		}
	})
}
