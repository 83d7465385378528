package locking

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
	"chunkgc/internal/testkit/rtest"
)

// TestOpenRootRefusesUnsafe: as root, a lock root (or its parent) that
// someone other than root could change is refused with an error naming it
// and the fix; a sticky parent like /tmp is fine.
func TestOpenRootRefusesUnsafe(t *testing.T) {
	rtest.RequireRoot(t)
	// dir is a directory the test makes below base, owned by uid:gid with
	// mode (raw bits: the sticky bit too).
	type dir struct {
		rel      string
		uid, gid int
		mode     uint32
	}
	tests := []struct {
		name string
		dirs []dir // made in order
		// root is the lock root to open and bad the directory the error
		// must name (empty: accepted), below base.
		root, bad string
	}{
		{"root owned by backup", []dir{{"locks", backupUID, backupGID, 0o755}}, "locks", "locks"},
		{"root mode 0777", []dir{{"locks", 0, 0, 0o777}}, "locks", "locks"},
		{"root group-writable by backup", []dir{{"locks", 0, backupGID, 0o775}}, "locks", "locks"},
		{"sticky world-writable root", []dir{{"locks", 0, 0, 0o1777}}, "locks", "locks"},
		{"parent owned by backup", []dir{{"run", backupUID, backupGID, 0o755}}, "run/locks", "run"},
		{"sticky world-writable parent", []dir{{"tmp", 0, 0, 0o1777}}, "tmp/locks", ""},
		{"backup-owned tree at another path than PBS's", []dir{
			{"proxmox-backup", backupUID, backupGID, 0o755},
			{"proxmox-backup/locks", backupUID, backupGID, 0o755},
		}, "proxmox-backup/locks", "proxmox-backup"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			for _, d := range tt.dirs {
				p := filepath.Join(base, d.rel)
				rtest.OK(t, os.Mkdir(p, 0o755))
				rtest.OK(t, os.Chown(p, d.uid, d.gid))
				rtest.OK(t, unix.Chmod(p, d.mode))
			}
			root, bad := filepath.Join(base, tt.root), ""
			if tt.bad != "" {
				bad = filepath.Join(base, tt.bad)
			}
			_, statErr := os.Lstat(root)
			r, err := OpenRoot(root)
			if bad == "" {
				rtest.OK(t, err)
				rtest.OK(t, r.Close())
				return
			}
			if err == nil {
				r.Close()
				t.Fatalf("OpenRoot(%s) accepted it", root)
			}
			fix := fmt.Sprintf("chown root:root %s && chmod 0755 %s", bad, bad)
			if !errors.Is(err, ErrUnsafeRoot) || !strings.Contains(err.Error(), fix) {
				t.Fatalf("want ErrUnsafeRoot naming %s and the fix %q, got %v", bad, fix, err)
			}
			if statErr != nil {
				if _, err := os.Lstat(root); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s was created in an unsafe parent (%v)", root, err)
				}
			}
			// OpenDir treats the parent of its path as the lock root.
			if _, err := OpenDir(filepath.Join(root, "store"), backupOwner); !errors.Is(err, ErrUnsafeRoot) {
				t.Errorf("OpenDir below it: want ErrUnsafeRoot, got %v", err)
			}
		})
	}
}

// TestOpenRootFresh: as root, whatever the umask, a missing lock root and
// its missing parent are created root:root 0755, and the store's directory
// and registry are the backup user's.
func TestOpenRootFresh(t *testing.T) {
	rtest.RequireRoot(t)
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	base := t.TempDir()
	path := filepath.Join(base, "chunkgc", "locks")
	r, err := OpenRoot(path)
	rtest.OK(t, err)
	defer r.Close()
	rtest.Equal(t, "r.Path()", path, r.Path())
	for _, p := range []string{filepath.Dir(path), path} {
		uid, gid := owner(t, p)
		if uid != 0 || gid != 0 {
			t.Errorf("%s: owner %d:%d, want 0:0", p, uid, gid)
		}
		assertMode(t, p, 0o755)
	}
	d, err := r.Store("store1", backupOwner)
	rtest.OK(t, err)
	defer d.Close()
	for _, p := range []string{d.Path(), filepath.Join(d.Path(), writersDir)} {
		uid, gid := owner(t, p)
		if uid != backupUID || gid != backupGID {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, uid, gid, backupUID, backupGID)
		}
	}
	// Opening it again changes nothing and accepts it.
	r2, err := OpenRoot(path)
	rtest.OK(t, err)
	rtest.OK(t, r2.Close())
}

func TestStoreNames(t *testing.T) {
	r, err := OpenRoot(t.TempDir())
	rtest.OK(t, err)
	defer r.Close()
	for _, name := range []string{"", ".", "..", "a/b", "/abs", "a\x00b"} {
		if d, err := r.Store(name, fsys.Keep); err == nil {
			d.Close()
			t.Errorf("Store(%q) succeeded", name)
		}
	}
	rtest.OK(t, r.Close())
	if _, err := r.Store("s", fsys.Keep); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Store on a closed root: want ErrClosed, got %v", err)
	}
}

