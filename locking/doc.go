// Package locking implements chunkgc's lock protocol (SPEC §7): the store
// lock, the GC lock, the writer registry, and the group and snapshot locks
// shared with PBS ≥ 3.4.
//
// Every lock is a kernel lock (flock, or an OFD lock) on a file that is open
// as long as the lock is held. A holder that dies releases its locks with its
// file descriptors, so there are no stale locks and nothing ever "breaks" a
// lock: breaking a lock means deciding that someone else no longer holds it,
// and that can be wrong (seed 003). A [Lock] is released with [Lock.Unlock],
// or with [Lock.RemoveAndUnlock], which also removes its file.
//
// Waiting for a lock ([Flock] and the [Dir] methods with a timeout > 0) polls
// flock(LOCK_NB) in the calling goroutine with an exponential backoff (1 ms
// to 50 ms) on a timer raced against ctx.Done(): a blocking flock cannot be
// interrupted from Go, and a goroutine parked in one would outlive a
// cancelled call. Polling is not fair: a steady stream of shared holders can
// keep an exclusive waiter out until its timeout. Timeout 0 tries once.
// A lock held elsewhere gives a [*LockedError] (errors.Is [ErrLocked]).
//
// # Store lock
//
// [Dir.LockStore] takes an OFD write lock (fcntl F_OFD_SETLK, F_WRLCK, whole
// file) on <base>/.lock ([StoreLockName]), non-blocking, for the whole GC
// run. PBS daemons hold
// classic POSIX read locks (F_SETLK, F_RDLCK) on that file while a backup
// runs; on Linux OFD and classic locks conflict, so GC does not start while a
// PBS writer is active, and a PBS writer cannot start while GC runs. It is an
// OFD lock and not a classic one because a classic lock is dropped when the
// process closes any fd of the file, which any library code could do.
//
// This package is the one owner of .lock: [CreateStoreLock] makes it when
// chunkstore creates a store (0644 whatever the umask, owned by the store's
// [fsys.Owner] when that is Active), and LockStore creates it if it is
// missing (0644, owned like its parent, the store base, when root: PBS
// daemons running as the store's owner must still open it). LockStore opens
// it relative to the store's base fd; [OFDLock] takes a path and opens its
// directory first.
//
// # GC lock
//
// [Dir.GCLock] takes flock LOCK_EX|LOCK_NB on <lockdir>/gc: one GC per store
// on this host. The lock directory (<root>/<store>, with [DefaultRoot]
// /run/chunkgc/locks/<store>)
// is on tmpfs, so lock files cost no disk I/O, do not depend on the store's
// filesystem supporting flock, and vanish at reboot together with every
// process that could hold them.
//
// # Lock root and lock directories
//
// The lock root ([DefaultRoot], /run/chunkgc/locks, or --lock-dir) holds one
// lock directory per store, <root>/<store>. [OpenRoot] opens (and creates)
// the root; [Root.Store] opens (and creates) a store's directory in it and
// returns the [Dir]; [OpenDir] is the two in one, taking the parent of its
// path as the root.
//
// # Ownership
//
// Who owns what the package creates is an [fsys.Owner], the one owner type
// of chunkgc, given to [Root.Store] and [OpenDir] (the backup user; [fsys.Keep]
// leaves ownership as the process creates it). It applies when it is
// [fsys.Owner.Active]: running as root and a UID >= 0. Ownership, when
// running as root:
//
//   - what root creates for the lock root itself (/run/chunkgc,
//     /run/chunkgc/locks) is root:root 0755, whatever the umask;
//   - the store's directory and everything a writer running as the backup
//     user must create or lock in it (writers/, the namespace directories,
//     hashed/, the lock files, registry entries) are created owned by the
//     Owner given to Store, the backup user, chowned through the new fd;
//   - a missing <base>/.lock that [Dir.LockStore] creates is owned like the
//     store base (who owns the store, not the lock tree);
//   - nothing that already exists in the lock tree is ever chowned or
//     chmodded. (An existing <base>/.lock, which is in the store, is chowned
//     to the store's Owner by CreateStoreLock, as chunkstore.Create chowns
//     the rest of the store it adopts.)
//
// A process that is not root checks no ownership and chowns nothing: it
// cannot be led to do anything its user could not do anyway.
//
// # The syscall seam
//
// Every syscall the package makes on the lock root, the lock directories,
// their lock files and the store lock goes through one [fsys.Syscalls] value
// (close(2) aside, as in chunkstore): [RootOptions].Syscalls, given to
// [OpenRootWith] or [OpenDirWith] and kept by the [Root], the Dirs opened from it and
// every [Lock] and [Writer] made from them; [CreateStoreLock] takes its
// caller's (chunkstore's). [OpenRoot], [OpenDir], [Flock] and [OFDLock] use
// [fsys.Real]. So a test can fail "the Nth call of op X on name Y" anywhere
// in the protocol with one wrapper (see internal/testkit/faultfs). The
// paths above the lock root that are resolved by name (rule 2 of No escape)
// go through the seam too, as *at calls on AT_FDCWD. Errors from the seam
// name the relative name; the package rewrites them to the full path.
//
// # Writer registry
//
// A chunkgc writer session registers before it touches or inserts its first
// chunk ([Dir.RegisterWriter]) and unregisters when done ([Writer.Close]).
// Its entry is <lockdir>/writers/<random>, flocked LOCK_EX by the writer for
// as long as it lives, holding its start time in unix nanoseconds (decimal).
// The entry becomes visible only complete and locked: it is created as the
// hidden writers/.tmp-<random> (O_CREAT|O_EXCL), flocked, written, then
// renamed into place. [Dir.OldestWriter], which GC calls after recording its
// start, tries flock LOCK_EX|LOCK_NB on every entry:
//
//   - held, visible name: a live writer; its start time counts towards
//     oldest_writer;
//   - held, hidden name: a registration in progress; its writer has not begun
//     work, so it is ignored;
//   - free: its writer died (the kernel released its lock); GC removes the
//     entry while holding the lock, after a double-stat shows the name still
//     refers to the file it locked, and counts it.
//
// A GC can reap a hidden entry between the writer's O_EXCL create and its
// flock. The writer then either finds the lock held (EWOULDBLOCK) or, having
// locked the unlinked file, fails to rename it (ENOENT); in both cases it
// starts over with a new name. Close unlinks the entry while still holding
// its lock, so a GC never takes the lock of a file that is still linked and
// belongs to a live writer.
//
// # Group and snapshot locks
//
// [Dir.LockGroup] and [Dir.LockSnapshot] flock the file [LockFileName] names
// under the lock directory, exactly as PBS ≥ 3.4 does under
// /run/proxmox-backup/locks/<store>: the namespace components joined with
// ":" as a directory (none for the root namespace), then the relative path
// "vm/100" or "vm/100/2022-05-02T08:11:33Z" escaped as a systemd unit name,
// e.g. ns1:ns2/vm-100-2022\x2d05\x2d02T08\x3a11\x3a33Z. The escaping is
// PBS's escape_unit, which escapes ":" where systemd-escape keeps it
// ([EscapePath] is the systemd-escape --path one). A name of 255 bytes or
// more becomes hashed/<first 80 bytes>...<last 80 bytes>-<sha256 hex of the
// unescaped path>. Pointing chunkgc's lock directory at
// /run/proxmox-backup/locks/<store> makes chunkgc and PBS exclude each other.
// Exclusive is for writing or removing, shared for reading.
//
// # Double-stat
//
// A lock file can be removed (seed 000): A holds the lock and removes the
// file; B, which had opened the old file before, gets its flock as soon as A
// releases, while C creates a new file at the same path and locks it too.
// B and C would both believe they hold the exclusive lock. So after every
// successful flock, the lock fstats its fd and stats the path (without
// following symlinks): if the path is gone or names another device/inode, or
// the locked file has no links left, the lock is on a file nobody else will
// look at. It is dropped at once and the acquisition retries on the file now
// at the path (within the timeout), or fails with [ErrReplaced] (timeout 0,
// or no time left). The caller gets a [Lock] only when the check passed, so
// a holder can trust that the path names its file, which is what makes
// removing lock files safe (seed 001). A waiter also re-checks the path each
// time it finds the lock held, so it does not keep waiting on a removed file
// whose holder has not released it yet.
//
// # Removals
//
// Removing a snapshot takes its exclusive lock, removes the snapshot
// directory, and then releases the lock with [Lock.RemoveAndUnlock], which
// unlinks the lock file while still holding the lock (after checking the path
// still names the locked file) and only then unlocks. Removing a group that
// became empty takes the group's exclusive lock, uses rmdir (never a
// recursive delete after an emptiness check: a snapshot created in between
// would be deleted, seed 000), treats ENOTEMPTY as "a new snapshot arrived,
// keep the group", and removes the group's lock file with RemoveAndUnlock.
// Because every taker double-stats, a waiter that locked the unlinked file
// notices and moves on to the path's new file. Only exclusive flocks may
// remove their file; a shared holder never does.
//
// # No escape
//
// The lock tree below the lock root belongs to the backup user, who can
// plant anything in it (symlinks, hard links, FIFOs, sockets, directories
// where files are expected and the reverse) and swap entries while a
// root-run chunkgc works in it. The contract, which every function of this
// package keeps whatever is planted or swapped:
//
//  1. Nothing outside the store's lock directory is created, opened for
//     writing, read (atime included), locked, chowned, chmodded, truncated
//     or removed by an operation on a [Dir]. The lock root itself is only
//     opened and, when missing, created.
//  2. Every path below the lock root is resolved relative to a directory fd
//     without following a symlink: the [Root] and the [Dir] keep an
//     O_DIRECTORY fd; a store's directory, writers/, namespace directories
//     and hashed/ are opened (created if missing) component by component
//     with O_NOFOLLOW|O_DIRECTORY through the seam, as
//     internal/nofollow's component-wise resolution does (whose checks and
//     errors it reuses). A symlink, or anything but a directory, where a
//     directory is expected is an error naming that path.
//  3. Lock files (gc, group and snapshot locks, <base>/.lock, registry
//     entries) are opened relative to their parent's fd with O_NOFOLLOW and
//     O_NONBLOCK, so a FIFO cannot block the open, and checked with fstat
//     after opening: anything but a regular file, or a file with more than
//     one hard link (it could be a file outside the tree linked in on a
//     host without fs.protected_hardlinks), is refused with an error naming
//     it (matching nofollow.ErrNotRegular or [ErrLinked]). A missing lock
//     file is created O_CREAT|O_EXCL|O_NOFOLLOW and chowned through its fd,
//     so chunkgc never chowns a file it did not just create.
//  4. The double-stat compares fstat of the lock fd with fstatat(parent fd,
//     name, AT_SYMLINK_NOFOLLOW). A [Lock] keeps its parent's fd for its
//     lifetime, and [Lock.RemoveAndUnlock] unlinks relative to it, so a
//     parent swapped for a symlink meanwhile cannot redirect the unlink.
//  5. The writer registry is opened from the [Dir] fd without following a
//     symlink (a symlinked writers/ makes [Dir.OldestWriter] and
//     [Dir.RegisterWriter] fail, naming it, so GC stops before doing
//     anything), listed through its fd, and every entry is opened relative
//     to it with O_NOFOLLOW|O_NONBLOCK and checked with fstat; an entry that
//     is not a regular file with one link is skipped with a warning, never
//     read, locked or removed. Stale entries are unlinked relative to the
//     registry's fd. Nothing is ever recursed into.
//  6. Every wait polls and obeys ctx, and no open can block (3), so no
//     planted file makes a lock operation hang.
//
// Above the lock root the path is the administrator's (/run is root's) and
// is resolved normally; the root's last component is opened relative to
// its parent with O_NOFOLLOW and it is the opened fds that are checked. As
// root, [OpenRoot] refuses, with [ErrUnsafeRoot] and an error naming the
// directory and the fix (chown root:root DIR && chmod 0755 DIR), a lock root
// not owned by root or writable by group or others, and a root whose parent
// is (unless the parent is sticky, like /tmp): whoever could write there
// could rename the root away and put another tree in its place.
//
// The one exception is exactly the PBS layout, [PBSRoot]
// (/run/proxmox-backup/locks, the literal path, no suffix match): PBS ≥ 3.4
// creates it and /run/proxmox-backup owned by the backup user, and
// --lock-dir /run/proxmox-backup/locks must keep working so that chunkgc
// and PBS exclude each other. It is accepted when owned by one non-root
// user (who must be the store owner given to [Root.Store]) and not writable
// by group or others, in a parent owned by root or that user, not writable
// by group or others. Operating as root in that backup-owned tree is safe
// because of rules 1 to 6: /run itself is root's; the one lookup in a
// backup-owned directory by path is the root's last component, "locks" in
// /run/proxmox-backup, and it is opened O_NOFOLLOW|O_DIRECTORY (a symlink
// swapped in for it is refused); every step below it is dirfd-relative
// without following links. So the backup user can make a lock operation
// fail, never make it act outside the tree. What the backup
// user gains by renaming the root (the tree we hold the fd of) is only that
// the lock files chunkgc uses are not the ones PBS looks at: it can break
// mutual exclusion between its own backups and GC, which it can do anyway by
// deleting lock files, and which costs it only its own data.
package locking
