package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.uber.org/zap"

	"chunkgc/backup"
	"chunkgc/chunkstore"
	"chunkgc/config"
	"chunkgc/datastore"
	"chunkgc/internal/fsys"
	"chunkgc/locking"
	"chunkgc/objstore"
	"chunkgc/tuning"
)

// storeRef is a resolved STORE argument.
type storeRef struct {
	name   string       // configured name, or the escaped path for an unconfigured path
	base   string       // absolute base path
	config tuning.Props // tuning from the datastore config (empty for a bare path)
	// s3 is the backend of an S3 datastore, whose base is its local
	// cache; nil for a filesystem datastore.
	s3 *config.Backend
}

// s3Commands are the commands that support S3 datastores; every other one
// refuses them, naming the store and the backend.
var s3Commands = []string{"gc", "status", "check-atime", "metrics", "ingest", "forget", "snapshots"}

// resolveStore maps STORE to a store: a configured name, or a path when it
// contains '/'.
func (e *env) resolveStore(arg string) (*storeRef, error) {
	cfg, err := config.Read(e.configPath)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(arg, "/") {
		ds, ok := cfg.Datastore(arg)
		if !ok {
			return nil, fmt.Errorf("datastore %q is not configured in %s (give a path containing '/' to use an unconfigured store)", arg, e.configPath)
		}
		return e.configuredRef(ds, ds.Path)
	}
	base, err := filepath.Abs(arg)
	if err != nil {
		return nil, fmt.Errorf("store path %s: %w", arg, err)
	}
	for _, ds := range cfg.Datastores() {
		if filepath.Clean(ds.Path) == base {
			return e.configuredRef(ds, base)
		}
	}
	return &storeRef{name: locking.EscapePath(base), base: base}, nil
}

// configuredRef is the store of a config section, with its tuning parsed.
func (e *env) configuredRef(ds config.Datastore, base string) (*storeRef, error) {
	if err := config.CheckStorePath(ds.Path); err != nil {
		return nil, fmt.Errorf("datastore %q in %s: %w", ds.Name, e.configPath, err)
	}
	backend, err := ds.ParseBackend()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", e.configPath, config.ErrUnsupportedBackend, err)
	}
	var s3 *config.Backend
	if backend.Type == config.BackendS3 {
		if !slices.Contains(s3Commands, e.cmd) {
			return nil, fmt.Errorf("%s: datastore %s: %w %q (backend %s): chunkgc %s does not collect S3 datastores yet (%s do)",
				e.configPath, ds.Name, config.ErrUnsupportedBackend, backend.Type, ds.Backend, e.cmd, strings.Join(s3Commands, ", "))
		}
		s3 = &backend
	}
	base = filepath.Clean(base)
	props, err := tuning.Parse(ds.Tuning)
	if err != nil {
		return nil, fmt.Errorf("datastore %q in %s: %w", ds.Name, e.configPath, err)
	}
	return &storeRef{name: ds.Name, base: base, config: props, s3: s3}, nil
}

// s3Client is the client of an S3 datastore's bucket, from the endpoint
// its backend names in PBS's s3.cfg.
func (e *env) s3Client(r *storeRef, log *zap.Logger) (*objstore.Client, error) {
	path := e.s3Config
	if path == "" {
		path = filepath.Join(filepath.Dir(e.configPath), "s3.cfg")
	}
	cfg, err := config.ReadS3(path)
	if err != nil {
		return nil, fmt.Errorf("datastore %s: %w", r.name, err)
	}
	ep, ok := cfg.Endpoint(r.s3.Client)
	if !ok {
		return nil, fmt.Errorf("datastore %s: backend client %q is not an s3-endpoint in %s", r.name, r.s3.Client, path)
	}
	c, err := objstore.New(ep, r.s3.Bucket, objstore.Options{Log: log})
	if err != nil {
		return nil, fmt.Errorf("datastore %s: %w", r.name, err)
	}
	return c, nil
}

