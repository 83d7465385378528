package locking

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"chunkgc/internal/nofollow"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
)

// opBound is how long any locking operation may take in the attack tests,
// whatever is planted: a FIFO or a swapped directory must never block.
const opBound = 2 * time.Second

// backupLockTree makes, as root, a lock root (root:root 0755) with the
// store directory "store" in it, both reachable by the backup user, and
// gives the store directory to the backup user (storetest.ChownTree), as a
// lock tree in production is. It returns the open Dir.
func backupLockTree(t *testing.T) *Dir {
	t.Helper()
	rtest.RequireRoot(t)
	base := t.TempDir()
	storetest.Reachable(t, base)
	r, err := OpenRoot(filepath.Join(base, "locks"))
	rtest.OK(t, err)
	defer r.Close()
	d, err := r.Store("store", backupOwner)
	rtest.OK(t, err)
	t.Cleanup(func() { d.Close() })
	storetest.ChownTree(t, d.Path())
	return d
}

// shq quotes s for sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// attackOp is one locking operation the attack tests run on a planted tree.
type attackOp struct {
	name string
	run  func(ctx context.Context, d *Dir) error
}

const snapTime = "2025-04-04T15:02:49Z"

var longID = strings.Repeat("x", 300) // its lock file goes to hashed/

func lockAndRelease(l *Lock, err error, remove bool) error {
	if err != nil {
		return err
	}
	if remove {
		return l.RemoveAndUnlock()
	}
	return l.Unlock()
}

var attackOps = []attackOp{
	{"gc", func(ctx context.Context, d *Dir) error {
		l, err := d.GCLock()
		return lockAndRelease(l, err, false)
	}},
	{"group-ex-remove", func(ctx context.Context, d *Dir) error {
		l, err := d.LockGroup(ctx, nil, "vm", "100", Exclusive, 0)
		return lockAndRelease(l, err, true)
	}},
	{"group-sh", func(ctx context.Context, d *Dir) error {
		l, err := d.LockGroup(ctx, nil, "vm", "100", Shared, 100*time.Millisecond)
		return lockAndRelease(l, err, false)
	}},
	{"ns-group-ex-remove", func(ctx context.Context, d *Dir) error {
		l, err := d.LockGroup(ctx, []string{"ns1", "ns2"}, "vm", "100", Exclusive, 0)
		return lockAndRelease(l, err, true)
	}},
	{"ns-snapshot-sh", func(ctx context.Context, d *Dir) error {
		l, err := d.LockSnapshot(ctx, []string{"ns1", "ns2"}, "vm", "100", snapTime, Shared, 0)
		return lockAndRelease(l, err, false)
	}},
	{"snapshot-ex-remove", func(ctx context.Context, d *Dir) error {
		l, err := d.LockSnapshot(ctx, nil, "vm", "100", snapTime, Exclusive, 100*time.Millisecond)
		return lockAndRelease(l, err, true)
	}},
	{"hashed-ex-remove", func(ctx context.Context, d *Dir) error {
		l, err := d.LockSnapshot(ctx, nil, "ct", longID, snapTime, Exclusive, 0)
		return lockAndRelease(l, err, true)
	}},
	{"register", func(ctx context.Context, d *Dir) error {
		w, err := d.RegisterWriter(time.Now())
		if err != nil {
			return err
		}
		return w.Close()
	}},
	{"oldest-reap", func(ctx context.Context, d *Dir) error {
		_, _, _, err := d.OldestWriter(nil)
		return err
	}},
	{"store-lock", func(ctx context.Context, d *Dir) error {
		// The lock dir stands in for a store base here: LockStore on its .lock.
		l, err := d.LockStore(d.fd, d.path)
		return lockAndRelease(l, err, false)
	}},
}

// runAttackOp runs op with a bounded ctx and fails t if it took opBound or
// more.
func runAttackOp(t *testing.T, d *Dir, op attackOp) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), opBound)
	defer cancel()
	start := time.Now()
	err := op.run(ctx, d)
	if took := time.Since(start); took >= opBound {
		t.Errorf("%s took %v (must not block)", op.name, took)
	}
	return err
}

