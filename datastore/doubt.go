package datastore

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"

	"chunkgc/internal/nofollow"
)

// ErrUnexpectedEntry is matched by the error for an entry where the tree
// expects a namespace (ns, ns/<name>), a group type directory, a group, a
// snapshot or an index file, and that is of a type the scheme has no room
// for there: a symlink, FIFO, socket or device (and, for a directory the
// tree opens by name, any non-directory). Such an entry is never followed
// nor skipped: it is doubt, and doubt stops GC (see the package doc, "No
// escape"). The error is an *fs.PathError naming the entry; for a symlink it
// also matches nofollow.ErrSymlink.
var ErrUnexpectedEntry = errors.New("unexpected entry in the datastore tree")

// unexpectedEntry is the Err of the *fs.PathError for an unexpected entry.
type unexpectedEntry struct {
	typ  string // what the entry is ("symbolic link", "FIFO", …)
	want string // what the tree expects there ("backup group", …)
	link bool   // the entry is a symlink
}

func (e *unexpectedEntry) Error() string {
	s := fmt.Sprintf("%s where the tree expects %s (%v)", e.typ, e.want, ErrUnexpectedEntry)
	if e.link {
		s += ", not followed"
	}
	return s
}

// Is makes the error match ErrUnexpectedEntry, and nofollow.ErrSymlink for
// a symlink.
func (e *unexpectedEntry) Is(target error) bool {
	return target == ErrUnexpectedEntry || (e.link && target == nofollow.ErrSymlink)
}

// unexpected returns the error for the entry at path of getdents type typ
// where the tree expects want.
func unexpected(op, path string, typ uint8, want string) error {
	return &fs.PathError{Op: op, Path: path, Err: &unexpectedEntry{typ: dtName(typ), want: want, link: typ == unix.DT_LNK}}
}

// Unexpected returns the error for the entry at path, of stat mode mode,
// where the tree expects want (such as "the group's owner file"): an
// *fs.PathError with op naming path whose Err matches [ErrUnexpectedEntry],
// and nofollow.ErrSymlink for a symlink. It is for code that works below
// the tree (package backup) and finds an entry the scheme has no room for.
func Unexpected(op, path string, mode uint32, want string) error {
	return unexpected(op, path, dtype(mode), want)
}

// Doubt marks an error of nofollow that says a component is a symlink or
// not a directory (or not a regular file) as [ErrUnexpectedEntry] as well;
// nofollow's *fs.PathError, which names the component, stays in the chain.
// Other errors are returned as they are.
func Doubt(err error) error {
	if errors.Is(err, nofollow.ErrSymlink) || errors.Is(err, nofollow.ErrNotDir) || errors.Is(err, nofollow.ErrNotRegular) {
		return fmt.Errorf("%w: %w", ErrUnexpectedEntry, err)
	}
	return err
}

// What the tree expects at a place, for messages.
const (
	wantNSDir    = "the namespace directory ns"
	wantNS       = "a namespace directory"
	wantType     = "a group type directory"
	wantGroup    = "a backup group directory"
	wantSnapshot = "a snapshot directory"
	wantIndex    = "an index file"
)

// schemeRole returns what the namespace/group/snapshot scheme expects at
// rel, a path relative to base with "/" separators: wantNSDir, wantNS,
// wantType, wantGroup or wantSnapshot, all directories; "" when rel is not a
// directory of the scheme (deeper than a snapshot, a name the scheme does
// not know, or below [MaxNamespaceDepth] namespaces).
func schemeRole(rel string) string {
	parts := strings.Split(rel, "/")
	depth := 0
	for i := 0; i < len(parts); {
		last := len(parts) - 1 - i
		switch {
		case parts[i] == nsDir && depth < MaxNamespaceDepth:
			if last == 0 {
				return wantNSDir
			}
			if !ValidName(parts[i+1]) {
				return ""
			}
			if last == 1 {
				return wantNS
			}
			i += 2
			depth++
		case validType(parts[i]):
			switch {
			case last == 0:
				return wantType
			case !ValidName(parts[i+1]):
				return ""
			case last == 1:
				return wantGroup
			}
			if _, ok := parseTime(parts[i+2]); ok && last == 2 {
				return wantSnapshot
			}
			return ""
		default:
			return ""
		}
	}
	return ""
}

// dtName names a getdents type, for messages.
func dtName(typ uint8) string {
	for _, ft := range fileTypes {
		if typ == ft.dt {
			return ft.name
		}
	}
	return "file of unknown type"
}
