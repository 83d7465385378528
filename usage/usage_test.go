package usage

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
	"chunkgc/tuning"
)

// genStore is a generated store with the truth to check Compute against:
// which snapshot references which chunk, and every chunk's size on disk.
type genStore struct {
	st    *storetest.Store
	store *chunkstore.Store
	refs  map[string][]blob.Digest // snapshot rel path -> digests (with repeats)
	sizes map[blob.Digest]uint64   // stored chunks only
	snaps []string
}

// generate lays out, on a real filesystem, namespaces (root, ns/a,
// ns/a/ns/b), groups in each, and snapshots that reference random chunks
// of one shared pool — so chunks are shared within a group, across groups
// and across namespaces, some repeat within an index, and a few are
// missing.
func generate(t *testing.T, seed uint64, pool, perSnap int) *genStore {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	base := filepath.Join(testfs.Tmpfs(t, ""), "store")
	g := &genStore{refs: map[string][]blob.Digest{}, sizes: map[blob.Digest]uint64{}}
	var opts []storetest.Option
	names := make([]string, pool)
	for i := range names {
		names[i] = fmt.Sprint("c", i)
		if i%37 == 5 {
			opts = append(opts, storetest.Missing(names[i], storetest.Size(100+i)))
		} else {
			opts = append(opts, storetest.Chunk(names[i], storetest.Size(50+rng.IntN(4000))))
		}
	}
	g.st = storetest.Build(t, append(opts, storetest.At(base))...)
	for _, ns := range []string{"", "ns/a/", "ns/a/ns/b/"} {
		for _, grp := range []string{"vm/100", "vm/101", "ct/200"} {
			for k := range 1 + rng.IntN(3) {
				rel := fmt.Sprintf("%s%s/2025-01-0%dT00:00:00Z", ns, grp, k+1)
				// Each snapshot draws from a window of the pool, so that
				// some chunks end up exclusive and others shared.
				lo := rng.IntN(pool)
				var ds []blob.Digest
				var ns []string
				for range perSnap {
					n := names[(lo+rng.IntN(pool/4))%pool]
					ns = append(ns, n)
					ds = append(ds, g.st.Digest(n))
				}
				g.st.Add(storetest.Snapshot(rel, "drive-scsi0.img.fidx", ns...))
				g.refs[rel] = ds
				g.snaps = append(g.snaps, rel)
			}
		}
	}
	for i, n := range names {
		if i%37 != 5 {
			g.sizes[g.st.Digest(n)] = uint64(g.st.Size(n))
		}
	}
	s, err := chunkstore.Open(base, chunkstore.Options{Log: zaptest.NewLogger(t), Owner: fsys.Keep, SyncLevel: tuning.SyncNone})
	rtest.OK(t, err)
	t.Cleanup(func() { s.Close() })
	g.store = s
	return g
}

// bruteForce computes the rows the obvious way: for every row, the set of
// digests it references, and for each digest the set of rows of the same
// level that reference it.
func (g *genStore) bruteForce(forget map[string]bool) (ns, groups, snaps map[string]Usage, freed WhatIf) {
	nsOf := func(rel string) string {
		dir := filepath.Dir(filepath.Dir(filepath.Dir(rel))) // strip time, id, type
		if dir == "." {
			return ""
		}
		return strings.ReplaceAll(strings.TrimPrefix(dir, "ns/"), "/ns/", "/") // "ns/a/ns/b" is namespace "a/b"
	}
	groupOf := func(rel string) string { return filepath.Dir(rel) }
	level := func(key func(string) string) map[string]Usage {
		owners := map[blob.Digest]map[string]bool{}
		rows := map[string]map[blob.Digest]bool{}
		for rel, ds := range g.refs {
			k := key(rel)
			if rows[k] == nil {
				rows[k] = map[blob.Digest]bool{}
			}
			for _, d := range ds {
				rows[k][d] = true
				if owners[d] == nil {
					owners[d] = map[string]bool{}
				}
				owners[d][k] = true
			}
		}
		out := map[string]Usage{}
		for k, ds := range rows {
			var u Usage
			u.Name = k
			for d := range ds {
				size, ok := g.sizes[d]
				u.count(size, len(owners[d]) == 1, !ok)
			}
			out[k] = u
		}
		return out
	}
	snaps = level(func(rel string) string { return rel })
	groups = level(groupOf)
	ns = level(nsOf)
	owners := map[blob.Digest][]string{}
	for rel, ds := range g.refs {
		for _, d := range ds {
			owners[d] = append(owners[d], rel)
		}
	}
	for d, rels := range owners {
		all := true
		for _, r := range rels {
			all = all && forget[r]
		}
		if size, ok := g.sizes[d]; all && ok {
			freed.FreedChunks++
			freed.FreedBytes += size
		}
	}
	return ns, groups, snaps, freed
}

func checkRows(t *testing.T, what string, got []Usage, want map[string]Usage) {
	t.Helper()
	rtest.Equal(t, what+" rows", len(want), len(got))
	for _, u := range got {
		w, ok := want[u.Name]
		if !ok {
			t.Errorf("%s: unexpected row %q", what, u.Name)
			continue
		}
		w.Snapshots, w.LogicalBytes = u.Snapshots, u.LogicalBytes
		rtest.Equal(t, what+" "+u.Name, w, u)
		if u.LogicalBytes == 0 {
			t.Errorf("%s %s: no logical bytes", what, u.Name)
		}
	}
}

