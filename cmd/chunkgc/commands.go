package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"chunkgc/backup"
	"chunkgc/chunkstore"
	"chunkgc/config"
	"chunkgc/datastore"
	"chunkgc/gc"
	"chunkgc/internal/fsys"
	"chunkgc/objstore"
	"chunkgc/tuning"
)

// runCreate creates (or with --reuse adopts) a chunk store, checks that its
// file server updates atimes with a clock close to this host's, registers
// it in the config and prepares its lock directory. Nothing is registered
// unless every check passed. With --backend type=s3,… the store is the
// local cache of an S3 datastore: see createS3.
func runCreate(ctx context.Context, e *env, args []string) error {
	a, err := parseCreateArgs(e, args)
	if err != nil {
		return err
	}
	name, path := a.name, a.path
	cfg, err := e.unregistered(name, path)
	if err != nil {
		return err
	}
	t := a.props.Apply(tuning.Defaults())
	owner, err := defaultOwner(e.log, a.ownerName)
	if err != nil {
		return err
	}
	log := e.log.With(zap.String("store", name), zap.String("path", path))
	var s3 *createS3
	if a.s3 != nil {
		if s3, err = e.checkS3InUse(ctx, name, a, log); err != nil {
			return err
		}
	}
	store, err := openOrCreateStore(ctx, path, a.reuse, chunkstore.Options{Log: log, Owner: owner, SyncLevel: t.SyncLevel})
	if err != nil {
		return err
	}
	defer store.Close()
	// Prepare the store's lock directory now, while running as root, so
	// that a GC running as the backup user (the shipped unit) finds it
	// owned by the backup user.
	locks, err := e.openLockDir(name, owner)
	if err != nil {
		return fmt.Errorf("datastore %s not registered: its lock directory: %w", name, err)
	}
	defer locks.Close()
	if s3 != nil && t.AtimeSafetyCheck {
		if err := store.InsertZeroChunkS3(ctx, locks, s3.client, name); err != nil {
			return fmt.Errorf("datastore %s not registered: %w", name, err)
		}
	}
	if err := checkNewStoreAtime(ctx, store, t, log); err != nil {
		return fmt.Errorf("datastore %s not registered: %w", name, err)
	}
	if s3 != nil {
		if err := s3.writeInUse(ctx, log); err != nil {
			return fmt.Errorf("datastore %s not registered: %w", name, err)
		}
	}
	ds := config.Datastore{Name: name, Path: path, Tuning: a.props.String(), Comment: a.comment, Backend: a.backend}
	if err := e.register(cfg, ds, owner, log); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "datastore %s created at %s\n", name, path)
	return nil
}

// createS3 is what create does in the bucket of an S3 datastore.
type createS3 struct {
	client *objstore.Client
	key    string // the in-use marker's
	host   string // this host's node name
	write  bool   // the marker is to be written
}

// checkS3InUse reaches the bucket of the S3 datastore name (HEAD, through
// the endpoint's s3.cfg entry and its fingerprint) and reads its in-use
// marker <name>/.in-use, before anything is written. A marker naming this
// host (an interrupted create run again) is kept; one naming another host,
// none, or content that is no marker is refused, matching gc.ErrS3InUse
// and naming the store, the key and the host, unless --overwrite-in-use.
// PBS refuses every existing marker unless overwrite-in-use, this host's
// too.
func (e *env) checkS3InUse(ctx context.Context, name string, a *createArgs, log *zap.Logger) (*createS3, error) {
	client, err := e.s3Client(&storeRef{name: name, s3: a.s3}, log)
	if err != nil {
		return nil, err
	}
	if _, err := client.ServerTime(ctx); err != nil {
		return nil, fmt.Errorf("datastore %s: bucket %s: %w", name, a.s3.Bucket, err)
	}
	c := &createS3{client: client, key: objstore.InUseKey(name)}
	if c.host, err = objstore.Nodename(); err != nil {
		return nil, fmt.Errorf("datastore %s: %w", name, err)
	}
	b, err := client.Get(ctx, c.key)
	if errors.Is(err, objstore.ErrNotFound) {
		c.write = true
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("datastore %s: bucket %s: %w", name, a.s3.Bucket, err)
	}
	m, perr := objstore.ParseInUse(b)
	if perr == nil && m.Hostname == c.host {
		log.Info("s3 in-use marker names this host", zap.String("key", c.key), zap.String("hostname", m.Hostname))
		return c, nil
	}
	owner := fmt.Sprintf("host %q", m.Hostname)
	switch {
	case perr != nil:
		owner = fmt.Sprintf("an unknown host (%v)", perr)
	case m.Hostname == "":
		owner = "an unknown host (no hostname)"
	}
	if !a.overwriteInUse {
		return nil, fmt.Errorf("datastore %s: %w: bucket %s key %s: in use by %s, this is %q (--overwrite-in-use replaces the marker)",
			name, gc.ErrS3InUse, a.s3.Bucket, c.key, owner, c.host)
	}
	log.Warn("s3 in-use marker of another host will be overwritten (--overwrite-in-use)", zap.String("key", c.key),
		zap.String("in-use-by", owner), zap.String("hostname", c.host))
	c.write = true
	return c, nil
}

