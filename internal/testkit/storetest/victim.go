package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/testkit/rtest"
)

// BackupUID and BackupGID are Debian's backup user and group, who own a
// datastore and its lock tree: the less privileged user the hardening tests
// play as.
const (
	BackupUID = 34
	BackupGID = 34
)

// victimAge is how old the victim's atimes and mtimes are made: older than
// any GC cutoff, so that a GC led into the victim tree would take its
// chunk-named files for garbage, and old enough that any read or touch
// moves the atime under every atime mount option.
const victimAge = 72 * time.Hour

// VictimDigest is the name (64 hex digits) of the chunk-named files in a
// victim tree: <dir>/bb9f/<VictimDigest> and <dir>/<VictimDigest>.
const VictimDigest = "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"

// Victim is a directory tree outside every store and lock directory, owned
// by root and not writable by the backup user, that an attacker would like
// a root-run chunkgc to touch, chown, truncate or delete. It looks like what
// chunkgc operates on: a prefix dir "bb9f" holding a chunk-named file, an
// index-named file, a file named like a lock ("gc", "vm-100"), a "writers"
// dir with an entry, and ".lock" and ".gc-status" files, all with old times.
//
// [Victim.Check] fails the test unless every entry is byte for byte and
// atime for atime as it was made. Call it before [CheckReferenced], which
// reads index files through symlinks.
type Victim struct {
	Dir   string
	state map[string]victimEntry
}

type victimEntry struct {
	mode, uid, gid uint32
	ino, nlink     uint64
	size           int64
	atime, mtime   unix.Timespec
	sum            string // sha256 of a regular file's content
	target         string // of a symlink
}

// NewVictim makes a victim tree in a fresh directory and records it. It
// needs root (to keep it root's while the backup user can traverse it).
func NewVictim(t testing.TB) *Victim {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "victim")
	files := map[string]string{
		"bb9f/" + VictimDigest:               "victim chunk",
		VictimDigest:                         "victim chunk at the top",
		"drive.fidx":                         "victim index",
		"gc":                                 "victim gc lock",
		"vm-100":                             "victim group lock",
		"writers/abcdef":                     "1",
		".lock":                              "victim store lock",
		".gc-status":                         "victim status",
		"etc/passwd":                         "root:x:0:0::/root:/bin/sh\n",
		"ns/a/vm/100/owner":                  "victim owner",
		"vm/100/2025-01-01T00:00:00Z/x":      "victim snapshot file",
		"vm/100/2025-01-01T00:00:00Z/y.didx": "victim didx",
	}
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Let the backup user reach it (so its symlinks resolve as an attacker
	// wants), never write it.
	for p := dir; p != filepath.Dir(p); p = filepath.Dir(p) {
		if !strings.HasPrefix(p, os.TempDir()) || p == os.TempDir() {
			break
		}
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-victimAge)
	paths, err := walkNoAtime(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range slices.Backward(paths) { // children first: Chtimes of a dir lists nothing
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	v := &Victim{Dir: dir}
	v.state = v.record(t)
	return v
}

// record lstats every entry, reading nothing in a way that would move an
// atime (directories and content are read with O_NOATIME).
func (v *Victim) record(t testing.TB) map[string]victimEntry {
	t.Helper()
	m := map[string]victimEntry{}
	paths, err := walkNoAtime(v.Dir)
	for _, p := range paths {
		if err != nil {
			break
		}
		var st unix.Stat_t
		if err = unix.Lstat(p, &st); err != nil {
			break
		}
		e := victimEntry{mode: st.Mode, uid: st.Uid, gid: st.Gid, ino: st.Ino, nlink: uint64(st.Nlink),
			size: st.Size, atime: st.Atim, mtime: st.Mtim}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.sum, err = sumNoAtime(p)
		case unix.S_IFLNK:
			e.target, err = os.Readlink(p)
		}
		rel, _ := filepath.Rel(v.Dir, p)
		m[rel] = e
	}
	if err != nil {
		t.Fatalf("storetest: victim %s: %v", v.Dir, err)
	}
	return m
}

// walkNoAtime lists dir and everything below it, parents first, reading
// directories with O_NOATIME so that the listing moves no atime.
func walkNoAtime(dir string) ([]string, error) {
	paths := []string{dir}
	for i := 0; i < len(paths); i++ {
		var st unix.Stat_t
		if err := unix.Lstat(paths[i], &st); err != nil {
			return nil, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue
		}
		fd, err := unix.Open(paths[i], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return nil, err
		}
		f := os.NewFile(uintptr(fd), paths[i])
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return nil, err
		}
		slices.Sort(names)
		for _, n := range names {
			paths = append(paths, filepath.Join(paths[i], n))
		}
	}
	return paths, nil
}

// sumNoAtime hashes the file at p, read with O_NOATIME.
func sumNoAtime(p string) (string, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	h := sha256.New()
	if _, err := f.WriteTo(h); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Check fails t (t.Errorf) for every entry of the victim tree that was
// created, removed, or changed in content, owner, mode, inode, link count,
// atime or mtime since [NewVictim]. Directory atimes are compared too: a
// directory that was listed has a moved atime.
func (v *Victim) Check(t testing.TB) {
	t.Helper()
	now := v.record(t)
	var names []string
	for rel := range v.state {
		names = append(names, rel)
	}
	for rel := range now {
		if _, ok := v.state[rel]; !ok {
			names = append(names, rel)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	for _, rel := range names {
		was, ok1 := v.state[rel]
		is, ok2 := now[rel]
		p := filepath.Join(v.Dir, rel)
		switch {
		case !ok1:
			t.Errorf("storetest: victim: %s was created outside the store", p)
		case !ok2:
			t.Errorf("storetest: victim: %s outside the store was removed", p)
		case was != is:
			t.Errorf("storetest: victim: %s outside the store changed:\n  was %+v\n  is  %+v", p, was, is)
		}
	}
}

// ChownTree gives dir and everything below it (not following symlinks) to
// the backup user, as a PBS datastore and lock tree are.
func ChownTree(t testing.TB, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, BackupUID, BackupGID)
	})
	if err != nil {
		t.Fatalf("storetest: chown %s: %v", dir, err)
	}
}

