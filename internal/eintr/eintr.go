// Package eintr retries system calls that fail with EINTR. x/sys/unix does
// not retry, and FUSE and NFS can return EINTR for calls a local filesystem
// never interrupts.
//
// # Use
//
//	err := eintr.Retry(func() error { return unix.Flock(fd, how) })
package eintr

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Retry calls op until it returns an error that is not EINTR (or nil).
func Retry(op func() error) error {
	for {
		if err := op(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// Retry2 is Retry for an op with a result.
func Retry2[T any](op func() (T, error)) (T, error) {
	for {
		v, err := op()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}