// writeInUse writes the in-use marker {"hostname":"<node name>"} with
// replace, as PBS does at creation, unless it names this host already.
func (c *createS3) writeInUse(ctx context.Context, log *zap.Logger) error {
	if !c.write {
		return nil
	}
	if err := c.client.Put(ctx, c.key, objstore.InUse{Hostname: c.host}.Marshal()); err != nil {
		return fmt.Errorf("s3 in-use marker: %w", err)
	}
	log.Info("s3 in-use marker written", zap.String("key", c.key), zap.String("hostname", c.host))
	return nil
}

// createArgs are the flags and arguments of create.
type createArgs struct {
	name, path string // valid, path cleaned
	reuse      bool
	ownerName  string
	comment    string
	props      tuning.Props
	// backend is --backend as given; s3 its parsed S3 backend, nil for a
	// filesystem datastore.
	backend        string
	s3             *config.Backend
	overwriteInUse bool
}

// parseCreateArgs parses create's command line and checks NAME and PATH as
// a datastore.cfg entry needs them.
func parseCreateArgs(e *env, args []string) (*createArgs, error) {
	a := &createArgs{}
	fs := e.flags("create")
	fs.BoolVar(&a.reuse, "reuse", false, "adopt an existing datastore: verify its layout instead of creating it")
	fs.StringVar(&a.ownerName, "owner", "backup", "user (and its group) that owns the chunk store")
	fs.StringVar(&a.comment, "comment", "", "comment stored in the config")
	fs.Var(&a.props, "tuning", "tuning property string, e.g. gc-atime-safety-check=0")
	fs.StringVar(&a.backend, "backend", "", "datastore backend as in PBS's datastore.cfg, e.g. type=s3,client=ID,bucket=B (PATH is then the local cache)")
	fs.BoolVar(&a.overwriteInUse, "overwrite-in-use", false, "S3 datastore: replace an in-use marker that names another host")
	if err := e.parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() != 2 {
		return nil, usagef("want NAME PATH, have %d arguments", fs.NArg())
	}
	a.name, a.path = fs.Arg(0), fs.Arg(1)
	if err := config.ValidateStoreName(a.name); err != nil {
		return nil, usagef("%v", err)
	}
	if a.backend != "" {
		b, err := config.Datastore{Name: a.name, Backend: a.backend}.ParseBackend()
		if err != nil {
			return nil, usagef("--backend: %v", err)
		}
		if b.Type == config.BackendS3 {
			a.s3 = &b
		}
	}
	if a.overwriteInUse && a.s3 == nil {
		return nil, usagef("--overwrite-in-use: only for an S3 datastore (--backend type=s3,…)")
	}
	if err := config.CheckStorePath(a.path); err != nil {
		return nil, usagef("%v", err)
	}
	a.path = filepath.Clean(a.path)
	return a, nil
}

// unregistered reads the config and returns it when neither name nor path
// is registered in it yet.
func (e *env) unregistered(name, path string) (*config.File, error) {
	cfg, err := config.Read(e.configPath)
	if err != nil {
		return nil, err
	}
	if ds, ok := cfg.Datastore(name); ok {
		return nil, fmt.Errorf("datastore %q already exists in %s (path %s)", name, e.configPath, ds.Path)
	}
	for _, ds := range cfg.Datastores() {
		if filepath.Clean(ds.Path) == filepath.Clean(path) {
			return nil, fmt.Errorf("datastore path %s is already registered as %q in %s", path, ds.Name, e.configPath)
		}
	}
	return cfg, nil
}

// openOrCreateStore creates the chunk store at path, logging progress, or
// with reuse opens it and verifies its layout.
func openOrCreateStore(ctx context.Context, path string, reuse bool, opts chunkstore.Options) (*chunkstore.Store, error) {
	log := opts.Log
	if reuse {
		store, err := chunkstore.Open(path, opts)
		if err != nil {
			return nil, fmt.Errorf("reuse datastore %s: %w", path, err)
		}
		if err := store.VerifyLayout(ctx); err != nil {
			store.Close()
			return nil, fmt.Errorf("reuse datastore %s: %w", path, err)
		}
		log.Info("existing chunk store layout verified")
		return store, nil
	}
	last := -1
	return chunkstore.Create(ctx, path, opts, func(done, total int) {
		if pct := 100 * done / total; pct/10 != last/10 {
			last = pct
			log.Info("creating chunk store", zap.Int("percent", pct))
		}
	})
}

