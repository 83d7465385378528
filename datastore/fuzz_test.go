package datastore

import (
	"strings"
	"testing"
)

// FuzzParseSnapshot checks that a parsed snapshot prints back exactly as
// given and that its index paths are in the scheme.
func FuzzParseSnapshot(f *testing.F) {
	for _, s := range []string{"vm/100/" + t1, "ct/a.b/1970-01-01T00:00:00Z", "host/x/2025-02-30T00:00:00Z", "vm/1/2025-04-04T15:02:49.5Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		snap, err := ParseSnapshot(s)
		if err != nil {
			return
		}
		if got := snap.RelPath(); got != s {
			t.Fatalf("ParseSnapshot(%q).RelPath() = %q", s, got)
		}
		if !InScheme(s + "/x.fidx") {
			t.Fatalf("InScheme(%q) = false for a parsed snapshot", s+"/x.fidx")
		}
	})
}

// FuzzParseNamespace checks the namespace round trip and that a parsed
// namespace gives scheme paths.
func FuzzParseNamespace(f *testing.F) {
	for _, s := range []string{"", "a", "a/b/c/d/e/f/g", "a/b/c/d/e/f/g/h", "a//b", ".x", "a-b/_c.d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ns, err := ParseNamespace(s)
		if err != nil {
			return
		}
		if ns.String() != s {
			t.Fatalf("ParseNamespace(%q).String() = %q", s, ns.String())
		}
		rel := ns.RelPath()
		if rel != "" {
			rel += "/"
		}
		if !InScheme(rel + "vm/1/" + t1 + "/x.didx") {
			t.Fatalf("InScheme false for namespace %q", s)
		}
		if strings.Count(rel, "/") != 2*len(ns) {
			t.Fatalf("RelPath(%q) = %q", s, rel)
		}
	})
}

// FuzzInScheme checks InScheme against the parsers it must agree with.
func FuzzInScheme(f *testing.F) {
	for _, s := range []string{"vm/100/" + t1 + "/a.fidx", "ns/a/ct/1/" + t1 + "/b.didx", "stray/x.fidx", "ns/vm/1/" + t1 + "/x.fidx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		if !InScheme(rel) {
			return
		}
		parts := strings.Split(rel, "/")
		n := len(parts)
		nsParts := parts[:n-4]
		var comps []string
		for i := 1; i < len(nsParts); i += 2 {
			comps = append(comps, nsParts[i])
		}
		if _, err := ParseNamespace(strings.Join(comps, "/")); err != nil {
			t.Fatalf("InScheme(%q) but namespace: %v", rel, err)
		}
		if _, err := ParseSnapshot(strings.Join(parts[n-4:n-1], "/")); err != nil {
			t.Fatalf("InScheme(%q) but snapshot: %v", rel, err)
		}
		if !isIndexName(parts[n-1]) {
			t.Fatalf("InScheme(%q) but %q is no index name", rel, parts[n-1])
		}
	})
}
