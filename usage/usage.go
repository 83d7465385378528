// Package usage answers "who uses the space" for a chunk store: per
// namespace, group and snapshot, the logical bytes its indexes describe, the
// distinct chunks it references, and of their on-disk bytes how many are
// exclusive (referenced by nothing else at that level) and how many shared;
// and what GC would free if some snapshots were forgotten.
//
// [Compute] reads every index once and stats every referenced chunk once. It
// takes no lock and changes nothing (chunks are stat'ed, never read or
// touched), so it neither blocks nor is blocked by a GC or a backup; an index
// pruned while it runs is skipped. Its memory is bounded by
// [Options.Budget]: the references (digest, snapshot) are collected in a
// buffer of that size; when it fills, it is sorted and spilled to a run file,
// and the runs are merged at the end, so the result is exact at any budget.
package usage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/datastore"
)

// DefaultBudget is the memory for references when Options.Budget is 0:
// 7.4 million references (36 bytes each) before the first spill.
const DefaultBudget = 256 << 20

// Options configure [Compute].
type Options struct {
	// Log receives progress; nil is a no-op logger.
	Log *zap.Logger
	// Budget bounds the reference buffer, in bytes; 0 is DefaultBudget.
	Budget int64
	// TempDir holds the run files of a spill (unlinked at once); "" is
	// os.TempDir().
	TempDir string
	// Forget lists snapshots (as their relative paths, e.g.
	// "ns/a/vm/100/2025-01-01T00:00:00Z") to count as forgotten for
	// Report.WhatIf.
	Forget []string
	// KeepLast, when > 0, also counts as forgotten every snapshot of a
	// group but its newest KeepLast, as PBS's prune --keep-last does
	// (a protected snapshot, one with a .protected file, is kept).
	KeepLast int
}

// Usage is one row: a namespace, group or snapshot.
type Usage struct {
	Name string `json:"name"`
	// Snapshots is how many snapshots the row covers.
	Snapshots int `json:"snapshots"`
	// LogicalBytes is the sum of the data sizes its indexes describe.
	LogicalBytes uint64 `json:"logical-bytes"`
	// Chunks and ReferencedBytes are the distinct chunks it references and
	// their on-disk bytes; Exclusive* are those referenced by nothing else
	// at the row's level (no other namespace, group or snapshot), Shared*
	// the rest.
	Chunks          int64  `json:"chunks"`
	ReferencedBytes uint64 `json:"referenced-bytes"`
	ExclusiveChunks int64  `json:"exclusive-chunks"`
	ExclusiveBytes  uint64 `json:"exclusive-bytes"`
	SharedChunks    int64  `json:"shared-chunks"`
	SharedBytes     uint64 `json:"shared-bytes"`
	// MissingChunks are referenced but not in the chunk store.
	MissingChunks int64 `json:"missing-chunks,omitempty"`
}

func (u *Usage) count(size uint64, exclusive, missing bool) {
	u.Chunks++
	u.ReferencedBytes += size
	if missing {
		u.MissingChunks++
	}
	if exclusive {
		u.ExclusiveChunks++
		u.ExclusiveBytes += size
	} else {
		u.SharedChunks++
		u.SharedBytes += size
	}
}

// WhatIf is what GC would free once the snapshots of Options.Forget are
// forgotten: the chunks no other snapshot references.
type WhatIf struct {
	Snapshots   []string `json:"snapshots"`
	FreedChunks int64    `json:"freed-chunks"`
	FreedBytes  uint64   `json:"freed-bytes"`
}

// Report is the result of [Compute].
type Report struct {
	Namespaces []Usage `json:"namespaces"`
	Groups     []Usage `json:"groups"`
	Snapshots  []Usage `json:"snapshots"`
	// Total covers the whole store: every distinct referenced chunk.
	Total  Usage   `json:"total"`
	WhatIf *WhatIf `json:"what-if,omitempty"`
	// Spilled counts references written to run files (0: all in memory),
	// in Runs files.
	Spilled int64 `json:"spilled-references"`
	Runs    int   `json:"spill-runs"`
	// Vanished counts indexes pruned while Compute ran.
	Vanished int64 `json:"vanished-indexes,omitempty"`
}

// ErrUnknownSnapshot is matched by the error of Compute when a snapshot
// of Options.Forget is not in the store.
var ErrUnknownSnapshot = errors.New("no such snapshot")

// snapInfo places a snapshot in the report's rows.
type snapInfo struct {
	group, ns int
	forget    bool
}