// checkNewStoreAtime runs the atime probe on a new store and checks the
// file server's clock skew, unless the tuning turns the check off (which is
// logged).
func checkNewStoreAtime(ctx context.Context, store *chunkstore.Store, t tuning.Tuning, log *zap.Logger) error {
	if !t.AtimeSafetyCheck {
		log.Warn("access time update check skipped by tuning (gc-atime-safety-check=0)")
		log.Warn("file server clock skew unmeasured: GC assumes its clock agrees with this host's")
		return nil
	}
	res, err := store.ProbeAtime(ctx)
	if err != nil {
		return err
	}
	if err := res.CheckClockSkew(t.MaxClockSkew); err != nil {
		return err
	}
	log.Info("access time update check successful", zap.String("fs", res.FSType), zap.String("mount-options", res.MountOptions),
		zap.Duration("clock-skew", res.ClockSkew), zap.Duration("max-clock-skew", t.MaxClockSkew))
	return nil
}

// register adds ds to cfg and writes the config file, owned by root and
// the store owner's group, so that a GC running as the backup user can read
// it.
func (e *env) register(cfg *config.File, ds config.Datastore, owner fsys.Owner, log *zap.Logger) error {
	cfg.SetDatastore(ds)
	if err := cfg.WriteFile(e.configPath, fsys.Owner{UID: 0, GID: owner.GID}); err != nil {
		return fmt.Errorf("register datastore %s: %w", ds.Name, err)
	}
	log.Info("datastore registered", zap.String("config", e.configPath))
	return nil
}

func runCheckAtime(ctx context.Context, e *env, args []string) error {
	fs := e.flags("check-atime")
	var props tuning.Props
	fs.Var(&props, "tuning", "tuning overrides, e.g. gc-max-clock-skew=60")
	o, err := e.openArg(fs, args, nil, &props)
	if err != nil {
		return err
	}
	defer o.Close()
	if o.s3 != nil {
		// As gc does: upload the probe's chunk before the probe caches
		// it, or its cache file would claim an object that is not there.
		client, err := e.s3Client(o.storeRef, e.log)
		if err != nil {
			return err
		}
		if err := o.store.InsertZeroChunkS3(ctx, o.locks, client, o.name); err != nil {
			return err
		}
	}
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

func runGC(ctx context.Context, e *env, args []string) (err error) {
	start := time.Now()
	fs := e.flags("gc")
	var props tuning.Props
	fs.Var(&props, "tuning", "tuning overrides, e.g. gc-atime-cutoff=60,gc-cache-capacity=0")
	dryRun := fs.Bool("dry-run", false, "mark and count, but remove nothing and keep .gc-status")
	force := fs.Bool("force", false, "go on when the mass-deletion brake trips (this run only)")
	fresh := fs.Bool("fresh", false, "ignore the checkpoint of an interrupted run and start over")
	output := fs.String("output", "text", "text or json (final status on stdout)")
	metricsDir := metricsDirFlag(fs)
	var st *gc.Status
	defer func() { err = e.gcMetrics(ctx, fs, *metricsDir, *dryRun, start, st, err) }()
	o, err := e.openArg(fs, args, output, &props)
	if err != nil {
		return err
	}
	defer o.Close()
	interval, slack, err := resumeEnv()
	if err != nil {
		return err
	}
	log := e.log.With(zap.String("store", o.name))
	var s3 *gc.S3
	var client *objstore.Client
	if o.s3 != nil {
		if client, err = e.s3Client(o.storeRef, log); err != nil {
			return err
		}
		s3 = &gc.S3{Bucket: client, Store: o.name}
	}
	tr := new(gc.Tracker)
	prog := startProgress(e, log, tr)
	st, err = gc.Run(ctx, o.store, o.locks, gc.Options{
		Log: log, StoreName: o.name, Tracker: tr,
		Tuning: o.tuning, DryRun: *dryRun, Force: *force, Fresh: *fresh, Owner: o.owner,
		CheckpointInterval: interval, RecheckSlack: slack, S3: s3,
	})
	prog.Stop()
	if client != nil {
		log.Info("s3 requests", zap.Any("requests", client.Requests()))
	}
	if err != nil {
		if errors.Is(err, gc.ErrBrake) && st != nil && *output == "json" {
			// The brake's figures, for the script that ran us.
			return errors.Join(printStatus(e, st, *output), err)
		}
		return err
	}
	return printStatus(e, st, *output)
}

func printStatus(e *env, st *gc.Status, output string) error {
	if output == "json" {
		return e.printJSON(st)
	}
	return st.WriteReport(e.stdout)
}

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := e.flags("status")
	output := fs.String("output", "text", "text or json")
	ref, err := e.storeArg(fs, args, output)
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
	chunkSize := fs.Int("chunk-size", 4<<20, "fixed chunk size in bytes (power of two, 64 KiB … 16 MiB)")
	noCache := fs.Bool("no-cache", false, "S3 datastore: leave an empty marker in the local cache instead of the chunk")
	g, o, err := groupFiles.open(e, fs, args)
	if err != nil {
		return err
	}
	defer o.Close()
	opts := backup.IngestOptions{NS: g.NS, ChunkSize: *chunkSize}
	if o.s3 != nil {
		client, err := e.s3Client(o.storeRef, e.log)
		if err != nil {
			return err
		}
		opts.S3 = &backup.S3Target{Bucket: client, Store: o.name, NoCache: *noCache}
	} else if *noCache {
		return usagef("--no-cache: datastore %s is not an S3 datastore", o.name)
	}
	snap, err := backup.Ingest(ctx, o.store, o.locks, g, fs.Args()[2:], opts, e.log)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, filepath.Join(o.base, snap.RelPath()))
	return nil
}

