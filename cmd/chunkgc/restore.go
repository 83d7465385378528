package main

import (
	"context"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"chunkgc/blob"
	"chunkgc/gc"
	"chunkgc/internal/fsys"
	"chunkgc/tuning"
)

// digestList is a repeatable --digest flag; each value may also be a
// comma-separated list.
type digestList []blob.Digest

func (l *digestList) String() string {
	s := make([]string, len(*l))
	for i, d := range *l {
		s[i] = d.String()
	}
	return strings.Join(s, ",")
}

func (l *digestList) Set(v string) error {
	for _, h := range strings.Split(v, ",") {
		d, err := blob.ParseDigest(strings.TrimSpace(h))
		if err != nil {
			return fmt.Errorf("%q: %w", h, err)
		}
		*l = append(*l, d)
	}
	return nil
}

// runRestore is "chunkgc restore": quarantined chunks back into the chunk
// store (gc.Restore). It takes no GC or store lock and is safe while a GC or
// a backup runs; an asked-for digest that is not in the quarantine is an
// error after the others were restored.
func runRestore(ctx context.Context, e *env, args []string) error {
	flags := e.flags("restore")
	run := flags.String("run", "", "restore only what run RUNID quarantined")
	var digests digestList
	flags.Var(&digests, "digest", "restore only chunk HEX (64 hex digits; repeat, or separate with commas)")
	output := flags.String("output", "text", "text or json")
	ref, err := e.storeArg(flags, args, output)
	if err != nil {
		return err
	}
	store, err := e.openStore(ref, fsys.Keep, tuning.Defaults())
	if err != nil {
		return err
	}
	defer store.Close()
	rep, err := gc.Restore(ctx, store, gc.RestoreOptions{
		Log: e.log.With(zap.String("store", ref.name)), Run: *run, Digests: digests,
	})
	if err != nil {
		return fmt.Errorf("datastore %s: %w", ref.name, err)
	}
	if *output == "json" {
		err = e.printJSON(rep)
	} else {
		_, err = fmt.Fprintf(e.stdout, "Restored chunks: %d (%s) from %d runs\nAlready present: %d\n",
			rep.Restored, gc.HumanBytes(rep.RestoredBytes), len(rep.Runs), rep.Present)
		for _, d := range rep.NotFound {
			fmt.Fprintf(e.stdout, "Not in the quarantine: %s\n", d)
		}
	}
	if err != nil {
		return err
	}
	if len(rep.NotFound) > 0 {
		return fmt.Errorf("datastore %s: %d asked-for chunks are not in the quarantine", ref.name, len(rep.NotFound))
	}
	return nil
}
