package eintr

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRetry(t *testing.T) {
	calls := 0
	err := Retry(func() error {
		calls++
		if calls < 3 {
			return unix.EINTR
		}
		return unix.EIO
	})
	if !errors.Is(err, unix.EIO) || calls != 3 {
		t.Fatalf("got %v after %d calls, want EIO after 3", err, calls)
	}
	calls = 0
	v, err := Retry2(func() (int, error) {
		calls++
		if calls == 1 {
			return 0, unix.EINTR
		}
		return 7, nil
	})
	if v != 7 || err != nil || calls != 2 {
		t.Fatalf("got %d, %v after %d calls", v, err, calls)
	}
}