// TestNoEscapePlanted plants, as the backup user, symlinks to a victim tree,
// FIFOs and (as root, standing in for a host without
// fs.protected_hardlinks) hard links where the lock tree expects lock
// subdirectories, lock files and registry entries, then runs every locking
// operation. Each either works inside the lock tree or fails with an error
// naming the planted path; none blocks, and the victim tree is unchanged
// after every row.
func TestNoEscapePlanted(t *testing.T) {
	rtest.RequireRoot(t)
	victim := storetest.NewVictim(t)
	V := shq(victim.Dir)
	snapFile := LockFileName(nil, "vm/100/"+snapTime)
	hashedFile := LockFileName(nil, "ct/"+longID+"/"+snapTime)
	tests := []struct {
		name string
		// plant runs as the backup user in the store's lock dir; root, if
		// set, plants as root (hard links, sockets) and returns paths that
		// must still exist afterwards (left alone), which it then removes.
		plant string
		root  func(t *testing.T, d *Dir) []string
		// fail maps op names to the path (relative to the lock dir) their
		// error must name; other ops may fail only naming a path in the
		// lock dir.
		fail map[string]string
	}{
		{
			name:  "writers is a symlink",
			plant: "rm -rf writers && ln -s " + V + "/writers writers",
			fail:  map[string]string{"register": "writers", "oldest-reap": "writers"},
		},
		{
			name:  "namespace lock dir is a symlink",
			plant: "ln -s " + V + " 'ns1:ns2'",
			fail:  map[string]string{"ns-group-ex-remove": "ns1:ns2", "ns-snapshot-sh": "ns1:ns2"},
		},
		{
			name:  "hashed is a symlink",
			plant: "ln -s " + V + " hashed",
			fail:  map[string]string{"hashed-ex-remove": "hashed"},
		},
		{
			name:  "hashed is a FIFO",
			plant: "mkfifo hashed",
			fail:  map[string]string{"hashed-ex-remove": "hashed"},
		},
		{
			name:  "gc lock is a symlink",
			plant: "ln -s " + V + "/gc gc",
			fail:  map[string]string{"gc": "gc"},
		},
		{
			name:  "gc lock is a FIFO",
			plant: "mkfifo gc",
			fail:  map[string]string{"gc": "gc"},
		},
		{
			name:  "group lock is a symlink",
			plant: "ln -s " + V + "/vm-100 vm-100",
			fail:  map[string]string{"group-ex-remove": "vm-100", "group-sh": "vm-100"},
		},
		{
			name:  "snapshot lock is a FIFO",
			plant: "mkfifo " + shq(snapFile),
			fail:  map[string]string{"snapshot-ex-remove": snapFile},
		},
		{
			name:  "hashed snapshot lock is a symlink",
			plant: "mkdir -p hashed && ln -s " + V + "/vm-100 " + shq(hashedFile),
			fail:  map[string]string{"hashed-ex-remove": hashedFile},
		},
		{
			name:  "namespace snapshot lock dir holds a FIFO",
			plant: "mkdir 'ns1:ns2' && mkfifo " + shq(LockFileName([]string{"ns1", "ns2"}, "vm/100/"+snapTime)),
			fail:  map[string]string{"ns-snapshot-sh": LockFileName([]string{"ns1", "ns2"}, "vm/100/"+snapTime)},
		},
		{
			name:  "store lock is a FIFO",
			plant: "mkfifo .lock",
			fail:  map[string]string{"store-lock": ".lock"},
		},
		{
			name:  "store lock is a symlink",
			plant: "ln -s " + V + "/.lock .lock",
			fail:  map[string]string{"store-lock": ".lock"},
		},
		{
			name:  "registry entries: symlink, FIFO, directory with a victim link",
			plant: "ln -s " + V + "/writers/abcdef writers/zzz && mkfifo writers/fifo && mkfifo writers/.tmp-fifo && mkdir writers/sub && ln -s " + V + " writers/sub/v",
		},
		{
			name: "registry entry is a socket",
			root: func(t *testing.T, d *Dir) []string {
				p := filepath.Join(d.Path(), writersDir, "sock")
				fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				rtest.OK(t, err)
				defer unix.Close(fd)
				rtest.OK(t, unix.Bind(fd, &unix.SockaddrUnix{Name: p}))
				rtest.OK(t, os.Lchown(p, backupUID, backupGID))
				return []string{p}
			},
		},
		{
			name: "registry entry and group lock are hard links to victim files",
			root: func(t *testing.T, d *Dir) []string {
				entry := filepath.Join(d.Path(), writersDir, "hardlink")
				group := filepath.Join(d.Path(), "vm-100")
				rtest.OK(t, os.Link(filepath.Join(victim.Dir, "writers", "abcdef"), entry))
				rtest.OK(t, os.Link(filepath.Join(victim.Dir, "vm-100"), group))
				return []string{entry, group}
			},
			fail: map[string]string{"group-ex-remove": "vm-100", "group-sh": "vm-100"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := backupLockTree(t)
			if tt.plant != "" {
				storetest.AsBackup(t, d.Path(), tt.plant)
			}
			var keep []string
			if tt.root != nil {
				keep = tt.root(t, d)
			}
			for _, op := range attackOps {
				err := runAttackOp(t, d, op)
				if rel, mustFail := tt.fail[op.name]; mustFail {
					want := filepath.Join(d.Path(), rel)
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("%s: want an error naming %s, got %v", op.name, want, err)
					}
					continue
				}
				if err != nil && !strings.Contains(err.Error(), d.Path()) {
					t.Errorf("%s: error names no path in the lock dir %s: %v", op.name, d.Path(), err)
				}
			}
			for _, p := range keep {
				if _, err := os.Lstat(p); err != nil {
					t.Errorf("planted %s was not left alone: %v", p, err)
				}
				os.Remove(p) // back to one link, so the victim check compares
			}
			victim.Check(t)
		})
	}
}

