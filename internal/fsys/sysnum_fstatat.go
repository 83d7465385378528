//go:build linux && (arm64 || riscv64)

package fsys

import "golang.org/x/sys/unix"

// sysFstatat is the fstatat syscall that fills a unix.Stat_t on this
// architecture, as x/sys's Fstatat calls it; Real.Fstatat makes it
// directly when fastFstatat.
const (
	sysFstatat  = unix.SYS_FSTATAT
	fastFstatat = true
)
