package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/gc"
	"chunkgc/internal/fsys"
	"chunkgc/journal"
	"chunkgc/tuning"
)

// runJournalCmd is "chunkgc journal": the runs whose deletion journals the
// store keeps, one run's records, or where one chunk went. It only reads,
// takes no lock, and works while a GC or a backup runs.
func runJournalCmd(ctx context.Context, e *env, args []string) error {
	flags := e.flags("journal")
	run := flags.String("run", "", "print the records of run RUNID")
	digest := flags.String("digest", "", "find chunk HEX (64 hex digits) in every kept journal")
	output := flags.String("output", "text", "text or json")
	ref, err := e.storeArg(flags, args, output)
	if err != nil {
		return err
	}
	if *run != "" && *digest != "" {
		return usagef("--run and --digest: give one")
	}
	var d blob.Digest
	if *digest != "" {
		if d, err = blob.ParseDigest(*digest); err != nil {
			return usagef("--digest %q: %v", *digest, err)
		}
	}
	if *run != "" && !journal.ValidRunID(*run) {
		return usagef("--run %q: not a run id", *run)
	}
	dirfd, err := e.openJournalDir(ref)
	if err != nil {
		return err
	}
	if dirfd >= 0 {
		defer unix.Close(dirfd)
	}
	dir := gc.JournalPath(ref.base)
	switch {
	case *digest != "":
		return e.journalFind(dirfd, dir, d, *output)
	case *run != "":
		name := journal.FileName(*run)
		if dirfd < 0 {
			return fmt.Errorf("datastore %s: %w", ref.name, &fs.PathError{Op: "open", Path: filepath.Join(dir, name), Err: fs.ErrNotExist})
		}
		j, err := journal.ReadFile(dirfd, dir, name)
		if err != nil {
			return fmt.Errorf("datastore %s: %w", ref.name, err)
		}
		return e.journalRun(j, *output)
	}
	var infos []journal.Info
	if dirfd >= 0 {
		if infos, err = journal.List(nil, dirfd, dir); err != nil {
			return fmt.Errorf("datastore %s: %w", ref.name, err)
		}
	}
	return e.journalList(infos, *output)
}

// openJournalDir opens the journal directory of the store ref from the
// store's base fd, following neither .chunkgc nor journal if it is a
// symlink ([gc.OpenJournalDir]); it returns -1 and no error when the
// directory does not exist: no run has removed anything yet.
func (e *env) openJournalDir(ref *storeRef) (int, error) {
	store, err := e.openStore(ref, fsys.Keep, ref.tuning(tuning.Props{}))
	if err != nil {
		return -1, err
	}
	defer store.Close()
	fd, err := gc.OpenJournalDir(store)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return -1, nil
	case err != nil:
		return -1, fmt.Errorf("datastore %s: journal directory: %w", ref.name, err)
	}
	return fd, nil
}

// journalRunJSON is one run in "chunkgc journal --output json".
type journalRunJSON struct {
	journal.Header
	Records  int64             `json:"records"`
	Complete bool              `json:"complete"`
	Trailer  *journal.Trailer  `json:"trailer,omitempty"`
	Problem  string            `json:"problem,omitempty"`
	Chunks   []journalChunkRow `json:"chunks,omitempty"`
}

type journalChunkRow struct {
	Digest string `json:"digest"`
	Size   uint64 `json:"size"`
	Atime  int64  `json:"atime"` // unix seconds
	Flags  string `json:"flags,omitempty"`
	// BeforeMinAtime is how many seconds the atime lay before the run's
	// min_atime: why the chunk was garbage.
	BeforeMinAtime int64 `json:"before-min-atime-s"`
}

func chunkRow(h *journal.Header, r *journal.Record) journalChunkRow {
	row := journalChunkRow{Digest: r.Digest.String(), Size: r.Size, Atime: r.Atime / 1e9, BeforeMinAtime: h.MinAtime - r.Atime/1e9}
	if r.Flags != 0 {
		row.Flags = r.Flags.String()
	}
	return row
}

func problem(tail, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case tail != nil:
		return tail.Error()
	}
	return ""
}

// printJSON prints v as one line of JSON on stdout (--output json).
func (e *env) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

func stamp(sec int64) string { return time.Unix(sec, 0).UTC().Format(time.RFC3339) }

