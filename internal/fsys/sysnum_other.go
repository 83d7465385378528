//go:build linux && !(amd64 || ppc64 || ppc64le || s390x || arm64 || riscv64)

package fsys

// On this architecture x/sys's Fstatat converts the kernel's struct
// (fstatat64, statx) into unix.Stat_t, so Real.Fstatat always goes
// through x/sys.
const (
	sysFstatat  = 0
	fastFstatat = false
)