// TestNoEscapePlantedErrors pins the kind of error for the main plantings:
// a symlink is ErrSymlink, a FIFO ErrNotRegular, a hard link ErrLinked.
func TestNoEscapePlantedErrors(t *testing.T) {
	rtest.RequireRoot(t)
	victim := storetest.NewVictim(t)
	d := backupLockTree(t)
	storetest.AsBackup(t, d.Path(), "rm -rf writers && ln -s "+shq(victim.Dir)+" writers && mkfifo gc && ln -s "+shq(victim.Dir)+" 'ns1:ns2'")
	rtest.OK(t, os.Link(filepath.Join(victim.Dir, "vm-100"), filepath.Join(d.Path(), "vm-100")))
	defer os.Remove(filepath.Join(d.Path(), "vm-100"))

	if _, _, _, err := d.OldestWriter(zaptest.NewLogger(t)); !errors.Is(err, nofollow.ErrSymlink) {
		t.Errorf("OldestWriter with a symlinked writers: want ErrSymlink, got %v", err)
	}
	if _, err := d.RegisterWriter(time.Now()); !errors.Is(err, nofollow.ErrSymlink) {
		t.Errorf("RegisterWriter with a symlinked writers: want ErrSymlink, got %v", err)
	}
	if _, err := d.GCLock(); !errors.Is(err, nofollow.ErrNotRegular) {
		t.Errorf("GCLock on a FIFO: want ErrNotRegular, got %v", err)
	}
	if _, err := d.LockGroup(t.Context(), []string{"ns1", "ns2"}, "vm", "100", Exclusive, 0); !errors.Is(err, nofollow.ErrSymlink) {
		t.Errorf("LockGroup below a symlinked namespace dir: want ErrSymlink, got %v", err)
	}
	if _, err := d.LockGroup(t.Context(), nil, "vm", "100", Exclusive, 0); !errors.Is(err, ErrLinked) {
		t.Errorf("LockGroup on a hard link: want ErrLinked, got %v", err)
	}
	os.Remove(filepath.Join(d.Path(), "vm-100"))
	victim.Check(t)
}

// TestNoEscapeSwapping runs locking operations for about 2 s while a process
// of the backup user swaps the namespace lock dir, hashed/ and writers/ for
// symlinks to a victim tree and back in a loop. Errors are allowed; the
// victim must stay unchanged, and no operation may block.
func TestNoEscapeSwapping(t *testing.T) {
	rtest.RequireRoot(t)
	victim := storetest.NewVictim(t)
	d := backupLockTree(t)
	// Make the swapped dirs exist, with a stale registry entry to reap.
	for _, op := range attackOps {
		if op.name == "ns-snapshot-sh" || op.name == "hashed-ex-remove" {
			rtest.OK(t, op.run(t.Context(), d))
		}
	}
	storetest.ChownTree(t, d.Path())
	V := shq(victim.Dir)
	script := `n=0
while [ $n -lt 100000 ]; do
	for d in 'ns1:ns2' hashed writers; do
		mv -T "$d" "$d.x" 2>/dev/null && ln -s ` + V + ` "$d"; rm -f "$d"; mv -T "$d.x" "$d" 2>/dev/null
	done
	n=$((n+1)); echo swap
done`
	stop := storetest.StartAsBackup(t, d.Path(), script, 10*time.Second)

	var wg sync.WaitGroup
	var succeeded, failed atomic.Int64
	deadline := time.Now().Add(2 * time.Second)
	for g := range 2 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				op := attackOps[(i+g)%len(attackOps)]
				if op.name == "oldest-reap" {
					// A stale, hidden entry for the reaper (a dead registration).
					if wfd, err := d.openWriters(); err == nil {
						if fd, err := unix.Openat(wfd, ".tmp-stale", unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644); err == nil {
							unix.Close(fd)
						}
						unix.Close(wfd)
					}
				}
				if err := runAttackOp(t, d, op); err != nil {
					failed.Add(1)
					if !strings.Contains(err.Error(), d.Path()) {
						t.Errorf("%s: error names no path in the lock dir: %v", op.name, err)
					}
				} else {
					succeeded.Add(1)
				}
			}
		})
	}
	wg.Wait()
	out := stop()
	swaps := strings.Count(out, "swap")
	t.Logf("%d operations succeeded, %d failed, %d swap rounds", succeeded.Load(), failed.Load(), swaps)
	if swaps == 0 {
		t.Errorf("the attacker never completed a swap round: %q", out)
	}
	if succeeded.Load() == 0 {
		t.Error("no operation succeeded: the test exercised nothing but errors")
	}
	victim.Check(t)
}
