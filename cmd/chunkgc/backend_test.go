package main

import (
	"os"
	"path/filepath"
	"testing"

	"chunkgc/internal/testkit/testfs"
)

// TestRefusesS3Backend: a datastore.cfg entry whose backend is PBS's S3
// object store (or any type but the filesystem) names a path that is only
// the bucket's local cache. Every command that opens a store refuses it,
// by name and by path, with exit 1 and an error naming the store and the
// backend; GC removes nothing from the cache.
func TestRefusesS3Backend(t *testing.T) {
	for _, backend := range []string{"type=s3,client=c1,bucket=b1", "s3,client=c1,bucket=b1", "type=tape"} {
		t.Run(backend, func(t *testing.T) {
			base := filepath.Join(testfs.Tmpfs(t, ""), "s")
			s := makeStore(t, base, 5, 5)
			c := newCLI(t)
			cfg := "datastore: st1\n\tbackend " + backend + "\n\tpath " + base + "\n"
			if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"gc", "st1"}, {"gc", base}, {"gc", "--dry-run", "st1"},
				{"check-atime", "st1"}, {"status", "st1"}, {"usage", "st1"}, {"restore", "st1"},
			} {
				wantCode(t, c.run(args...), exitError, "st1", backend, "unsupported datastore backend")
			}
			if n := countExisting(s.garbage); n != len(s.garbage) {
				t.Errorf("%d of %d garbage chunks of the S3 cache removed", len(s.garbage)-n, len(s.garbage))
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
