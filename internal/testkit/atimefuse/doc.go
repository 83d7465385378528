// Package atimefuse mounts a FUSE filesystem that silently drops atime
// updates, for tests that must see the atime probe fail on a real kernel
// mount.
//
// # Filesystem
//
// It is go-fuse's loopback filesystem over a backing directory with one
// change: Setattr clears FATTR_ATIME and FATTR_ATIME_NOW from the request
// before passing it on, so utimensat and futimens leave the atime alone and
// still report success, as some network and FUSE filesystems do. Every other
// operation, including mtime and ownership changes, goes through. Children
// are wrapped with fs.NodeWrapChilder (LoopbackRoot.NewNode is deprecated).
// Entry, attribute and negative timeouts are 0, so a stat always asks the
// server and sees the backing file's real times.
//
// # Test only
//
// Only tests and internal test helpers may import it; the import-order test
// in chunkgc/internal/testkit/projecttest rejects it anywhere else, and the chunkgc
// binary does not link go-fuse.
package atimefuse
