package main

import (
	"chunkgc/internal/fsys"

	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"chunkgc/backup"
	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/datastore"
	"chunkgc/gc"
	"chunkgc/locking"
	"chunkgc/tuning"
)

// demoChunk is the chunk size of the demo backups: small, so a few MiB of
// sample data make enough chunks to show deduplication.
const demoChunk = 256 << 10

// runDemo builds a sample store, ages it as if it were two days old, forgets
// one snapshot, adds some stray garbage and runs a real GC on it.
func runDemo(ctx context.Context, e *env, args []string) error {
	fs := e.flags("demo")
	output := fs.String("output", "text", "text or json")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("want at most one DIR")
	}
	dir := fs.Arg(0)
	if dir == "" {
		d, err := os.MkdirTemp("", "chunkgc-demo-")
		if err != nil {
			return fmt.Errorf("demo dir: %w", err)
		}
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("demo dir %s: %w", dir, err)
	}
	base := filepath.Join(dir, "store")
	log := e.log.With(zap.String("store", "demo"))

	owner := fsys.Keep
	if os.Geteuid() == 0 {
		if owner, err = defaultOwner(log, "backup"); err != nil {
			return err
		}
	}
	log.Info("creating demo chunk store", zap.String("path", base))
	store, err := chunkstore.Create(ctx, base, chunkstore.Options{Log: log, Owner: owner, SyncLevel: tuning.SyncNone}, nil)
	if err != nil {
		return err
	}
	defer store.Close()
	lockRoot := e.lockDir
	if lockRoot == "" {
		lockRoot = filepath.Join(dir, "locks")
	}
	locks, err := locking.OpenDir(filepath.Join(lockRoot, "demo"), -1, -1)
	if err != nil {
		return err
	}

	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return fmt.Errorf("demo source dir: %w", err)
	}
	// Three nightly backups of a 4 MiB "disk" whose first half never changes
	// and whose second half changes a little every night.
	rng := rand.New(rand.NewPCG(1, 2))
	disk := make([]byte, 4<<20)
	for i := range disk {
		disk[i] = byte(rng.Uint32())
	}
	clear(disk[1<<20 : 3<<19]) // an all-zero region: one chunk, referenced often
	g := datastore.Group{Type: "vm", ID: "100"}
	start := time.Now().UTC().Truncate(time.Second).Add(-72 * time.Hour)
	var snaps []datastore.Snapshot
	for night := range 3 {
		for i := 2 << 20; i < 2<<20+(night+1)*demoChunk; i++ {
			disk[i] = byte(rng.Uint32())
		}
		f := filepath.Join(src, "drive-scsi0")
		if err := os.WriteFile(f, disk, 0o644); err != nil {
			return fmt.Errorf("demo source: %w", err)
		}
		when := start.Add(time.Duration(night) * 24 * time.Hour)
		snap, err := backup.Ingest(ctx, store, locks, g, []string{f}, backup.IngestOptions{
			ChunkSize: demoChunk, Now: func() time.Time { return when },
		}, log)
		if err != nil {
			return err
		}
		snaps = append(snaps, snap)
	}
	// Stray garbage: chunks no index references (an aborted backup's uploads).
	for i := range 6 {
		data := make([]byte, demoChunk)
		for j := range data {
			data[j] = byte(rng.Uint32() + uint32(i))
		}
		b, err := blob.Encode(data, true)
		if err != nil {
			return err
		}
		if _, _, err := store.Insert(b, blob.Sum(data)); err != nil {
			return err
		}
	}
	// Age every chunk by two days, as if the store had been idle.
	if err := ageChunks(base, time.Now().Add(-48*time.Hour)); err != nil {
		return err
	}
	tree, err := datastore.NewTree(store.BaseFD(), store.Base(), datastore.TreeOptions{})
	if err != nil {
		return err
	}
	defer tree.Close()
	if err := backup.Forget(ctx, tree, locks, snaps[0], log); err != nil {
		return err
	}
	log.Info("demo store ready: 3 nightly snapshots, the oldest forgotten, 6 stray chunks, all chunks aged 48 h")

	t := tuning.Defaults()
	st, err := gc.Run(ctx, store, locks, gc.Options{Log: log, StoreName: "demo", Tuning: t, Owner: owner})
	if err != nil {
		return err
	}
	if err := printStatus(e, st, *output); err != nil {
		return err
	}
	if *output == "text" {
		fmt.Fprintf(e.stdout, "\ndemo store: %s\nrun it again: chunkgc gc --lock-dir %s %s\n", base, lockRoot, base)
	}
	return nil
}

// ageChunks sets atime and mtime of every chunk file to t.
func ageChunks(base string, t time.Time) error {
	chunks := filepath.Join(base, ".chunks")
	dirs, err := os.ReadDir(chunks)
	if err != nil {
		return fmt.Errorf("age chunks: %w", err)
	}
	for _, d := range dirs {
		entries, err := os.ReadDir(filepath.Join(chunks, d.Name()))
		if err != nil {
			return fmt.Errorf("age chunks: %w", err)
		}
		for _, f := range entries {
			if err := os.Chtimes(filepath.Join(chunks, d.Name(), f.Name()), t, t); err != nil {
				return fmt.Errorf("age chunks: %w", err)
			}
		}
	}
	return nil
}
