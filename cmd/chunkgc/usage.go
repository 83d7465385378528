package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"go.uber.org/zap"

	"chunkgc/gc"
	"chunkgc/internal/fsys"
	"chunkgc/tuning"
	"chunkgc/usage"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return fmt.Sprint(*l) }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// runUsage is "chunkgc usage": who uses the space (package usage). It only
// reads, takes no lock, and neither blocks nor waits for a GC or a backup.
func runUsage(ctx context.Context, e *env, args []string) error {
	flags := e.flags("usage")
	snapshots := flags.Bool("snapshots", false, "also a row per snapshot")
	var forget stringList
	flags.Var(&forget, "what-if-forget", "count snapshot `NS/TYPE/ID/TIME` (its path below the store, as the rows name it) as forgotten; repeatable")
	keepLast := flags.Int("what-if-keep-last", 0, "count every snapshot of a group but its newest N as forgotten, as prune --keep-last N would (protected ones stay)")
	memory := flags.Int64("memory", usage.DefaultBudget>>20, "MiB of references kept in memory; beyond, sorted runs spill to --tmp-dir (exact either way)")
	tmp := flags.String("tmp-dir", "", "where spilled runs go (default $TMPDIR or /tmp; unlinked at once)")
	output := flags.String("output", "text", "text or json")
	ref, err := e.storeArg(flags, args, output)
	if err != nil {
		return err
	}
	if *keepLast < 0 {
		return usagef("--what-if-keep-last %d: want 0 (off) or more", *keepLast)
	}
	if *memory < 1 {
		return usagef("--memory %d: want at least 1 MiB", *memory)
	}
	store, err := e.openStore(ref, fsys.Keep, tuning.Defaults())
	if err != nil {
		return err
	}
	defer store.Close()
	rep, err := usage.Compute(ctx, store, usage.Options{
		Log: e.log.With(zap.String("store", ref.name)), Budget: *memory << 20, TempDir: *tmp, Forget: forget, KeepLast: *keepLast,
	})
	if err != nil {
		return fmt.Errorf("datastore %s: %w", ref.name, err)
	}
	if !*snapshots {
		rep.Snapshots = nil
	}
	if *output == "json" {
		return e.printJSON(rep)
	}
	return writeUsage(e.stdout, rep)
}

// writeUsage prints the report as tables: namespaces, groups, snapshots.
func writeUsage(w io.Writer, rep *usage.Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	table := func(title string, rows []usage.Usage) {
		if rows == nil {
			return
		}
		fmt.Fprintf(tw, "%s\tsnapshots\tlogical\tchunks\treferenced\texclusive\tshared\t\n", title)
		for _, u := range rows {
			name := u.Name
			if name == "" {
				name = "(root)"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\t\n", name, u.Snapshots, gc.HumanBytes(u.LogicalBytes), u.Chunks,
				gc.HumanBytes(u.ReferencedBytes), gc.HumanBytes(u.ExclusiveBytes), gc.HumanBytes(u.SharedBytes))
		}
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t")
	}
	table("NAMESPACE", rep.Namespaces)
	table("GROUP", rep.Groups)
	table("SNAPSHOT", rep.Snapshots)
	if err := tw.Flush(); err != nil {
		return err
	}
	t := rep.Total
	fmt.Fprintf(w, "Total: %d snapshots, %d chunks referenced, %s on disk", t.Snapshots, t.Chunks, gc.HumanBytes(t.ReferencedBytes))
	if t.MissingChunks > 0 {
		fmt.Fprintf(w, ", %d missing", t.MissingChunks)
	}
	fmt.Fprintln(w)
	if wi := rep.WhatIf; wi != nil {
		fmt.Fprintf(w, "Forgetting %d snapshots would let GC free %s (in %d chunks)\n", len(wi.Snapshots), gc.HumanBytes(wi.FreedBytes), wi.FreedChunks)
	}
	_, err := fmt.Fprintf(w, "Exclusive: referenced by nothing else at that level; shared: also by another namespace, group or snapshot.\n")
	return err
}
