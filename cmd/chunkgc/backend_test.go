package main

import (
	"os"
	"path/filepath"
	"testing"

	"chunkgc/internal/testkit/testfs"
)

// TestRefusesUnknownBackend: a datastore.cfg entry whose backend chunkgc
// cannot collect names a path that is not the whole store. Every command
// that opens a store refuses it, by name and by path, with exit 1 and an
// error naming the store and the backend, and removes nothing: an unknown
// type, an S3 backend whose property is invalid, and an S3 datastore for
// the commands that do not support S3 yet (gc of one whose endpoint is not
// in s3.cfg fails naming it).
func TestRefusesUnknownBackend(t *testing.T) {
	all := [][]string{{"gc", "st1"}, {"gc", "--dry-run", "st1"}, {"check-atime", "st1"}, {"status", "st1"}, {"usage", "st1"}, {"restore", "st1"}}
	for _, tt := range []struct {
		backend string
		want    func(args []string) []string
	}{
		{"type=tape", func([]string) []string { return []string{"unsupported datastore backend", "tape"} }},
		{"type=s3,client=ep1,bucket=b1", func([]string) []string { return []string{"unsupported datastore backend", "bucket"} }},
		{"s3,client=ep1", func([]string) []string {
			return []string{"unsupported datastore backend", "needs client=ID and bucket=NAME"}
		}},
		{"type=s3,client=ep1,bucket=bucket1", func(args []string) []string {
			switch args[0] {
			case "usage", "restore":
				return []string{"unsupported datastore backend", "does not collect S3 datastores yet"}
			case "gc":
				return []string{`ep1`, "is not an s3-endpoint"}
			}
			return nil
		}},
	} {
		t.Run(tt.backend, func(t *testing.T) {
			base := filepath.Join(testfs.Tmpfs(t, ""), "s")
			s := makeStore(t, base, 5, 5)
			c := newCLI(t)
			cfg := "datastore: st1\n\tbackend " + tt.backend + "\n\tpath " + base + "\n"
			if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range append(all, []string{"gc", base}) {
				want := tt.want(args)
				if want == nil {
					continue // supported
				}
				wantCode(t, c.run(args...), exitError, append(want, "st1")...)
			}
			if n := countExisting(s.garbage); n != len(s.garbage) {
				t.Errorf("%d of %d garbage chunks of the cache removed", len(s.garbage)-n, len(s.garbage))
			}
		})
	}
	t.Run("filesystem", func(t *testing.T) {
		base := filepath.Join(testfs.Tmpfs(t, ""), "s")
		s := makeStore(t, base, 5, 5)
		c := newCLI(t)
		cfg := "datastore: st1\n\tbackend type=filesystem\n\tpath " + base + "\n\ttuning gc-atime-safety-check=false\n"
		if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		wantCode(t, c.run("gc", "st1"), 0)
		if n := countExisting(s.garbage); n != 0 {
			t.Errorf("%d of %d garbage chunks left by a filesystem-backend GC", n, len(s.garbage))
		}
	})
}
