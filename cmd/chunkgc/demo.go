package main

import (
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
	"chunkgc/internal/fsys"
	"chunkgc/locking"
	"chunkgc/tuning"
)

// demoChunk is the chunk size of the demo backups: small, so a few MiB of
// sample data make enough chunks to show deduplication.
const demoChunk = 256 << 10

// runDemo builds a sample store, ages it as if it were two days old, forgets
// one snapshot, adds some stray garbage and runs a real GC on it.
func runDemo(ctx context.Context, e *env, args []string) error {
	output, dir, err := parseDemoArgs(e, args)
	if err != nil {
		return err
	}
	base := filepath.Join(dir, "store")
	log := e.log.With(zap.String("store", "demo"))
	owner, err := demoOwner(log)
	if err != nil {
		return err
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
	locks, err := locking.OpenDir(filepath.Join(lockRoot, "demo"), fsys.Keep)
	if err != nil {
		return err
	}

	rng := rand.New(rand.NewPCG(1, 2))
	snaps, err := ingestNights(ctx, store, locks, filepath.Join(dir, "src"), rng, log)
	if err != nil {
		return err
	}
	if err := insertStrays(store, rng); err != nil {
		return err
	}
	// Age every chunk by two days, as if the store had been idle.
	if err := ageChunks(base, time.Now().Add(-48*time.Hour)); err != nil {
		return err
	}
	if err := forget(ctx, store, locks, snaps[0], nil, log); err != nil {
		return err
	}
	log.Info("demo store ready: 3 nightly snapshots, the oldest forgotten, 6 stray chunks, all chunks aged 48 h")

	st, err := gc.Run(ctx, store, locks, gc.Options{Log: log, StoreName: "demo", Tuning: tuning.Defaults(), Owner: owner})
	if err != nil {
		return err
	}
	return e.reportDemo(st, output, base, lockRoot)
}

// parseDemoArgs parses demo's command line: the --output format and the
// demo directory, made absolute (a new temporary directory when none is
// given).
func parseDemoArgs(e *env, args []string) (output, dir string, err error) {
	fs := e.flags("demo")
	fs.StringVar(&output, "output", "text", "text or json")
	if err := e.parse(fs, args); err != nil {
		return "", "", err
	}
	if fs.NArg() > 1 {
		return "", "", usagef("want at most one DIR")
	}
	dir = fs.Arg(0)
	if dir == "" {
		d, err := os.MkdirTemp("", "chunkgc-demo-")
		if err != nil {
			return "", "", fmt.Errorf("demo dir: %w", err)
		}
		dir = d
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", "", fmt.Errorf("demo dir %s: %w", dir, err)
	}
	return output, abs, nil
}

// demoOwner is the backup user when running as root and it exists;
// otherwise ownership is left alone.
func demoOwner(log *zap.Logger) (fsys.Owner, error) {
	if os.Geteuid() != 0 {
		return fsys.Keep, nil
	}
	return defaultOwner(log, "backup")
}

// ingestNights writes three nightly backups (vm/100, 24 h apart, the last
// one three days ago) of a 4 MiB "disk", kept in src, whose first half never
// changes and whose second half changes a little every night.
func ingestNights(ctx context.Context, store *chunkstore.Store, locks *locking.Dir, src string, rng *rand.Rand, log *zap.Logger) ([]datastore.Snapshot, error) {
	if err := os.MkdirAll(src, 0o755); err != nil {
		return nil, fmt.Errorf("demo source dir: %w", err)
	}
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
			return nil, fmt.Errorf("demo source: %w", err)
		}
		when := start.Add(time.Duration(night) * 24 * time.Hour)
		snap, err := backup.Ingest(ctx, store, locks, g, []string{f}, backup.IngestOptions{
			ChunkSize: demoChunk, Now: func() time.Time { return when },
		}, log)
		if err != nil {
			return nil, err
		}
		snaps = append(snaps, snap)
	}
	return snaps, nil
}

// insertStrays inserts stray garbage: six chunks no index references, as an
// aborted backup's uploads would leave.
func insertStrays(store *chunkstore.Store, rng *rand.Rand) error {
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
	return nil
}

// reportDemo prints the GC's status and, as text, where the demo store is
// and how to run GC on it again.
func (e *env) reportDemo(st *gc.Status, output, base, lockRoot string) error {
	if err := printStatus(e, st, output); err != nil {
		return err
	}
	if output == "text" {
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
