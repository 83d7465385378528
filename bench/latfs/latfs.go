// Package latfs is a latency harness: a loopback FUSE filesystem over a
// backing directory that delays every request by a fixed round trip and
// counts requests per opcode, a stand-in for NFS- or CIFS-like storage where
// every metadata call costs a round trip. Nothing is cached by the kernel
// (attribute, entry and negative-entry timeouts are 0), so every stat, open,
// lookup and readdir of the program under test reaches the server; requests
// are served concurrently, as go-fuse does by default, so a client with N
// calls in flight sees N overlapping delays.
//
// The delay is a wait on a pooled timerfd through Go's netpoller (Go's
// time.Sleep rounds short sleeps up to about a millisecond on Linux; a
// nanosleep per request pins a thread per request in flight), shortened by
// the overshoot measured at Mount so the median request takes the delay
// asked for (at most by half the delay).
//
// Benchmark tooling only (bench/latency, bench/latfs/cmd/latfs): never
// linked into cmd/chunkgc.
package latfs

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options configure Mount.
type Options struct {
	// Delay is added to every request that has a reply (FORGET has
	// none and is only counted).
	Delay time.Duration
	// NoCalibrate sleeps exactly Delay per request instead of Delay
	// minus the median overshoot of a sleep measured at Mount.
	NoCalibrate bool
	// EnableLocks forwards flock/fcntl locks to the server (counted as
	// GETLK/SETLK/SETLKW); by default the kernel keeps them local.
	EnableLocks bool
	// Name is the FUSE subtype ("fuse.<Name>" in mountinfo); default
	// "latfs".
	Name string
}

// FS is a mounted latency harness.
type FS struct {
	server *fuse.Server
	mnt    string
	raw    *delayFS
}

// Mount mounts the loopback of backing on mnt (an existing directory) and
// serves it until Unmount. It needs root (mount(2) directly, no fusermount)
// and /dev/fuse.
func Mount(backing, mnt string, o Options) (*FS, error) {
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return nil, fmt.Errorf("latfs: loopback %s: %w", backing, err)
	}
	name := o.Name
	if name == "" {
		name = "latfs"
	}
	var zero time.Duration
	nodeOpts := &fs.Options{AttrTimeout: &zero, EntryTimeout: &zero, NegativeTimeout: &zero}
	sleep := o.Delay
	if !o.NoCalibrate && sleep > 0 {
		sleep -= min(Overshoot(sleep, 200), sleep/2) // a loaded machine must not calibrate the delay away
	}
	raw := &delayFS{RawFileSystem: fs.NewNodeFS(root, nodeOpts), delay: sleep}
	mo := fuse.MountOptions{
		DirectMountStrict: true,
		AllowOther:        true,
		FsName:            backing,
		Name:              name,
		EnableLocks:       o.EnableLocks,
		// The kernel sends RELEASE and RELEASEDIR as background requests,
		// at most MaxBackground at once (go-fuse's default is 12). With a
		// delay on each, a GC that opens and closes dirs faster than 12
		// per delay piles up releases, and with them the server's open
		// backing fds, until it runs out (EMFILE). An NFS server keeps no
		// state per open dir; room for this many releases in flight keeps
		// the harness from inventing that limit.
		MaxBackground: 1024,
	}
	server, err := fuse.NewServer(raw, mnt, &mo)
	if err != nil {
		return nil, fmt.Errorf("latfs: mount %s: %w", mnt, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		_ = server.Unmount()
		return nil, fmt.Errorf("latfs: mount %s: %w", mnt, err)
	}
	return &FS{server: server, mnt: mnt, raw: raw}, nil
}

// Unmount unmounts the filesystem and waits for the server to stop; when
// the mount is busy it detaches it lazily.
func (f *FS) Unmount() error {
	if err := f.server.Unmount(); err != nil {
		if lerr := unix.Unmount(f.mnt, unix.MNT_DETACH); lerr != nil {
			return fmt.Errorf("latfs: unmount %s: %w (lazy: %w)", f.mnt, err, lerr)
		}
		return nil
	}
	f.server.Wait()
	return nil
}

// Sleep is the time each request sleeps (Delay minus the calibration).
func (f *FS) Sleep() time.Duration { return f.raw.delay }

// Snapshot returns the counters since the last Reset (or Mount).
func (f *FS) Snapshot() Counts { return f.raw.snapshot(false) }

// Reset returns the counters since the last Reset and zeroes them.
func (f *FS) Reset() Counts { return f.raw.snapshot(true) }

// Counts are request counts per FUSE opcode name ("LOOKUP", "READDIRPLUS",
// ...), plus "READDIR_EMPTY" and "READDIRPLUS_EMPTY" for directory reads
// that returned no entries (the end-of-listing round trip).
type Counts map[string]uint64

// Total is the number of requests, FORGET and the *_EMPTY subcounts
// excluded.
func (c Counts) Total() uint64 {
	var n uint64
	for k, v := range c {
		if k != "FORGET" && !strings.HasSuffix(k, "_EMPTY") {
			n += v
		}
	}
	return n
}

// Sub returns c - d per key.
func (c Counts) Sub(d Counts) Counts {
	out := Counts{}
	for k, v := range c {
		if r := v - d[k]; r != 0 {
			out[k] = r
		}
	}
	return out
}

// Keys returns the opcodes with a nonzero count, sorted.
func (c Counts) Keys() []string {
	var ks []string
	for k, v := range c {
		if v != 0 {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

// String formats the counts as "OP=n OP=n ..." in key order.
func (c Counts) String() string {
	var b strings.Builder
	for i, k := range c.Keys() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, c[k])
	}
	return b.String()
}

// Overshoot is the median by which a delay-long sleep of this package
// overruns, over n sleeps.
func Overshoot(delay time.Duration, n int) time.Duration {
	over := make([]time.Duration, n)
	for i := range over {
		t := time.Now()
		nap(delay)
		over[i] = time.Since(t) - delay
	}
	slices.Sort(over)
	return over[n/2]
}

// nap waits d on a timerfd through Go's netpoller: the goroutine parks
// and no thread blocks, so many overlapping naps cost no thread each (a
// nanosleep per request pins a thread and, with GOMAXPROCS 2, halves the
// requests/s the server sustains at 32 in flight), and the wakeup is not
// rounded to the millisecond as time.Sleep's is on Linux. Timer fds are
// pooled.
func nap(d time.Duration) {
	if d <= 0 {
		return
	}
	var f *os.File
	select {
	case f = <-timers:
	default:
		fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
		if err != nil {
			napSlow(d)
			return
		}
		f = os.NewFile(uintptr(fd), "timerfd") // nonblocking: served by the netpoller
	}
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	var serr error
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { serr = unix.TimerfdSettime(int(fd), 0, &its, nil) })
	}
	var buf [8]byte
	if err == nil && serr == nil {
		_, err = f.Read(buf[:])
	}
	if err != nil || serr != nil {
		f.Close()
		napSlow(d)
		return
	}
	select {
	case timers <- f:
	default:
		f.Close()
	}
}

var timers = make(chan *os.File, 4096)

// napSlow is nap's fallback: nanosleep with a 1 ns timer slack.
func napSlow(d time.Duration) {
	_, _, _ = unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, 1, 0)
	ts := unix.NsecToTimespec(int64(d))
	for {
		err := unix.Nanosleep(&ts, &ts)
		if err != syscall.EINTR {
			return
		}
	}
}
