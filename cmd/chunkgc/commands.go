package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"chunkgc/backup"
	"chunkgc/chunkstore"
	"chunkgc/datastore"
	"chunkgc/gc"
	"chunkgc/tuning"
)

func runCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flags("create")
	reuse := fs.Bool("reuse", false, "adopt an existing datastore: verify its layout instead of creating it")
	ownerName := fs.String("owner", "backup", "user (and its group) that owns the chunk store")
	comment := fs.String("comment", "", "comment stored in the config")
	var props tuning.Props
	fs.Var(&props, "tuning", "tuning property string, e.g. gc-atime-safety-check=0")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("want NAME PATH, have %d arguments", fs.NArg())
	}
	name, path := fs.Arg(0), fs.Arg(1)
	if err := tuning.ValidateStoreName(name); err != nil {
		return usagef("%v", err)
	}
	if err := tuning.CheckStorePath(path); err != nil {
		return usagef("%v", err)
	}
	path = filepath.Clean(path)
	cfg, err := tuning.ReadConfig(e.configPath)
	if err != nil {
		return err
	}
	if ds, ok := cfg.Datastore(name); ok {
		return fmt.Errorf("datastore %q already exists in %s (path %s)", name, e.configPath, ds.Path)
	}
	for _, ds := range cfg.Datastores() {
		if filepath.Clean(ds.Path) == filepath.Clean(path) {
			return fmt.Errorf("datastore path %s is already registered as %q in %s", path, ds.Name, e.configPath)
		}
	}
	t := props.Apply(tuning.Defaults())
	owner, err := defaultOwner(e.log, *ownerName)
	if err != nil {
		return err
	}
	log := e.log.With(zap.String("store", name), zap.String("path", path))
	opts := chunkstore.Options{Log: log, Owner: owner, SyncLevel: t.SyncLevel}

	var store *chunkstore.Store
	if *reuse {
		store, err = chunkstore.Open(path, opts)
		if err != nil {
			return fmt.Errorf("reuse datastore %s: %w", path, err)
		}
		defer store.Close()
		if err := store.VerifyLayout(ctx); err != nil {
			return fmt.Errorf("reuse datastore %s: %w", path, err)
		}
		log.Info("existing chunk store layout verified")
	} else {
		last := -1
		store, err = chunkstore.Create(ctx, path, opts, func(done, total int) {
			if pct := 100 * done / total; pct/10 != last/10 {
				last = pct
				log.Info("creating chunk store", zap.Int("percent", pct))
			}
		})
		if err != nil {
			return err
		}
		defer store.Close()
	}

	if t.AtimeSafetyCheck {
		res, err := store.ProbeAtime(ctx)
		if err != nil {
			return fmt.Errorf("datastore %s not registered: %w", name, err)
		}
		if err := res.CheckClockSkew(t.MaxClockSkew); err != nil {
			return fmt.Errorf("datastore %s not registered: %w", name, err)
		}
		log.Info("access time update check successful", zap.String("fs", res.FSType), zap.String("mount-options", res.MountOptions),
			zap.Duration("clock-skew", res.ClockSkew), zap.Duration("max-clock-skew", t.MaxClockSkew))
	} else {
		log.Warn("access time update check skipped by tuning (gc-atime-safety-check=0)")
		log.Warn("file server clock skew unmeasured: GC assumes its clock agrees with this host's")
	}

	cfg.SetDatastore(tuning.Datastore{Name: name, Path: path, Tuning: props.String(), Comment: *comment})
	gid := -1
	if owner.Active() {
		gid = owner.GID
	}
	if err := cfg.WriteFile(e.configPath, 0, gid); err != nil {
		return fmt.Errorf("register datastore %s: %w", name, err)
	}
	log.Info("datastore registered", zap.String("config", e.configPath))
	// Prepare the store's lock directory now, while running as root, so
	// that a GC running as the backup user (the shipped unit) finds it
	// owned by the backup user.
	locks, err := e.openLockDir(name, owner)
	if err != nil {
		return fmt.Errorf("datastore %s registered, but its lock directory: %w", name, err)
	}
	locks.Close()
	fmt.Fprintf(e.stdout, "datastore %s created at %s\n", name, path)
	return nil
}

func runCheckAtime(ctx context.Context, e *env, args []string) error {
	fs := e.flags("check-atime")
	var props tuning.Props
	fs.Var(&props, "tuning", "tuning overrides, e.g. gc-max-clock-skew=60")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want STORE")
	}
	o, err := e.open(fs.Arg(0), props)
	if err != nil {
		return err
	}
	defer o.Close()
	res, err := o.store.ProbeAtime(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "atime probe passed on %s (%s, %s)\n", o.base, res.FSType, res.MountOptions)
	fmt.Fprintf(e.stdout, "file server clock skew %.3f s: file server time %s, host time %s (bound %s=%d s)\n",
		res.ClockSkew.Seconds(), res.ServerTime().UTC().Format(time.RFC3339Nano), res.HostTime().UTC().Format(time.RFC3339Nano),
		tuning.KeyMaxClockSkew, int64(o.tuning.MaxClockSkew/time.Second))
	return res.CheckClockSkew(o.tuning.MaxClockSkew)
}