// tuning applies defaults < config < command line, per key.
func (r *storeRef) tuning(cli tuning.Props) tuning.Tuning {
	return r.config.Merge(cli).Apply(tuning.Defaults())
}

// openLockDir opens the store's lock directory <lock-root>/<name>: the lock
// root (--lock-dir, default locking.DefaultRoot) is checked and opened by
// locking.OpenRoot, the store's directory below it without following links.
func (e *env) openLockDir(name string, owner fsys.Owner) (*locking.Dir, error) {
	path := e.lockDir
	if path == "" {
		path = locking.DefaultRoot
	}
	root, err := locking.OpenRoot(path)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return root.Store(name, owner)
}

// defaultOwner is the backup user when it exists; otherwise ownership is left
// alone (a machine without a backup user, or a demo run as a normal user).
func defaultOwner(log *zap.Logger, name string) (fsys.Owner, error) {
	o, err := fsys.LookupOwner(name)
	if err == nil {
		return o, nil
	}
	if name != "backup" {
		return fsys.Keep, fmt.Errorf("--owner %s: %w", name, err)
	}
	log.Warn("no backup user on this machine, leaving ownership alone", zap.Error(err))
	return fsys.Keep, nil
}

func (e *env) openStore(ref *storeRef, owner fsys.Owner, t tuning.Tuning) (*chunkstore.Store, error) {
	if fi, err := os.Stat(ref.base); err != nil {
		return nil, fmt.Errorf("datastore %s: %w", ref.name, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("datastore %s: %s is not a directory", ref.name, ref.base)
	}
	s, err := chunkstore.Open(ref.base, chunkstore.Options{Log: e.log, Owner: owner, SyncLevel: t.SyncLevel})
	if err != nil {
		return nil, fmt.Errorf("datastore %s: %w", ref.name, err)
	}
	return s, nil
}

// opened is a resolved STORE with its store and lock directory open.
type opened struct {
	*storeRef
	owner  fsys.Owner
	tuning tuning.Tuning
	store  *chunkstore.Store
	locks  *locking.Dir
}

// open resolves STORE, applies defaults < config < cli tuning, and opens the
// chunk store and its lock directory. The backup user owns what is created.
func (e *env) open(arg string, cli tuning.Props) (*opened, error) {
	ref, err := e.resolveStore(arg)
	if err != nil {
		return nil, err
	}
	o := &opened{storeRef: ref, tuning: ref.tuning(cli)}
	if o.owner, err = defaultOwner(e.log, "backup"); err != nil {
		return nil, err
	}
	if o.store, err = e.openStore(ref, o.owner, o.tuning); err != nil {
		return nil, err
	}
	if o.locks, err = e.openLockDir(ref.name, o.owner); err != nil {
		o.store.Close()
		return nil, err
	}
	return o, nil
}

func (o *opened) Close() error { return errors.Join(o.locks.Close(), o.store.Close()) }

// forget forgets snapshot snap of the open store; of an S3 datastore, its
// .cnt/ objects too (backup.ForgetS3).
func (o *opened) forget(ctx context.Context, e *env, snap datastore.Snapshot, log *zap.Logger) error {
	var s3 *backup.S3Target
	if o.s3 != nil {
		client, err := e.s3Client(o.storeRef, log)
		if err != nil {
			return err
		}
		s3 = &backup.S3Target{Bucket: client, Store: o.name}
	}
	return forget(ctx, o.store, o.locks, snap, s3, log)
}

// forget forgets snapshot snap of store (backup.Forget, or with s3
// backup.ForgetS3, on the store's tree).
func forget(ctx context.Context, store *chunkstore.Store, locks *locking.Dir, snap datastore.Snapshot, s3 *backup.S3Target, log *zap.Logger) error {
	tree, err := datastore.NewTree(store.BaseFD(), store.Base(), datastore.TreeOptions{})
	if err != nil {
		return err
	}
	defer tree.Close()
	if s3 != nil {
		return backup.ForgetS3(ctx, tree, locks, snap, s3, log)
	}
	return backup.Forget(ctx, tree, locks, snap, log)
}