func (e *env) journalList(infos []journal.Info, output string) error {
	if output == "json" {
		runs := make([]journalRunJSON, 0, len(infos))
		for i := range infos {
			in := &infos[i]
			runs = append(runs, journalRunJSON{Header: in.Header, Records: in.Records, Complete: in.Complete(),
				Trailer: in.Trailer, Problem: problem(in.Tail, in.Err)})
		}
		return e.printJSON(runs)
	}
	if len(infos) == 0 {
		_, err := fmt.Fprintln(e.stdout, "no deletion journals: no run has removed anything since journals were kept")
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tSTARTED\tMIN-ATIME\tCHUNKS\tBYTES\tSTATE")
	for i := range infos {
		in := &infos[i]
		if in.Err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tunreadable: %v\n", in.Name, in.Err)
			continue
		}
		state, bytes := "complete", "-"
		switch {
		case in.Trailer != nil && in.Trailer.Err != "":
			state, bytes = "run failed: "+in.Trailer.Err, gc.HumanBytes(in.Trailer.Bytes)
		case in.Trailer != nil:
			bytes = gc.HumanBytes(in.Trailer.Bytes)
		default:
			state = "incomplete (the run was killed or is still running)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", in.Header.RunID, stamp(in.Header.StartTime), stamp(in.Header.MinAtime),
			in.Records, bytes, state)
	}
	return tw.Flush()
}

func (e *env) journalRun(j *journal.Journal, output string) error {
	if output == "json" {
		out := journalRunJSON{Header: j.Header, Records: int64(len(j.Records)), Complete: j.Complete(), Trailer: j.Trailer,
			Problem: problem(j.Tail, nil), Chunks: make([]journalChunkRow, 0, len(j.Records))}
		for i := range j.Records {
			out.Chunks = append(out.Chunks, chunkRow(&j.Header, &j.Records[i]))
		}
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "run %s started %s, min-atime %s, %d chunks\n", j.Header.RunID, stamp(j.Header.StartTime),
		stamp(j.Header.MinAtime), len(j.Records))
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tSIZE\tATIME\tFLAGS")
	for i := range j.Records {
		r := &j.Records[i]
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Digest, r.Size, stamp(r.Atime/1e9), r.Flags)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !j.Complete() {
		fmt.Fprintf(e.stdout, "incomplete journal: %s\n", problem(j.Tail, nil))
	}
	return nil
}

// journalFind finds d in the journals of the directory open as dirfd
// (dir is its path; -1: there is none).
func (e *env) journalFind(dirfd int, dir string, d blob.Digest, output string) error {
	var hits []journal.Hit
	var err error
	if dirfd >= 0 {
		hits, err = journal.Find(nil, dirfd, dir, d)
	}
	if output == "json" {
		runs := make([]journalRunJSON, 0, len(hits))
		for i := range hits {
			h := &hits[i]
			runs = append(runs, journalRunJSON{Header: h.Info.Header, Records: h.Info.Records, Complete: h.Info.Complete(),
				Chunks: []journalChunkRow{chunkRow(&h.Info.Header, &h.Record)}})
		}
		return errors.Join(e.printJSON(runs), err)
	}
	if len(hits) == 0 {
		fmt.Fprintf(e.stdout, "chunk %s: not removed by any run whose journal is kept\n", d)
	}
	for i := range hits {
		h := &hits[i]
		verb := "removed"
		switch {
		case h.Record.Flags&journal.Purged != 0:
			verb = "purged from the quarantine"
		case h.Record.Flags&journal.Quarantined != 0:
			verb = "moved to the quarantine"
		}
		fmt.Fprintf(e.stdout, "chunk %s: %s by run %s (started %s): atime %s, %s before the run's min-atime %s; %d bytes%s\n",
			d, verb, h.Info.Header.RunID, stamp(h.Info.Header.StartTime), stamp(h.Record.Atime/1e9),
			time.Duration(h.Info.Header.MinAtime-h.Record.Atime/1e9)*time.Second, stamp(h.Info.Header.MinAtime),
			h.Record.Size, flagNote(h.Record.Flags))
	}
	return err
}

func flagNote(f journal.Flags) string {
	if f == 0 {
		return ""
	}
	return " (" + f.String() + ")"
}
