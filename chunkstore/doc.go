// Package chunkstore creates, reads, touches and removes the chunk files of a
// PBS-style datastore: .chunks/XXXX/<digest>.
//
// # Layout
//
//	<base>/                  0755
//	<base>/.lock             0644, empty: the store lock (package locking)
//	<base>/.chunks/          0750
//	<base>/.chunks/0000 … ffff   the PrefixCount (65,536) prefix dirs, 0750
//	<base>/.chunks/bb9f/bb9f8df6…3af8   a chunk, named by its 64 lowercase hex digit
//	                                     SHA-256 digest, in the dir named by its
//	                                     first four digits
//	<base>/.chunks/XXXX/<digest>.N.bad  a copy found corrupt by verification, N = 0..9
//
// [Create] makes base, .chunks, every prefix dir (mkdirat on the .chunks fd)
// and .lock, all owned by the backup user and group ([fsys.Owner]) when run as
// root. base must be absent or empty, where hidden entries and lost+found do
// not count; so a Create that was interrupted (.chunks and some prefix dirs
// exist) is finished by running it again, which accepts every prefix dir
// that is already a directory and creates the rest. [Store.VerifyLayout]
// checks an existing store for create --reuse and names every missing,
// mistyped or wrongly owned prefix dir in a [*LayoutError].
//
// [Classify] sorts prefix dir entries by name: exactly 64 lowercase hex
// digits is a chunk, that plus ".N.bad" a bad chunk, anything else (e.g. a
// leftover <digest>.tmp_<random>) is not a chunk and is never touched or
// removed.
//
// # Insert
//
// [Store.Insert] writes a chunk the way PBS does, so that no file ever has a
// name that does not match its content: under a shared flock on the prefix
// dir it fstatats the chunk; if it exists, it touches it and reports it
// pre-existing. Otherwise it writes <digest>.tmp_<random> (O_EXCL, 0644),
// fsyncs it when the sync level is "file", fchowns it to the backup user when
// root, and renames it into place (and fsyncs the prefix dir for "file"). On
// any error the tmp file is removed. The "filesystem" sync level does nothing
// per chunk; the writer calls [Store.SyncFS] (syncfs) once at the end of its
// session.
//
// Ownership matters beyond tidiness (seed 002): a chunk created by root and
// left owned by root can no longer be touched by a writer running as the
// backup user. utimensat with {UTIME_NOW, UTIME_OMIT} changes only one
// timestamp, which the kernel allows only to the file's owner (or
// CAP_FOWNER), and fails with EPERM otherwise.
//
// # Touch
//
// A touch sets the atime to now and leaves the mtime alone:
// utimensat(dirfd, name, {UTIME_NOW, UTIME_OMIT}, AT_SYMLINK_NOFOLLOW).
// [Store.Touch] and a [Toucher] use the prefix dir's fd from the store's
// table and the name "<digest>" (one syscall when the fd is cached; see "No
// escape"); [PrefixDir.Touch] uses its own prefix dir fd. A missing chunk is never a success: the error is an *fs.PathError that
// matches fs.ErrNotExist. [Store.TouchBad] touches the existing
// <digest>.N.bad copies of a chunk. Touches take no lock: GC's mark runs
// before its sweep, and GC is the only remover.
//
// GC touches and stats every chunk of a store, so those paths do not
// allocate: a [Toucher] (one per mark worker) builds "<digest>" in a
// buffer of its own, [PrefixDir.StatBytes] and [PrefixDir.StatCached] stat
// a name straight from the [PrefixDir.ReadNames] buffer, and fsys.Real NUL-terminates names shorter
// than 128 bytes on its stack and makes openat, fstatat, statx and utimensat with
// unix.Syscall6 itself (x/sys would copy every name to the heap). Only a
// failed call allocates, for its error. BenchmarkTouch,
// BenchmarkPrefixStat and TestHotPathsDoNotAllocate hold this at 0
// allocations per call.
//
// # No escape
//
// The store belongs to the backup user, and GC often runs as root. So below
// the base nothing is resolved through a path a less privileged user can
// change, and no symlink is ever followed:
//
//   - [Open] resolves the configured base path (root's trusted part) once,
//     then opens .chunks from the base fd with O_NOFOLLOW|O_DIRECTORY: a
//     .chunks that is a symlink or not a directory is an error naming it.
//     [Store.BaseFD] hands the base fd to the packages that work below it
//     (the store lock, .gc-status, the index tree).
//   - Every prefix dir is opened from the .chunks fd with
//     O_NOFOLLOW|O_DIRECTORY, and every chunk operation (touch, stat,
//     unlink, insert) is relative to a prefix dir fd. A touch never resolves
//     "XXXX/<digest>" through .chunks: a prefix dir swapped for a symlink
//     while GC runs would otherwise redirect the touch outside the store.
//     The store keeps a table of prefix dir fds so that a touch costs one
//     utimensat; the table holds as many fds as the process's RLIMIT_NOFILE
//     allows (less a reserve of 2,048), and a prefix dir beyond that budget
//     is opened for the one touch and closed again. GC's sweep takes each
//     cached fd over ([Store.TakePrefix]) after the last touch.
//   - [Store.CheckPrefixDirs] checks, before GC's first removal, that every
//     prefix dir is a real directory; a symlink, file, FIFO or device there
//     stops GC before phase 2. The check is the sweep's own O_NOFOLLOW open,
//     whose fd it caches for [Store.TakePrefix] (budget permitting), so the
//     sweep lists, locks and unlinks through the fd that was checked; a dir
//     swapped in after the check is either never looked at (the sweep uses
//     the checked fd) or refused by the sweep's O_NOFOLLOW open (beyond the
//     budget, where the check takes the word of one listing of .chunks,
//     [Store.ListPrefixDirs], for a dir it showed as a directory).
//   - Hard links: a touch of a referenced chunk cannot tell a hard link to a
//     file outside the store; the kernel's fs.protected_hardlinks=1 (the
//     default) keeps the backup user from linking files it does not own,
//     and GC's sweep never removes a file with more than one link.
//
// # Round trips
//
// On a network or FUSE filesystem every metadata call a chunk or prefix dir
// costs is a round trip, so the GC paths make as few as are correct (gc's doc
// "Round trips" has the counts): the prefix dir check's open is the sweep's
// open (see "No escape"); the sweep's lock-free pass stats with
// [PrefixDir.StatCached] (statx AT_STATX_DONT_SYNC: the attributes the
// preceding LOOKUP brought, no GETATTR), while what decides a removal under
// the prefix lock is [PrefixDir.StatFresh] (AT_STATX_FORCE_SYNC). Nothing is
// skipped on a prefix dir's own attributes: their size or link count does
// not tell portably whether a dir is empty (ext4 never shrinks a dir's
// size, a dir's link count counts subdirs only, FUSE and NFS pass on
// whatever the server says), so every prefix dir is listed to its end.
//
// # Prefix locks
//
// A prefix dir is its own lock: flock on its O_DIRECTORY fd
// ([PrefixDir.Lock]). A writer ([Store.Insert]) holds LOCK_SH while it checks
// whether a chunk exists and touches or creates it; GC's sweep holds LOCK_EX
// around the fresh fstatat and unlink of each candidate. So a chunk a writer
// has just found and touched cannot be removed on the strength of a stat
// taken before the touch. The locks are blocking (EINTR retried) and are
// dropped when the [PrefixDir] is closed.
//
// # Atime probe
//
// GC decides what is garbage by atime, so it must know that touching a chunk
// moves its atime. [Store.ProbeAtime] (SPEC §5) inserts the 4 MiB zero chunk,
// sleeps 1 s (timestamps are coarse-grained), statx()es it (with birth
// time), touches it and statx()es it again. A changed inode or birth time
// means the chunk was replaced under the probe: it retries once, then fails
// with [ErrProbeChunkReplaced]. An atime that did not increase fails with a
// [*ProbeError] matching [ErrAtimeNotHonoured], after a warning that logs
// both timestamp sets and whether the chunk was pre-existing or newly
// inserted. Success logs "atime probe passed" with the filesystem type and
// mount options, found in /proc/self/mountinfo (the mount with the longest
// mount point containing the store), or else from the statfs magic.
//
// # Clock skew
//
// Atimes come from the clock of whatever stamps them: the file server's for
// NFS, SMB or FUSE, this host's only for a local filesystem. GC compares them
// with min_atime and writer start times taken from this host's clock. The
// probe therefore also measures the file server's clock, as a contract:
//
//   - this host's wall clock is read just before (HostBefore) and just after
//     (HostAfter) the touch, and the touch's new atime is the server's clock
//     at the touch ([ProbeResult.ServerTime]);
//   - [ProbeResult.ClockSkew] is server minus host: atime − HostBefore when
//     the atime is before HostBefore (the server is behind; negative),
//     atime − HostAfter when it is after HostAfter (ahead; positive), else 0;
//   - an atime up to 20 ms behind HostBefore or ahead of HostAfter is 0:
//     the kernel stamps times from its coarse clock, a tick (1 to 10 ms)
//     behind time.Now. An atime that is a whole second may be up to 1 s
//     behind (filesystems that keep seconds only truncate);
//   - the measurement is logged with "atime probe passed" (host_time,
//     server_time, clock_skew) and returned; ProbeAtime never fails on it.
//     The caller decides with [ProbeResult.CheckClockSkew], which returns a
//     [*ClockSkewError] matching [ErrClockSkew] that names the chunk, both
//     clocks as RFC 3339, the skew, the bound and the tuning key
//     gc-max-clock-skew.
//
// The skew is measured once per probe: a server clock that steps during a
// run is not seen (gc/doc.go, "Clock skew", says what margin covers that).
//
// # Test seam
//
// Every syscall the store makes on its files goes through the [fsys.Syscalls]
// interface, but close(2) and the one fstatat with which nofollow.Classify
// tells why an open failed (a symlink or not a directory); fsys.Real makes them with x/sys/unix *at calls on held
// directory fds, retries EINTR and returns *fs.PathError. The allocation-free
// paths above go through it too: they pass names that alias a reused buffer,
// which an implementation must not keep past the call. Tests set
// [Options.Syscalls] to a fault set from chunkgc/internal/testkit/faultfs,
// which fails the Nth call of one syscall on a matching name with an errno
// (or makes a real change at that call, such as a rename that replaces the
// probe chunk) and fails the test if a planned fault never fired. The one
// wrapper of its own, skewedUtimes, changes a touch's times rather than its
// outcome. Faults that can be made real are made real instead: loop-mounted
// ext4, xfs and btrfs, tmpfs, and FUSE filesystems that drop atime updates or
// stamp a skewed clock (chunkgc/internal/testkit/testfs, atimefuse,
// skewfuse). BenchmarkTouch shows that the interface call costs nanoseconds
// against the microseconds of the syscall.
package chunkstore
