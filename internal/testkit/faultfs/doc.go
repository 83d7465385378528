// Package faultfs is the one fault set of chunkgc's tests: an
// [fsys.Syscalls] that wraps another (fsys.Real by default) and fails the
// Nth call of one syscall on a name matching a pattern with an errno, in the
// manner of kopia's fault injection ("fail the 3rd unlinkat of a *.bad with
// EIO"). At the end of the test it checks that every planned fault fired: a
// fault test whose fault never fired asserts nothing.
//
// # A fake, on purpose
//
// faultfs is a fake. It stands in for the faults that cannot be made real on
// demand on a test machine — EIO from a failing disk, ENOSPC at one precise
// write, ESTALE from an NFS server, EACCES from a changed export, a touch
// that reports ENOENT of a file that exists — because there is no
// device-mapper target, no NFS server and no flaky network here to make
// them. Faults that can be real stay real: a filesystem that drops atime
// updates is a FUSE mount (internal/testkit/atimefuse), a full filesystem is
// a small loop mount or tmpfs (internal/testkit/testfs), a clock-skewed file
// server is internal/testkit/skewfuse. The errors faultfs returns are
// *fs.PathError{Op: <the syscall's name>, Path: <the name given>, Err:
// errno}, exactly the shape fsys.Real returns, so the code under test cannot
// tell them apart.
//
// # Use
//
//	set := faultfs.New(t, nil) // wraps fsys.Real{}
//	set.Add(faultfs.Fault{Op: faultfs.Unlinkat, Nth: 2, Name: "*.bad", Err: unix.EIO})
//	store, err := chunkstore.Open(base, chunkstore.Options{Syscalls: set, …})
//
// A [Fault] selects calls by [Op], by the name the call was given ([Fault.Name],
// a path.Match glob, or [Fault.Match]) or by the full path of the file the
// call works on ([Fault.Path], resolved through /proc/self/fd), and fires on
// the Nth selected call counted from when it was added (0: on every one),
// Times times. When it fires, its [Fault.Before] hook runs first (to make a
// real change at that precise call, such as replacing a file), then the call
// fails with [Fault.Err], or, when Err is nil, is made for real. [ErrMalformed]
// as the Err of a getdents fault makes the call succeed with a corrupt
// linux_dirent64 record instead.
//
// # Concurrency and allocation
//
// A Set is safe for concurrent use: GC's mark and sweep make the calls from
// many workers, and a fault's Nth counts them in the order they arrive. A
// call of an op no fault watches costs one atomic add before the wrapped
// call and allocates nothing, so the zero-allocation hot paths stay so in a
// Set. Names may alias buffers the caller reuses (see fsys.Syscalls): faultfs
// keeps none past the call; the error's Path is a clone, and a hook that
// keeps the name must clone it.
//
// It is test support: no production package may import it (enforced by
// internal/testkit/projecttest).
package faultfs
