// Package skewfuse mounts a FUSE filesystem whose clock is offset from this
// host's by a fixed duration, for tests that must see what GC and the atime
// probe do on a file server with a wrong clock.
//
// # Filesystem
//
// It is go-fuse's loopback filesystem over a backing directory, stamping
// times the way an NFS or SMB server does: with its own clock, here
// time.Now().Add(offset).
//
//   - Setattr with FATTR_ATIME_NOW or FATTR_MTIME_NOW (utimensat with
//     UTIME_NOW, touch(1)) sets that time to the skewed clock instead.
//     Explicit times (utimensat with a timespec, os.Chtimes) go through
//     unchanged, so a test can still age a file to an exact time.
//   - Create, Mkdir, Mknod and Symlink set the new entry's atime and mtime
//     to the skewed clock. Link is left alone: a new name changes only the
//     inode's ctime, which no caller can set.
//   - Open adds O_NOATIME (when allowed), so reading through the mount does
//     not let the backing filesystem stamp an atime with the host's clock.
//
// The ctime of every file, and the mtime a write sets, come from the backing
// filesystem's (this host's) clock; nothing in chunkgc reads them. Mount the
// backing directory's filesystem with noatime (a tmpfs or loop ext4 from
// chunkgc/internal/testkit/testfs) so that nothing else stamps an atime either;
// [Mount] logs when it is not. Children are wrapped with fs.NodeWrapChilder.
// Entry, attribute and negative timeouts are 0, so a stat always asks the
// server and sees the backing file's real times.
//
// # Test only
//
// Only tests and internal test helpers may import it; the chunkgc binary
// does not link go-fuse (chunkgc/internal/testkit/projecttest checks that).
package skewfuse
