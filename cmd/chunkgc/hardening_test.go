package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/gc"
	"chunkgc/internal/testkit/hangfuse"
	"chunkgc/internal/testkit/rtest"
	"chunkgc/internal/testkit/storetest"
	"chunkgc/internal/testkit/testfs"
)

// reachableDir returns a fresh directory the backup user can enter (not
// t.TempDir, whose parent is root's 0700), removed when the test ends.
func reachableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "chunkgc-hardening-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestFullCycleWithGCAsBackup is the least-privilege cycle of the shipped
// units: create, ingest and forget as root, then gc as the backup user (uid
// 34): it must find everything it needs writable by that user, remove the
// forgotten snapshot's chunks and keep every referenced one.
func TestFullCycleWithGCAsBackup(t *testing.T) {
	rtest.RequireRoot(t)
	dir := reachableDir(t)
	c := &cli{t: t, config: filepath.Join(dir, "datastore.cfg"), lockDir: filepath.Join(dir, "locks")}
	base := filepath.Join(dir, "store")
	wantCode(t, c.run("create", "st1", base), 0)
	var files []string
	for i := range 2 {
		p := filepath.Join(dir, "disk"+string(rune('a'+i)))
		b := make([]byte, 8<<20)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	first := strings.TrimSpace(c.run("ingest", "st1", "vm/100", files[0]).stdout)
	time.Sleep(1100 * time.Millisecond) // snapshot names are whole seconds
	r := c.run("ingest", "st1", "vm/100", files[1])
	wantCode(t, r, 0)
	snap, err := filepath.Rel(base, first)
	if err != nil || !strings.HasPrefix(snap, "vm/100/") {
		t.Fatalf("ingest printed %q", first)
	}
	wantCode(t, c.run("forget", "st1", snap), 0)
	// Age every chunk: those of the forgotten snapshot are now garbage.
	old := time.Now().Add(-72 * time.Hour)
	filepath.WalkDir(filepath.Join(base, ".chunks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})

	cmd := c.cmd("gc", "--output", "json", "st1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: storetest.BackupUID, Gid: storetest.BackupGID, Groups: []uint32{}}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("gc as backup: %v\n%s", err, errb.String())
	}
	var st gc.Status
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("status: %v: %s", err, out.String())
	}
	if st.RemovedChunks < 2 {
		t.Errorf("gc as backup removed %d chunks, want the forgotten snapshot's 2", st.RemovedChunks)
	}
	var sst unix.Stat_t
	if err := unix.Lstat(filepath.Join(base, gc.StatusFile), &sst); err != nil || sst.Uid != storetest.BackupUID {
		t.Errorf(".gc-status not written by the backup user: %v uid %d", err, sst.Uid)
	}
	storetest.CheckReferenced(t, base)
}

// TestHostileFilesDoNotHang: a FIFO where the config, .gc-status, the store
// lock or an index file belongs, and a configured store path with "..":
// each command fails promptly with exit 1 and an error naming the path,
// removes nothing, and never blocks (a FIFO opened without O_NONBLOCK would
// block until the test's guard kills it).
func TestHostileFilesDoNotHang(t *testing.T) {
	rtest.RequireRoot(t)
	fifo := func(t *testing.T, p string) {
		t.Helper()
		os.Remove(p)
		if err := unix.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, row := range []struct {
		name  string
		setup func(t *testing.T, c *cli, base string) (args []string, names string)
	}{
		{"config", func(t *testing.T, c *cli, base string) ([]string, string) {
			fifo(t, c.config)
			return []string{"gc", "st1"}, c.config
		}},
		{"gc-status", func(t *testing.T, c *cli, base string) ([]string, string) {
			fifo(t, filepath.Join(base, gc.StatusFile))
			return []string{"status", base}, filepath.Join(base, gc.StatusFile)
		}},
		{"store lock", func(t *testing.T, c *cli, base string) ([]string, string) {
			fifo(t, filepath.Join(base, ".lock"))
			return []string{"gc", base}, filepath.Join(base, ".lock")
		}},
		{"index", func(t *testing.T, c *cli, base string) ([]string, string) {
			p := filepath.Join(base, "vm/100/2025-01-01T00:00:00Z/drive-scsi1.img.fidx")
			fifo(t, p)
			return []string{"gc", base}, p
		}},
		{"dot-dot store path", func(t *testing.T, c *cli, base string) ([]string, string) {
			p := filepath.Dir(base) + "/x/../" + filepath.Base(base)
			cfg := "datastore: st1\n\tpath " + p + "\n"
			if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			return []string{"gc", "st1"}, p
		}},
	} {
		t.Run(row.name, func(t *testing.T) {
			base := filepath.Join(testfs.Tmpfs(t, ""), "s")
			s := makeStore(t, base, 10, 10)
			c := newCLI(t)
			args, names := row.setup(t, c, base)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := c.cmd(args...)
			cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
			cmd.Env = append(os.Environ(), "CHUNKGC_CONFIG=", "CHUNKGC_LOCK_DIR=")
			var errb bytes.Buffer
			cmd.Stderr = &errb
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("%v blocked until killed: %s", args, errb.String())
			}
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != exitError {
				t.Fatalf("%v: %v, want exit %d\n%s", args, err, exitError, errb.String())
			}
			if !strings.Contains(errb.String(), names) {
				t.Errorf("error does not name %s:\n%s", names, errb.String())
			}
			if n := countExisting(s.garbage); n != len(s.garbage) {
				t.Errorf("%d of %d garbage chunks removed by a run that failed", len(s.garbage)-n, len(s.garbage))
			}
		})
	}
}

// TestSIGTERMWhileASyscallHangs: the touch of a referenced chunk hangs in a
// FUSE filesystem (as on a dead NFS server) and SIGTERM arrives: chunkgc
// still exits 143 promptly (the grace is 1.5 s; the bound here is looser
// only so that a loaded CI machine does not fail it), removing nothing.
func TestSIGTERMWhileASyscallHangs(t *testing.T) {
	rtest.RequireRoot(t)
	backing := filepath.Join(testfs.Tmpfs(t, ""), "s")
	s := makeStore(t, backing, 5, 5)
	hung := filepath.Base(s.refs[0])
	mnt := hangfuse.Mount(t, filepath.Dir(backing), func(name string) bool { return name == hung })
	c := newCLI(t)
	gcCmd, log := startGC(t, c, filepath.Join(mnt, "s"))
	waitLog(t, log, "start phase 1")
	time.Sleep(300 * time.Millisecond) // let a worker enter the hanging touch
	start := time.Now()
	if err := gcCmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for log.Scan() {
		}
	}()
	err := gcCmd.Wait()
	took := time.Since(start)
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 143 {
		t.Fatalf("gc after SIGTERM: %v, want exit 143", err)
	}
	t.Logf("exited 143 %v after SIGTERM", took)
	if took > 4*time.Second {
		t.Errorf("exit took %v after SIGTERM", took)
	}
	if n := countExisting(s.garbage); n != len(s.garbage) {
		t.Errorf("%d garbage chunks removed by an interrupted run", len(s.garbage)-n)
	}
}
