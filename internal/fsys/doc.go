// Package fsys is the syscall seam of chunkgc: every syscall a package makes
// on a store's files (chunkstore) or on lock files and lock directories
// (locking, which also needs Fstat, Fchmod, Pread and FcntlFlock, for its
// double-stat and the OFD store lock) goes through a [Syscalls] value, so
// that a test can fail any one of them (see chunkgc/internal/testkit/faultfs)
// and a production run pays one interface call for it.
//
// [Real] makes the calls with x/sys/unix *at calls on held directory fds,
// retries EINTR (x/sys does not; FUSE and NFS return it) and turns every errno
// into an *fs.PathError naming the name it was given. Callers rewrite that
// name to the full path they know.
//
// The package also holds what every layer above needs of the same calls and
// would otherwise write again: [ReadDirents], the one linux_dirent64 parser,
// and [Owner], the one type for "who owns the files the store creates".
//
// # Zero allocation
//
// Real NUL-terminates names shorter than 128 bytes (a chunk name relative to
// .chunks is 75) in a buffer on its own stack for openat, fstatat, statx and
// utimensat, the calls of GC's per-prefix and per-chunk loops, so those
// calls do not allocate unless they fail. A name may alias a buffer its
// caller reuses once the call returns: an implementation must not keep it
// past the call except as the Path of the error it returns.
package fsys
