package locking

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
	"chunkgc/internal/testkit/rtest"
)

const backupUID, backupGID = 34, 34 // Debian's backup user and group

// backupOwner is the backup user and group as an fsys.Owner.
var backupOwner = fsys.Owner{UID: backupUID, GID: backupGID}

// TestDirOnTmpfs opens a lock directory on a tmpfs as root with the backup
// user as owner: the lock root and its parent it creates are root:root 0755,
// the store's directory and everything in it belong to backup, and what
// existed before keeps its owner.
func TestDirOnTmpfs(t *testing.T) {
	mnt := mountTmpfs(t)
	path := filepath.Join(mnt, "chunkgc", "locks", "store1")
	d, err := OpenDir(path, backupOwner)
	rtest.OK(t, err)
	rtest.Equal(t, "d.Path()", path, d.Path())

	var sfs unix.Statfs_t
	rtest.OK(t, unix.Statfs(d.Path(), &sfs))
	rtest.Equal(t, "int64(sfs.Type)", int64(unix.TMPFS_MAGIC), int64(sfs.Type))

	assertOwner := func(p string, uid, gid uint32) {
		t.Helper()
		gotUID, gotGID := owner(t, p)
		if gotUID != uid || gotGID != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, gotUID, gotGID, uid, gid)
		}
	}
	assertOwner(mnt, 0, 0)
	for _, p := range []string{"chunkgc", "chunkgc/locks"} {
		assertOwner(filepath.Join(mnt, p), 0, 0)
		assertMode(t, filepath.Join(mnt, p), 0o755)
	}
	for _, p := range []string{"chunkgc/locks/store1", "chunkgc/locks/store1/writers"} {
		assertOwner(filepath.Join(mnt, p), backupUID, backupGID)
	}

	gc, err := d.GCLock()
	rtest.OK(t, err)
	assertOwner(gc.Path(), backupUID, backupGID)
	if _, err := d.GCLock(); !errors.Is(err, ErrLocked) {
		t.Errorf("second GCLock: want ErrLocked, got %v", err)
	}
	rtest.OK(t, gc.Unlock())

	g, err := d.LockGroup(t.Context(), []string{"ns1", "ns2"}, "vm", "100", Exclusive, 0)
	rtest.OK(t, err)
	rtest.Equal(t, "g.Path()", filepath.Join(path, "ns1:ns2", "vm-100"), g.Path())
	assertOwner(filepath.Join(path, "ns1:ns2"), backupUID, backupGID)
	assertOwner(g.Path(), backupUID, backupGID)
	rtest.OK(t, g.Unlock())

	long := strings.Repeat("x", 300)
	s, err := d.LockSnapshot(t.Context(), nil, "ct", long, "2025-04-04T15:02:49Z", Exclusive, 0)
	rtest.OK(t, err)
	rtest.Equal(t, "s.Path()", filepath.Join(path, LockFileName(nil, "ct/"+long+"/2025-04-04T15:02:49Z")), s.Path())
	assertOwner(filepath.Join(path, "hashed"), backupUID, backupGID)
	assertOwner(s.Path(), backupUID, backupGID)
	rtest.OK(t, s.RemoveAndUnlock())

	w, err := d.RegisterWriter(time.Now())
	rtest.OK(t, err)
	assertOwner(w.Path(), backupUID, backupGID)
	rtest.OK(t, w.Close())

	// A second OpenDir of the existing directory changes nothing.
	_, err = OpenDir(path, fsys.Owner{})
	rtest.OK(t, err)
	assertOwner(path, backupUID, backupGID)
}

// TestOpenDirNoOwner: uid -1 leaves ownership to the process.
func TestOpenDirNoOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b")
	d, err := OpenDir(path, fsys.Keep)
	rtest.OK(t, err)
	uid, gid := owner(t, filepath.Join(path, "writers"))
	rtest.Equal(t, "uid", uint32(os.Geteuid()), uid)
	rtest.Equal(t, "gid", uint32(os.Getegid()), gid)
	g, err := d.LockGroup(t.Context(), nil, "vm", "100", Exclusive, 0)
	rtest.OK(t, err)
	uid, _ = owner(t, g.Path())
	rtest.Equal(t, "uid", uint32(os.Geteuid()), uid)
	rtest.OK(t, g.Unlock())
}

func TestOpenDirNotADirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	rtest.OK(t, os.WriteFile(path, nil, 0o644))
	_, err := OpenDir(path, fsys.Keep)
	if !errors.Is(err, nofollow.ErrNotDir) || !strings.Contains(err.Error(), path) {
		t.Fatalf("want ErrNotDir naming %s, got %v", path, err)
	}
}

