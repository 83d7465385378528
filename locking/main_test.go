package locking

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/internal/fsys"
	"chunkgc/internal/testkit/leakcheck"
	"chunkgc/internal/testkit/rtest"
)

// TestMain runs the tests, or, re-executed by [rtest.Helper] as the helper
// "locking", helperMain: lock tests between processes re-exec the binary.
func TestMain(m *testing.M) {
	rtest.Main(m, rtest.Helpers{"locking": helperMain}, leakcheck.Runner("chunkgc/locking."))
}

// helperMain runs one helper command. It reports on stdout, one line per
// event, and takes further commands one per line on stdin; it exits when
// stdin closes (which releases whatever it holds).
func helperMain(args []string) int {
	if len(args) == 0 {
		fmt.Println("error no helper command")
		return 2
	}
	in := bufio.NewScanner(os.Stdin)
	switch cmd, args := args[0], args[1:]; cmd {
	case "flock": // PATH sh|ex TIMEOUT: take a flock, then obey unlock/remove
		mode := Shared
		if args[1] == "ex" {
			mode = Exclusive
		}
		timeout, err := time.ParseDuration(args[2])
		if err != nil {
			fmt.Println("error", err)
			return 2
		}
		l, err := Flock(context.Background(), args[0], mode, timeout)
		if !reportLock(l, err) {
			return 0
		}
		for in.Scan() {
			switch in.Text() {
			case "unlock":
				report("unlocked", l.Unlock())
			case "remove":
				report("removed", l.RemoveAndUnlock())
			}
		}
	case "posix-rdlock": // PATH: hold a classic POSIX read lock, like a PBS backup
		fd, err := unix.Open(args[0], unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lk); err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
	case "ofd": // PATH: try OFDLock once
		l, err := OFDLock(args[0])
		if !reportLock(l, err) {
			return 0
		}
		io.Copy(io.Discard, os.Stdin)
	case "writer": // DIR START-UNIX-NANOS: register a writer, then obey close
		d, err := OpenDir(args[0], fsys.Keep)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		ns, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil {
			fmt.Println("error", err)
			return 2
		}
		w, err := d.RegisterWriter(time.Unix(0, ns))
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("registered", filepath.Base(w.Path()))
		for in.Scan() {
			if in.Text() == "close" {
				report("closed", w.Close())
			}
		}
	case "literal-roots": // in a private mount namespace: see TestLiteralRoots
		return literalRoots()
	case "stress": // PATH N WITNESS: N rounds of exclusive lock, check, remove
		return stress(args[0], args[1], args[2])
	default:
		fmt.Println("error unknown helper command", cmd)
		return 2
	}
	return 0
}

// reportLock prints "locked <inode>", "busy", "replaced" or "error ..." and
// reports whether the lock is held.
func reportLock(l *Lock, err error) bool {
	switch {
	case err == nil:
		var st unix.Stat_t
		if err := unix.Fstat(l.fd, &st); err != nil {
			fmt.Println("error", err)
			return false
		}
		fmt.Println("locked", st.Ino)
		return true
	case errors.Is(err, ErrLocked):
		fmt.Println("busy")
	case errors.Is(err, ErrReplaced):
		fmt.Println("replaced")
	default:
		fmt.Println("error", err)
	}
	return false
}

func report(done string, err error) {
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println(done)
}

