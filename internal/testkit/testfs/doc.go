// Package testfs gives tests real filesystems to run on: loop-mounted ext4,
// xfs and btrfs images and tmpfs mounts, each under t.TempDir() and unmounted
// in t.Cleanup.
//
// # Capabilities
//
// Mounting needs root (and mkfs.* for loop images). Without a capability a
// helper calls t.Skip with the reason, unless the environment variable CI is
// set: under CI a missing capability is a failure, so that a CI run cannot go
// green by skipping what it was meant to test.
//
// # Cleanup
//
// A mount is unmounted when its test ends, before t.TempDir() is removed;
// when it is busy (EBUSY, e.g. a leaked fd or a process still in it) it is
// detached lazily (MNT_DETACH) instead, so that a failing test does not leave
// mounts behind. Loop devices are attached with losetup and detached after
// the unmount; a lazily detached one is freed by the kernel (autoclear) when
// its last user goes.
package testfs
