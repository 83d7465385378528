package locking

import "errors"

// ErrLocked is returned, wrapped in a [*LockedError], when a lock is held by
// someone else: at once for a try-once acquisition (timeout 0, [Dir.GCLock],
// [OFDLock]) and when the timeout of a waiting acquisition runs out while the
// lock is still held.
var ErrLocked = errors.New("locked")

// ErrReplaced is returned when flock succeeded but the double-stat check found
// that the lock file had been removed or replaced in the meantime, so the lock
// taken is on a file nobody else will ever look at. It is returned at once for
// a try-once acquisition and when the timeout runs out right after such a
// finding; a waiting acquisition otherwise retries on the new file. It is also
// returned by [Lock.RemoveAndUnlock] when the path no longer names the locked
// file (it then removes nothing).
var ErrReplaced = errors.New("lock file removed or replaced while locking")

// ErrLinked is returned (wrapped in an *fs.PathError naming the file) when
// a lock file or the store lock has more than one hard link: someone linked
// it to, or from, a file outside the lock directory, and chunkgc does not
// lock such a file.
var ErrLinked = errors.New("lock file has other hard links")

// LockedError reports that the lock on Path is held by someone else. It
// matches [ErrLocked] with errors.Is; Err is the cause (the errno the kernel
// returned, possibly wrapped with the time waited).
type LockedError struct {
	Path string
	Err  error
}

func (e *LockedError) Error() string {
	if e.Err == nil {
		return "lock " + e.Path + ": " + ErrLocked.Error()
	}
	return "lock " + e.Path + ": " + ErrLocked.Error() + ": " + e.Err.Error()
}

// Is reports whether target is [ErrLocked].
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Unwrap returns the cause.
func (e *LockedError) Unwrap() error { return e.Err }