// Compute reports the space usage of store (see the package doc).
func Compute(ctx context.Context, store *chunkstore.Store, opts Options) (*Report, error) {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	tree, err := datastore.NewTree(store.BaseFD(), store.Base(), datastore.TreeOptions{Syscalls: store.Syscalls()})
	if err != nil {
		return nil, err
	}
	defer tree.Close()
	snaps, err := tree.ListAllSnapshots()
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	rep := &Report{}
	infos := rep.place(snaps)
	if err := markForget(rep, snaps, infos, opts.Forget); err != nil {
		return nil, err
	}
	if err := markKeepLast(tree, rep, snaps, infos, opts.KeepLast); err != nil {
		return nil, err
	}

	budget := opts.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	dir := opts.TempDir
	if dir == "" {
		dir = os.TempDir()
	}
	so := newSorter(budget, dir)
	defer so.close()
	for i, s := range snaps {
		if err := ctx.Err(); err != nil {
			return nil, context.Cause(ctx)
		}
		if err := rep.readSnapshot(tree, s, uint32(i), so); err != nil {
			return nil, err
		}
	}
	for i, in := range infos {
		b := rep.Snapshots[i].LogicalBytes
		rep.Groups[in.group].LogicalBytes += b
		rep.Namespaces[in.ns].LogicalBytes += b
		rep.Total.LogicalBytes += b
	}
	rep.Spilled = so.spilled
	rep.Runs = len(so.runs)
	log.Info("usage: indexes read", zap.Int("snapshots", len(snaps)), zap.Int64("spilled-references", so.spilled),
		zap.Int("spill-runs", len(so.runs)))

	a := attributor{rep: rep, infos: infos, store: store}
	defer a.closeDir()
	err = so.each(func(r ref) error {
		if r.d != a.cur {
			if err := a.flush(ctx); err != nil {
				return err
			}
			a.cur, a.have = r.d, true
		}
		a.snaps = append(a.snaps, r.snap)
		return nil
	})
	if err == nil {
		err = a.flush(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("usage: %w", err)
	}
	return rep, nil
}

// place makes a row per namespace, group and snapshot, in the store's
// order, and returns where each snapshot counts.
func (rep *Report) place(snaps []datastore.Snapshot) []snapInfo {
	infos := make([]snapInfo, len(snaps))
	rep.Namespaces, rep.Groups, rep.Snapshots = []Usage{}, []Usage{}, []Usage{}
	for i, s := range snaps {
		ns := s.Group.NS.String()
		if n := len(rep.Namespaces); n == 0 || rep.Namespaces[n-1].Name != ns {
			rep.Namespaces = append(rep.Namespaces, Usage{Name: ns})
		}
		g := s.Group.RelPath()
		if n := len(rep.Groups); n == 0 || rep.Groups[n-1].Name != g {
			rep.Groups = append(rep.Groups, Usage{Name: g})
		}
		rep.Snapshots = append(rep.Snapshots, Usage{Name: s.RelPath(), Snapshots: 1})
		infos[i] = snapInfo{group: len(rep.Groups) - 1, ns: len(rep.Namespaces) - 1}
		rep.Groups[infos[i].group].Snapshots++
		rep.Namespaces[infos[i].ns].Snapshots++
		rep.Total.Snapshots++
	}
	return infos
}

func markForget(rep *Report, snaps []datastore.Snapshot, infos []snapInfo, forget []string) error {
	if len(forget) == 0 {
		return nil
	}
	rep.WhatIf = &WhatIf{Snapshots: forget}
	for _, f := range forget {
		i := slices.IndexFunc(snaps, func(s datastore.Snapshot) bool { return s.RelPath() == f })
		if i < 0 {
			return fmt.Errorf("usage: --what-if-forget %s: %w", f, ErrUnknownSnapshot)
		}
		infos[i].forget = true
	}
	return nil
}

// markKeepLast marks, per group, every snapshot but the newest keep as
// forgotten, except protected ones (PBS's keep-last).
func markKeepLast(tree *datastore.Tree, rep *Report, snaps []datastore.Snapshot, infos []snapInfo, keep int) error {
	if keep <= 0 {
		return nil
	}
	if rep.WhatIf == nil {
		rep.WhatIf = &WhatIf{Snapshots: []string{}}
	}
	// Snapshots come per group, oldest first: walk each group newest first.
	for end := len(snaps); end > 0; {
		start := end - 1
		for start > 0 && infos[start-1].group == infos[end-1].group {
			start--
		}
		kept := 0
		for i := end - 1; i >= start; i-- {
			if kept < keep {
				kept++
				continue
			}
			protected, err := isProtected(tree, snaps[i])
			if err != nil {
				return err
			}
			if !protected && !infos[i].forget {
				infos[i].forget = true
				rep.WhatIf.Snapshots = append(rep.WhatIf.Snapshots, snaps[i].RelPath())
			}
		}
		end = start
	}
	return nil
}

// isProtected reports whether snapshot s has PBS's .protected marker.
func isProtected(tree *datastore.Tree, s datastore.Snapshot) (bool, error) {
	fd, err := tree.OpenDir(s.RelPath())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("usage: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	err = tree.Syscalls().Fstatat(fd, ".protected", &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("usage: %s: %w", tree.Path(s.RelPath()+"/.protected"), err)
	}
	return true, nil
}

// readSnapshot adds the references of every index of snapshot s (number
// i) to so, and its logical bytes to its rows.
func (rep *Report) readSnapshot(tree *datastore.Tree, s datastore.Snapshot, i uint32, so *sorter) error {
	names, err := tree.IndexFiles(s)
	if errors.Is(err, fs.ErrNotExist) {
		rep.Vanished++
		return nil
	}
	if err != nil {
		return fmt.Errorf("usage: %w", err)
	}
	for _, name := range names {
		rel := s.RelPath() + "/" + name
		r, err := tree.OpenIndex(rel)
		if errors.Is(err, fs.ErrNotExist) {
			rep.Vanished++
			continue
		}
		if err != nil {
			return fmt.Errorf("usage: %w", err)
		}
		rep.Snapshots[i].LogicalBytes += r.DataBytes()
		err = r.Each(func(d *blob.Digest) error { return so.add(ref{d: *d, snap: i}) })
		r.Close()
		if err != nil {
			return fmt.Errorf("usage: read %s: %w", tree.Path(rel), err)
		}
	}
	return nil
}

// attributor counts each distinct digest, with the snapshots that
// reference it, in every row it belongs to.
type attributor struct {
	rep   *Report
	infos []snapInfo
	store *chunkstore.Store
	dir   *chunkstore.PrefixDir
	cur   blob.Digest
	have  bool
	snaps []uint32 // distinct, ascending (the refs come sorted)
	name  []byte
	st    unix.Stat_t
	n     int
}

func (a *attributor) closeDir() {
	if a.dir != nil {
		a.dir.Close()
		a.dir = nil
	}
}

// size stats chunk d: its on-disk bytes (the file's size, as PBS counts
// disk-bytes), or missing.
func (a *attributor) size(d blob.Digest) (uint64, bool, error) {
	if a.dir == nil || a.dir.Prefix() != d.Prefix() {
		a.closeDir()
		dir, err := a.store.OpenPrefix(d.Prefix())
		if errors.Is(err, fs.ErrNotExist) {
			return 0, true, nil
		}
		if err != nil {
			return 0, false, err
		}
		a.dir = dir
	}
	a.name = d.AppendHex(a.name[:0])
	err := a.dir.StatBytes(a.name, &a.st)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, true, nil
	}
	if err != nil {
		return 0, false, err
	}
	if a.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, true, nil
	}
	return uint64(a.st.Size), false, nil
}