// stress takes the exclusive lock on path n times, each time proving it is
// alone by creating witness with O_EXCL, and releases it, half of the time
// removing the lock file (the seed 000 pattern). It polls fast so that the
// processes interleave a lot.
func stress(path, rounds, witness string) int {
	n, err := strconv.Atoi(rounds)
	if err != nil {
		fmt.Println("error", err)
		return 2
	}
	f := newFlocker(fsys.Real{}, fsys.Keep)
	f.minPoll, f.maxPoll = 10*time.Microsecond, 200*time.Microsecond
	for i := range n {
		l, err := f.lock(context.Background(), path, Exclusive, time.Minute)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		fd, err := unix.Open(witness, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err != nil {
			fmt.Println("violation round", i, err)
			return 3
		}
		unix.Close(fd)
		runtime.Gosched()
		if err := unix.Unlink(witness); err != nil {
			fmt.Println("error", err)
			return 1
		}
		if i%2 == 0 {
			err = l.RemoveAndUnlock()
		} else {
			err = l.Unlock()
		}
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	fmt.Println("done")
	return 0
}

// proc is a running helper process.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	done bool
}

// startProc starts a helper running args; t.Cleanup stops it.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := rtest.Helper("locking", args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	rtest.OK(t, err)
	out, err := cmd.StdoutPipe()
	rtest.OK(t, err)
	rtest.OK(t, cmd.Start())
	p := &proc{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() { p.stop() })
	return p
}

// line reads the helper's next line.
func (p *proc) line() string {
	p.t.Helper()
	s, err := p.out.ReadString('\n')
	if err != nil {
		p.t.Fatalf("helper %v: read: %v (got %q)", p.cmd.Args[1:], err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// expect reads a line and fails unless it is want.
func (p *proc) expect(want string) {
	p.t.Helper()
	if got := p.line(); got != want {
		p.t.Fatalf("helper %v said %q, want %q", p.cmd.Args[1:], got, want)
	}
}

// expectLocked reads a "locked <inode>" line and returns the inode.
func (p *proc) expectLocked() uint64 {
	p.t.Helper()
	got := p.line()
	ino, found := strings.CutPrefix(got, "locked ")
	if !found {
		p.t.Fatalf("helper %v said %q, want locked", p.cmd.Args[1:], got)
	}
	n, err := strconv.ParseUint(ino, 10, 64)
	rtest.OK(p.t, err)
	return n
}

func (p *proc) send(cmd string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		p.t.Fatalf("helper %v: send %q: %v", p.cmd.Args[1:], cmd, err)
	}
}

// stop closes the helper's stdin, which makes it exit, and waits for it.
func (p *proc) stop() {
	if p.done {
		return
	}
	p.done = true
	p.in.Close()
	if err := p.cmd.Wait(); err != nil {
		p.t.Errorf("helper %v: %v", p.cmd.Args[1:], err)
	}
}

// kill SIGKILLs the helper and waits for it.
func (p *proc) kill() {
	p.t.Helper()
	p.done = true
	rtest.OK(p.t, p.cmd.Process.Signal(unix.SIGKILL))
	err := p.cmd.Wait()
	if ee, isExit := errors.AsType[*exec.ExitError](err); !isExit || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
		p.t.Fatalf("helper %v: want killed by SIGKILL, got %v", p.cmd.Args[1:], err)
	}
	p.in.Close()
}

// mountTmpfs mounts a fresh tmpfs (root only) and unmounts it in cleanup.
func mountTmpfs(t *testing.T) string {
	t.Helper()
	rtest.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=16m,mode=0755"); err != nil {
		rtest.SkipOrFailf(t, "mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

// inode returns the inode of path, or fails.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	rtest.OK(t, unix.Lstat(path, &st))
	return st.Ino
}

// fdInode returns the inode of the file l holds.
func fdInode(t *testing.T, l *Lock) uint64 {
	t.Helper()
	var st unix.Stat_t
	rtest.OK(t, unix.Fstat(l.fd, &st))
	return st.Ino
}

// owner returns the uid and gid of path.
func owner(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	rtest.OK(t, unix.Lstat(path, &st))
	return st.Uid, st.Gid
}

// assertMode fails t unless the permission bits of path are want.
func assertMode(t *testing.T, path string, want uint32) {
	t.Helper()
	var st unix.Stat_t
	rtest.OK(t, unix.Lstat(path, &st))
	if got := st.Mode & 0o7777; got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}
