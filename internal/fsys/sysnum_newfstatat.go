//go:build linux && (amd64 || ppc64 || ppc64le || s390x)

package fsys

import "golang.org/x/sys/unix"

// sysFstatat is the fstatat syscall that fills a unix.Stat_t on this
// architecture, as x/sys's Fstatat calls it; Real.Fstatat makes it
// directly when fastFstatat.
const (
	sysFstatat  = unix.SYS_NEWFSTATAT
	fastFstatat = true
)