// TestSnapshotLockFileIsPBSs: the file LockSnapshot locks is the one PBS
// names, and a process holding that file (as PBS would) keeps chunkgc out.
func TestSnapshotLockFileIsPBSs(t *testing.T) {
	d, err := OpenDir(t.TempDir(), fsys.Keep)
	rtest.OK(t, err)
	ns := []string{"ns1", "ns2", "ns3", "ns4", "ns5", "ns6", "ns7"}
	pbsPath := filepath.Join(d.Path(), `ns1:ns2:ns3:ns4:ns5:ns6:ns7/vm-100-2022\x2d05\x2d02T08\x3a11\x3a33Z`)

	l, err := d.LockSnapshot(t.Context(), ns, "vm", "100", "2022-05-02T08:11:33Z", Shared, 0)
	rtest.OK(t, err)
	rtest.Equal(t, "l.Path()", pbsPath, l.Path())
	rtest.OK(t, l.Unlock())

	h := startProc(t, "flock", pbsPath, "sh", "0")
	h.expectLocked()
	l, err = d.LockSnapshot(t.Context(), ns, "vm", "100", "2022-05-02T08:11:33Z", Shared, 0)
	rtest.OK(t, err) // readers share
	rtest.OK(t, l.Unlock())
	_, err = d.LockSnapshot(t.Context(), ns, "vm", "100", "2022-05-02T08:11:33Z", Exclusive, 0)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive beside a reader: want ErrLocked, got %v", err)
	}
	// The group lock is a different file.
	g, err := d.LockGroup(t.Context(), ns, "vm", "100", Exclusive, 0)
	rtest.OK(t, err)
	rtest.Equal(t, "g.Path()", filepath.Join(d.Path(), "ns1:ns2:ns3:ns4:ns5:ns6:ns7", "vm-100"), g.Path())
	rtest.OK(t, g.Unlock())
}

func TestLockInvalidNames(t *testing.T) {
	d, err := OpenDir(filepath.Join(t.TempDir(), "locks"), fsys.Keep)
	rtest.OK(t, err)
	tests := []struct {
		name string
		ns   []string
		typ  string
		id   string
	}{
		{name: "empty id", typ: "vm"},
		{name: "empty type", id: "100"},
		{name: "slash in id", typ: "vm", id: "100/x"},
		{name: "nul in id", typ: "vm", id: "1\x000"},
		{name: "dotdot namespace", ns: []string{".."}, typ: "vm", id: "100"},
		{name: "dot namespace", ns: []string{"."}, typ: "vm", id: "100"},
		{name: "empty namespace component", ns: []string{"a", ""}, typ: "vm", id: "100"},
		{name: "slash in namespace", ns: []string{"a/b"}, typ: "vm", id: "100"},
		{name: "colon in namespace", ns: []string{"a:b"}, typ: "vm", id: "100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := d.LockGroup(t.Context(), tt.ns, tt.typ, tt.id, Exclusive, 0); err == nil {
				l.Unlock()
				t.Fatalf("LockGroup locked %s", l.Path())
			}
			if l, err := d.LockSnapshot(t.Context(), tt.ns, tt.typ, tt.id, "2025-04-04T15:02:49Z", Exclusive, 0); err == nil {
				l.Unlock()
				t.Fatalf("LockSnapshot locked %s", l.Path())
			}
		})
	}
	if _, err := d.LockSnapshot(t.Context(), nil, "vm", "100", "", Exclusive, 0); err == nil {
		t.Error("LockSnapshot with an empty time succeeded")
	}
	entries, err := os.ReadDir(filepath.Dir(d.Path()))
	rtest.OK(t, err)
	rtest.Equal(t, "len(entries)", 1, len(entries)) // nothing created beside the lock dir
}

// TestLockChunk: the per-chunk lock is PBS's file <dir>/.chunks/<p>/<hex>,
// owned like the lock dir; a second holder is refused at once with
// ErrLocked (GC's try-once), a waiting one gets it after the release, and a
// name that is not a digest's is refused before anything is created.
func TestLockChunk(t *testing.T) {
	mnt := mountTmpfs(t)
	d, err := OpenDir(filepath.Join(mnt, "locks", "s3store"), backupOwner)
	rtest.OK(t, err)
	defer d.Close()
	hex := strings.Repeat("ab", 32)
	l, err := d.LockChunk(t.Context(), hex, 0)
	rtest.OK(t, err)
	want := filepath.Join(d.Path(), ".chunks", "abab", hex)
	rtest.Equal(t, "lock path", want, l.Path())
	for _, p := range []string{filepath.Dir(want), want} {
		if uid, gid := owner(t, p); uid != backupUID || gid != backupGID {
			t.Errorf("%s: owner %d:%d, want the backup user", p, uid, gid)
		}
	}
	if _, err := d.LockChunk(t.Context(), hex, 0); !errors.Is(err, ErrLocked) {
		t.Errorf("second LockChunk: %v, want ErrLocked", err)
	}
	done := make(chan error, 1)
	go func() {
		l2, err := d.LockChunk(t.Context(), hex, 10*time.Second)
		if err == nil {
			err = l2.Unlock()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	rtest.OK(t, l.Unlock())
	rtest.OK(t, <-done)
	for _, bad := range []string{hex[:63], strings.ToUpper(hex), "../" + hex[3:], hex + ".0.bad"} {
		if _, err := d.LockChunk(t.Context(), bad, 0); err == nil || !strings.Contains(err.Error(), "64 lowercase hex") {
			t.Errorf("LockChunk(%q): %v, want a refusal", bad, err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.Path(), ".chunks", "..", "x")); err == nil {
		t.Error("a refused name created something")
	}
}