func runGC(ctx context.Context, e *env, args []string) error {
	fs := e.flags("gc")
	var props tuning.Props
	fs.Var(&props, "tuning", "tuning overrides, e.g. gc-atime-cutoff=60,gc-cache-capacity=0")
	dryRun := fs.Bool("dry-run", false, "mark and count, but remove nothing and keep .gc-status")
	output := fs.String("output", "text", "text or json (final status on stdout)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want STORE")
	}
	if *output != "text" && *output != "json" {
		return usagef("--output %q: want text or json", *output)
	}
	o, err := e.open(fs.Arg(0), props)
	if err != nil {
		return err
	}
	defer o.Close()
	st, err := gc.Run(ctx, o.store, o.locks, gc.Options{
		Log: e.log.With(zap.String("store", o.name)), StoreName: o.name,
		Tuning: o.tuning, DryRun: *dryRun, Owner: o.owner,
	})
	if err != nil {
		return err
	}
	return printStatus(e, st, *output)
}

func printStatus(e *env, st *gc.Status, output string) error {
	if output == "json" {
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", b)
		return err
	}
	return st.WriteReport(e.stdout)
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flags("status")
	output := fs.String("output", "text", "text or json")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want STORE")
	}
	if *output != "text" && *output != "json" {
		return usagef("--output %q: want text or json", *output)
	}
	ref, err := e.resolveStore(fs.Arg(0))
	if err != nil {
		return err
	}
	st, err := gc.ReadStatus(ref.base)
	if err != nil {
		return fmt.Errorf("datastore %s: %w", ref.name, err)
	}
	return printStatus(e, st, *output)
}

func runIngest(ctx context.Context, e *env, args []string) error {
	fs := e.flags("ingest")
	nsFlag := fs.String("ns", "", "namespace, e.g. a/b")
	chunkSize := fs.Int("chunk-size", 4<<20, "fixed chunk size in bytes (power of two, 64 KiB … 16 MiB)")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() < 3 {
		return usagef("want STORE TYPE/ID FILE...")
	}
	ns, err := datastore.ParseNamespace(*nsFlag)
	if err != nil {
		return usagef("--ns: %v", err)
	}
	g, err := datastore.ParseGroup(fs.Arg(1))
	if err != nil {
		return usagef("%v", err)
	}
	g.NS = ns
	o, err := e.open(fs.Arg(0), tuning.Props{})
	if err != nil {
		return err
	}
	defer o.Close()
	snap, err := backup.Ingest(ctx, o.store, o.locks, g, fs.Args()[2:], backup.IngestOptions{NS: ns, ChunkSize: *chunkSize}, e.log)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, filepath.Join(o.base, snap.RelPath()))
	return nil
}

func runForget(ctx context.Context, e *env, args []string) error {
	fs := e.flags("forget")
	nsFlag := fs.String("ns", "", "namespace, e.g. a/b")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("want STORE TYPE/ID/TIME")
	}
	ns, err := datastore.ParseNamespace(*nsFlag)
	if err != nil {
		return usagef("--ns: %v", err)
	}
	snap, err := datastore.ParseSnapshot(fs.Arg(1))
	if err != nil {
		return usagef("%v", err)
	}
	snap.NS = ns
	o, err := e.open(fs.Arg(0), tuning.Props{})
	if err != nil {
		return err
	}
	defer o.Close()
	tree, err := datastore.NewTree(o.store.BaseFD(), o.store.Base(), datastore.TreeOptions{})
	if err != nil {
		return err
	}
	defer tree.Close()
	if err := backup.Forget(ctx, tree, o.locks, snap, e.log); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed %s\n", snap.RelPath())
	return nil
}

func runSnapshots(ctx context.Context, e *env, args []string) error {
	fs := e.flags("snapshots")
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want STORE")
	}
	ref, err := e.resolveStore(fs.Arg(0))
	if err != nil {
		return err
	}
	tree, err := datastore.OpenTree(ref.base)
	if err != nil {
		return fmt.Errorf("datastore %s: %w", ref.name, err)
	}
	defer tree.Close()
	snaps, err := tree.ListAllSnapshots()
	if err != nil {
		return fmt.Errorf("datastore %s: %w", ref.name, err)
	}
	for _, s := range snaps {
		fmt.Fprintln(e.stdout, s.RelPath())
	}
	return nil
}