// TestComputeMatchesBruteForce: on generated stores with chunks shared
// across snapshots, groups and namespaces, every row of Compute equals the
// brute-force count, in memory and with a budget so small that the
// references spill to many run files; so does the what-if of forgetting
// some snapshots.
func TestComputeMatchesBruteForce(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		g := generate(t, seed, 600, 400)
		forget := map[string]bool{g.snaps[0]: true, g.snaps[len(g.snaps)/2]: true}
		wantNS, wantGroups, wantSnaps, wantFreed := g.bruteForce(forget)
		for _, budget := range []int64{0, 1} {
			t.Run(fmt.Sprintf("seed=%d,budget=%d", seed, budget), func(t *testing.T) {
				rep, err := Compute(context.Background(), g.store, Options{
					Budget: budget, TempDir: t.TempDir(), Forget: []string{g.snaps[0], g.snaps[len(g.snaps)/2]},
				})
				rtest.OK(t, err)
				if budget == 1 && rep.Runs < 2 {
					t.Fatalf("budget 1 spilled to %d runs, want several", rep.Runs)
				}
				if budget == 0 && rep.Spilled != 0 {
					t.Fatalf("the default budget spilled %d references", rep.Spilled)
				}
				checkRows(t, "namespace", rep.Namespaces, wantNS)
				checkRows(t, "group", rep.Groups, wantGroups)
				checkRows(t, "snapshot", rep.Snapshots, wantSnaps)
				rtest.Equal(t, "freed chunks", wantFreed.FreedChunks, rep.WhatIf.FreedChunks)
				rtest.Equal(t, "freed bytes", wantFreed.FreedBytes, rep.WhatIf.FreedBytes)
				var total uint64
				for _, u := range rep.Groups {
					total += u.ExclusiveBytes
				}
				if total > rep.Total.ReferencedBytes {
					t.Errorf("exclusive bytes of the groups %d exceed the store's %d", total, rep.Total.ReferencedBytes)
				}
			})
		}
	}
}

// TestComputeLogicalBytes: logical bytes are the indexes' data sizes, and
// an unknown what-if snapshot is an error naming it.
func TestComputeLogicalBytes(t *testing.T) {
	base := filepath.Join(testfs.Tmpfs(t, ""), "store")
	st := storetest.Build(t, storetest.At(base), storetest.Chunk("a", storetest.Size(1000)),
		storetest.Snapshot("vm/1/2025-01-01T00:00:00Z", "drive-scsi0.img.fidx", "a", "a", "a"))
	s, err := chunkstore.Open(base, chunkstore.Options{Owner: fsys.Keep, SyncLevel: tuning.SyncNone})
	rtest.OK(t, err)
	defer s.Close()
	rep, err := Compute(context.Background(), s, Options{})
	rtest.OK(t, err)
	rtest.Equal(t, "snapshots", 1, len(rep.Snapshots))
	if rep.Snapshots[0].LogicalBytes == 0 {
		t.Error("no logical bytes")
	}
	rtest.Equal(t, "distinct chunks", int64(1), rep.Snapshots[0].Chunks)
	rtest.Equal(t, "exclusive bytes", uint64(st.Size("a")), rep.Snapshots[0].ExclusiveBytes)
	_, err = Compute(context.Background(), s, Options{Forget: []string{"vm/1/2030-01-01T00:00:00Z"}})
	rtest.Equal(t, "unknown snapshot", true, errors.Is(err, ErrUnknownSnapshot))
}

// TestComputeChangesNoAtime: usage stats chunks and never reads or touches
// them: every chunk's atime is what it was.
func TestComputeChangesNoAtime(t *testing.T) {
	g := generate(t, 9, 100, 50)
	old := time.Now().Add(-72 * time.Hour)
	for d := range g.sizes {
		rtest.OK(t, os.Chtimes(g.store.ChunkPath(d), old, old))
	}
	_, err := Compute(context.Background(), g.store, Options{})
	rtest.OK(t, err)
	for d := range g.sizes {
		var st unix.Stat_t
		rtest.OK(t, unix.Stat(g.store.ChunkPath(d), &st))
		rtest.Equal(t, "atime of "+d.String(), old.Unix(), st.Atim.Sec)
	}
}

// TestKeepLast: --what-if-keep-last N counts, per group, every snapshot but
// the newest N as forgotten, as PBS's prune --keep-last does, and keeps a
// protected one; GC would free exactly the chunks only those referenced.
func TestKeepLast(t *testing.T) {
	base := filepath.Join(testfs.Tmpfs(t, ""), "store")
	opts := []storetest.Option{storetest.At(base), storetest.Chunk("shared", storetest.Size(500))}
	for i := 1; i <= 4; i++ {
		own := fmt.Sprint("own", i)
		rel := fmt.Sprintf("vm/1/2025-01-0%dT00:00:00Z", i)
		opts = append(opts, storetest.Chunk(own, storetest.Size(1000*i)),
			storetest.Snapshot(rel, "drive-scsi0.img.fidx", "shared", own))
	}
	opts = append(opts, storetest.Chunk("other", storetest.Size(700)),
		storetest.Snapshot("ct/2/2025-01-01T00:00:00Z", "root.pxar.didx", "other", "shared"),
		storetest.File("vm/1/2025-01-02T00:00:00Z/.protected"))
	st := storetest.Build(t, opts...)
	s, err := chunkstore.Open(base, chunkstore.Options{Owner: fsys.Keep, SyncLevel: tuning.SyncNone})
	rtest.OK(t, err)
	defer s.Close()
	rep, err := Compute(context.Background(), s, Options{KeepLast: 1})
	rtest.OK(t, err)
	rtest.Equal(t, "forgotten", []string{"vm/1/2025-01-03T00:00:00Z", "vm/1/2025-01-01T00:00:00Z"}, rep.WhatIf.Snapshots)
	rtest.Equal(t, "freed chunks", int64(2), rep.WhatIf.FreedChunks)
	rtest.Equal(t, "freed bytes", uint64(st.Size("own1")+st.Size("own3")), rep.WhatIf.FreedBytes)
}