func runForget(ctx context.Context, e *env, args []string) error {
	fs := e.flags("forget")
	snap, o, err := oneSnapshot.open(e, fs, args)
	if err != nil {
		return err
	}
	defer o.Close()
	if err := o.forget(ctx, e, snap, e.log); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed %s\n", snap.RelPath())
	return nil
}

func runSnapshots(ctx context.Context, e *env, args []string) error {
	fs := e.flags("snapshots")
	ref, err := e.storeArg(fs, args, nil)
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

// parseStore parses args of a command on one store (STORE) with fs; output
// is the command's --output flag (nil: none), which must be text or json.
func (e *env) parseStore(fs *flag.FlagSet, args []string, output *string) error {
	if err := e.parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want STORE")
	}
	if output != nil && *output != "text" && *output != "json" {
		return usagef("--output %q: want text or json", *output)
	}
	return nil
}

// storeArg is [env.parseStore] that also resolves the STORE argument.
func (e *env) storeArg(fs *flag.FlagSet, args []string, output *string) (*storeRef, error) {
	if err := e.parseStore(fs, args, output); err != nil {
		return nil, err
	}
	return e.resolveStore(fs.Arg(0))
}

// openArg is [env.parseStore] that also opens the STORE argument with the
// tuning overrides cli, which the parse fills in.
func (e *env) openArg(fs *flag.FlagSet, args []string, output *string, cli *tuning.Props) (*opened, error) {
	if err := e.parseStore(fs, args, output); err != nil {
		return nil, err
	}
	return e.open(fs.Arg(0), *cli)
}

// target is what a command on one group or snapshot works on: its
// arguments are STORE TARGET and, when more, further ones (usage says
// which), and its --ns flag names the target's namespace.
type target[T any] struct {
	usage string
	more  bool
	parse func(string) (T, error)
	setNS func(*T, datastore.Namespace)
}

var (
	// groupFiles is ingest's: a group and the files to back up.
	groupFiles = target[datastore.Group]{usage: "STORE TYPE/ID FILE...", more: true, parse: datastore.ParseGroup,
		setNS: func(g *datastore.Group, ns datastore.Namespace) { g.NS = ns }}
	// oneSnapshot is forget's.
	oneSnapshot = target[datastore.Snapshot]{usage: "STORE TYPE/ID/TIME", parse: datastore.ParseSnapshot,
		setNS: func(s *datastore.Snapshot, ns datastore.Namespace) { s.NS = ns }}
)

// open adds --ns to fs, parses args, parses the target fs.Arg(1) into the
// --ns namespace and opens the store fs.Arg(0). A bad argument count, --ns
// or target is a usage error.
func (tg target[T]) open(e *env, fs *flag.FlagSet, args []string) (T, *opened, error) {
	var zero T
	nsFlag := fs.String("ns", "", "namespace, e.g. a/b")
	if err := e.parse(fs, args); err != nil {
		return zero, nil, err
	}
	if n := fs.NArg(); n < 2 || n == 2 && tg.more || n > 2 && !tg.more {
		return zero, nil, usagef("want %s", tg.usage)
	}
	ns, err := datastore.ParseNamespace(*nsFlag)
	if err != nil {
		return zero, nil, usagef("--ns: %v", err)
	}
	v, err := tg.parse(fs.Arg(1))
	if err != nil {
		return zero, nil, usagef("%v", err)
	}
	tg.setNS(&v, ns)
	o, err := e.open(fs.Arg(0), tuning.Props{})
	if err != nil {
		return zero, nil, err
	}
	return v, o, nil
}