// flush counts the current digest.
func (a *attributor) flush(ctx context.Context) error {
	if !a.have {
		return nil
	}
	defer func() { a.snaps, a.have = a.snaps[:0], false }()
	if a.n++; a.n%4096 == 0 {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
	}
	size, missing, err := a.size(a.cur)
	if err != nil {
		return err
	}
	rep := a.rep
	rep.Total.count(size, true, missing)
	oneSnap := len(a.snaps) == 1
	oneGroup, oneNS, forgotten := true, true, rep.WhatIf != nil
	first := a.infos[a.snaps[0]]
	for _, s := range a.snaps {
		in := a.infos[s]
		oneGroup = oneGroup && in.group == first.group
		oneNS = oneNS && in.ns == first.ns
		forgotten = forgotten && in.forget
	}
	prevGroup, prevNS := -1, -1
	for _, s := range a.snaps {
		in := a.infos[s]
		rep.Snapshots[s].count(size, oneSnap, missing)
		// Snapshots come in store order, so a group's and a namespace's
		// snapshots are adjacent: count each once.
		if in.group != prevGroup {
			rep.Groups[in.group].count(size, oneGroup, missing)
			prevGroup = in.group
		}
		if in.ns != prevNS {
			rep.Namespaces[in.ns].count(size, oneNS, missing)
			prevNS = in.ns
		}
	}
	if forgotten && !missing {
		rep.WhatIf.FreedChunks++
		rep.WhatIf.FreedBytes += size
	}
	return nil
}