// TestStoreSymlink: a store lock dir that is a symlink is refused, naming
// it, whoever planted it.
func TestStoreSymlink(t *testing.T) {
	base := t.TempDir()
	outside := t.TempDir()
	rtest.OK(t, os.Symlink(outside, filepath.Join(base, "store")))
	r, err := OpenRoot(base)
	rtest.OK(t, err)
	defer r.Close()
	_, err = r.Store("store", fsys.Keep)
	if !errors.Is(err, nofollow.ErrSymlink) || !strings.Contains(err.Error(), filepath.Join(base, "store")) {
		t.Fatalf("want ErrSymlink naming the store dir, got %v", err)
	}
	entries, err := os.ReadDir(outside)
	rtest.OK(t, err)
	rtest.Equal(t, "len(entries)", 0, len(entries))
}

// TestLiteralRoots runs pbsLayout (in a helper process with its own mount
// namespace and a private tmpfs on /run, so the host's /run is never
// touched): the exact PBS layout is accepted, the same layout at another
// path or with a writable mode is not, and DefaultRoot is created root's.
func TestLiteralRoots(t *testing.T) {
	rtest.RequireRoot(t)
	cmd := rtest.Helper("locking", "literal-roots")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
		rtest.SkipOrFailf(t, "no private mount namespace: %v", err)
	}
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("literal-roots helper: %v\n%s", err, out)
	}
}

// literalRoots is the helper of TestLiteralRoots; it must run in a private
// mount namespace. It prints "ok" or the failures.
func literalRoots() int {
	var fails []string
	fail := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }
	must := func(err error) bool {
		if err != nil {
			fail("%v", err)
			return false
		}
		return true
	}
	if !must(unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4m,mode=0755")) {
		fmt.Println(strings.Join(fails, "\n"))
		return 1
	}
	// PBS ≥ 3.4: /run/proxmox-backup and its locks dir belong to backup.
	pbsDir := filepath.Dir(PBSRoot)
	must(os.MkdirAll(PBSRoot, 0o755))
	must(os.Chown(pbsDir, backupUID, backupGID))
	must(os.Chown(PBSRoot, backupUID, backupGID))
	if r, err := OpenRoot(PBSRoot); err != nil {
		fail("PBS layout refused: %v", err)
	} else {
		if d, err := r.Store("store1", backupOwner); err != nil {
			fail("PBS store dir: %v", err)
		} else {
			d.Close()
		}
		if d, err := r.Store("store1", fsys.Owner{UID: backupUID + 1, GID: backupGID + 1}); err == nil {
			d.Close()
			fail("PBS root owned by %d accepted for store owner %d", backupUID, backupUID+1)
		}
		// In the PBS layout the backup user may plant a symlink as a
		// store's lock dir: it is not followed.
		must(os.Symlink("/etc", filepath.Join(PBSRoot, "evil")))
		if _, err := r.Store("evil", backupOwner); !errors.Is(err, nofollow.ErrSymlink) {
			fail("symlinked store dir in the PBS root: want ErrSymlink, got %v", err)
		}
		r.Close()
	}
	must(os.Chmod(PBSRoot, 0o777))
	if r, err := OpenRoot(PBSRoot); !errors.Is(err, ErrUnsafeRoot) {
		fail("PBS root with mode 0777: want ErrUnsafeRoot, got %v", err)
		if r != nil {
			r.Close()
		}
	}
	must(os.Chmod(PBSRoot, 0o755))
	// The lock root a symlink: never followed, even at the PBS path.
	must(os.Rename(PBSRoot, PBSRoot+".real"))
	must(os.Symlink(PBSRoot+".real", PBSRoot))
	if r, err := OpenRoot(PBSRoot); !errors.Is(err, nofollow.ErrSymlink) {
		fail("symlinked PBS root: want ErrSymlink, got %v", err)
		if r != nil {
			r.Close()
		}
	}
	// The same layout elsewhere is not PBS's.
	other := "/run/proxmox-backup2/locks"
	must(os.MkdirAll(other, 0o755))
	must(os.Chown(filepath.Dir(other), backupUID, backupGID))
	must(os.Chown(other, backupUID, backupGID))
	if r, err := OpenRoot(other); !errors.Is(err, ErrUnsafeRoot) {
		fail("backup-owned %s: want ErrUnsafeRoot, got %v", other, err)
		if r != nil {
			r.Close()
		}
	}
	// The default root, fresh: root's, 0755.
	unix.Umask(0o077)
	if r, err := OpenRoot(DefaultRoot); err != nil {
		fail("default root: %v", err)
	} else {
		for _, p := range []string{filepath.Dir(DefaultRoot), DefaultRoot} {
			var st unix.Stat_t
			if must(unix.Lstat(p, &st)) && (st.Uid != 0 || st.Gid != 0 || st.Mode&0o7777 != 0o755) {
				fail("%s: %d:%d %04o, want 0:0 0755", p, st.Uid, st.Gid, st.Mode&0o7777)
			}
		}
		r.Close()
	}
	if len(fails) > 0 {
		fmt.Println(strings.Join(fails, "\n"))
		return 1
	}
	fmt.Println("ok")
	return 0
}