// AsBackup runs the shell script as a real process of the backup user
// (uid/gid 34, no supplementary groups) with dir as working directory and
// fails t if it exits non-zero. It is how tests plant what an attacker who
// owns the backup account can plant: symlinks, FIFOs, renamed directories.
func AsBackup(t testing.TB, dir, script string) {
	t.Helper()
	cmd := backupShell(context.Background(), dir, script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("storetest: as backup in %s: %s: %v\n%s", dir, script, err, out.String())
	}
}

// StartAsBackup starts the shell script like [AsBackup] but in the
// background, for an attacker that races a running command (e.g. a loop
// that swaps a directory for a symlink). The script runs until it ends by
// itself, until d has passed, or until the returned stop is called; stop
// waits for it and returns its output. The script is killed, with its
// process group, when the test ends at the latest.
func StartAsBackup(t testing.TB, dir, script string, d time.Duration) (stop func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	cmd := backupShell(ctx, dir, script)
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("storetest: start as backup: %v", err)
	}
	done := false
	stop = func() string {
		if !done {
			done = true
			cancel()
			cmd.Wait()
		}
		return out.String()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// Swap is an attacker of the backup user that swaps a directory of a store
// with a symlink into the victim tree again and again (see [StartSwap]).
type Swap struct {
	dir, rel string
	stop     func() string
}

// StartSwap starts, as the backup user, an attacker that swaps dir/rel with
// the symlink .swap beside it, which points at the same path in the victim
// tree, for 2 s: renameat2(RENAME_EXCHANGE), so that the real directory is
// always at one of the two names, with a pause after each swap, and an
// even number of swaps. It needs perl (without it the test skips outside CI
// and fails in it).
func StartSwap(t testing.TB, dir, rel string, v *Victim, pause time.Duration) *Swap {
	t.Helper()
	if _, err := exec.LookPath("perl"); err != nil {
		rtest.SkipOrFail(t, "needs perl for the attacker's renameat2")
	}
	swap := filepath.Join(filepath.Dir(rel), ".swap")
	script := fmt.Sprintf(`ln -s "%s/%s" %s && perl -e '
		my ($x, $y) = ("%s", "%s"); my $n = 0; my $end = time + 2;
		while (time < $end) { syscall(316, -100, $x, -100, $y, 2) == 0 or die "renameat2: $!"; $n++; select(undef, undef, undef, %g); }
		if ($n %% 2) { syscall(316, -100, $x, -100, $y, 2) == 0 or die "renameat2: $!"; }
		print "swaps $n\n";'`, v.Dir, rel, swap, rel, swap, pause.Seconds())
	return &Swap{dir: dir, rel: rel, stop: StartAsBackup(t, dir, script, time.Minute)}
}

// Stop waits for the attacker, logs its output and fails t unless it
// finished its loop and left the directory in place; it removes the
// symlink.
func (s *Swap) Stop(t testing.TB) {
	t.Helper()
	out := strings.TrimSpace(s.stop())
	t.Logf("storetest: attacker: %s", out)
	if !strings.Contains(out, "swaps ") {
		t.Fatalf("storetest: the attacker did not finish its loop: %s", out)
	}
	p := filepath.Join(s.dir, s.rel)
	if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
		t.Fatalf("storetest: %s is not back in place: %v %v", p, fi, err)
	}
	rtest.OK(t, os.Remove(filepath.Join(filepath.Dir(p), ".swap")))
}

// MkdirDeep creates directories of 200-byte names below dir, relative to
// the previous one's fd, until the path is longer than PATH_MAX, and
// returns an fd of the deepest, closed when the test ends, and its path:
// what an attacker nests to hide an index from a walk by path.
func MkdirDeep(t testing.TB, dir string) (int, string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	rtest.OK(t, err)
	name := strings.Repeat("d", 200)
	p := dir
	for len(p) < unix.PathMax+100 {
		rtest.OK(t, unix.Mkdirat(fd, name, 0o755))
		nfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		rtest.OK(t, err)
		unix.Close(fd)
		fd, p = nfd, p+"/"+name
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, p
}

// Reachable lets the backup user search dir and its parents up to the
// temporary directory (t.TempDir() makes them 0700), as it can reach a real
// datastore: it adds read and search permission for group and others.
func Reachable(t testing.TB, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for p := filepath.Clean(dir); strings.HasPrefix(p, tmp+"/"); p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		rtest.OK(t, err)
		rtest.OK(t, os.Chmod(p, fi.Mode().Perm()|0o055))
	}
}

// CopyTestBinary copies the running test binary where the backup user can
// run it (go test builds it in a private directory) and returns its path.
func CopyTestBinary(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	rtest.OK(t, err)
	dir := t.TempDir()
	Reachable(t, dir)
	bin := filepath.Join(dir, filepath.Base(exe))
	src, err := os.Open(exe)
	rtest.OK(t, err)
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	rtest.OK(t, err)
	_, err = io.Copy(dst, src)
	rtest.OK(t, errors.Join(err, dst.Close()))
	return bin
}

func backupShell(ctx context.Context, dir, script string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: BackupUID, Gid: BackupGID, Groups: []uint32{}}}
	return cmd
}

// String describes the victim, for logs.
func (v *Victim) String() string {
	return fmt.Sprintf("victim tree %s (%d entries)", v.Dir, len(v.state))
}
