package datastore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"chunkgc/index"
	"chunkgc/internal/eintr"
	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

// MaxNamespaceDepth is the deepest namespace PBS allows: a/b/c/d/e/f/g.
const MaxNamespaceDepth = 7

// TimeLayout is the layout of a snapshot time: RFC 3339, UTC, to the second,
// as PBS names snapshot directories ("2025-04-04T15:02:49Z").
const TimeLayout = "2006-01-02T15:04:05Z"

// nsDir is the directory that holds the child namespaces of a namespace.
const nsDir = "ns"

// groupTypes returns the backup group types, sorted.
func groupTypes() [3]string { return [...]string{"ct", "host", "vm"} }

// ValidName reports whether s is a PBS "safe id", the syntax of namespace
// components, group ids and archive names: [A-Za-z0-9_][A-Za-z0-9._\-]*.
func ValidName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_':
		case i > 0 && (c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// validType reports whether s is a backup group type: vm, ct or host.
func validType(s string) bool {
	switch s {
	case "vm", "ct", "host":
		return true
	}
	return false
}

// parseTime parses a snapshot directory name. Only the canonical form is
// accepted: the time must format back to exactly s, so fractions, offsets
// and single-digit fields are refused.
func parseTime(s string) (time.Time, bool) {
	if len(s) != len(TimeLayout) {
		return time.Time{}, false
	}
	t, err := time.Parse(TimeLayout, s)
	if err != nil || t.Format(TimeLayout) != s {
		return time.Time{}, false
	}
	return t, true
}

// Namespace is a backup namespace: its components from the outermost. The
// root namespace is nil (or empty).
type Namespace []string

// ParseNamespace parses "a/b" (the root namespace is ""). Each component is
// [A-Za-z0-9_][A-Za-z0-9._\-]* and there are at most [MaxNamespaceDepth].
func ParseNamespace(s string) (Namespace, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, "/")
	if len(parts) > MaxNamespaceDepth {
		return nil, fmt.Errorf("namespace %q: %d levels, at most %d allowed", s, len(parts), MaxNamespaceDepth)
	}
	for _, p := range parts {
		if !ValidName(p) {
			return nil, fmt.Errorf("namespace %q: invalid component %q (want [A-Za-z0-9_][A-Za-z0-9._-]*)", s, p)
		}
	}
	return Namespace(parts), nil
}

// IsRoot reports whether n is the root namespace.
func (n Namespace) IsRoot() bool { return len(n) == 0 }

// String returns "a/b", or "" for the root namespace.
func (n Namespace) String() string { return strings.Join(n, "/") }

// RelPath returns the namespace's directory relative to the store base,
// "ns/a/ns/b", or "" for the root namespace.
func (n Namespace) RelPath() string {
	if len(n) == 0 {
		return ""
	}
	return nsDir + "/" + strings.Join(n, "/"+nsDir+"/")
}

// Group is a backup group: a type (vm, ct or host) and an id in a namespace.
type Group struct {
	NS   Namespace
	Type string
	ID   string
}

// ParseGroup parses "vm/100". The namespace is not part of the syntax; the
// result is in the root namespace.
func ParseGroup(s string) (Group, error) {
	typ, id, ok := strings.Cut(s, "/")
	if !ok {
		return Group{}, fmt.Errorf("backup group %q: want TYPE/ID", s)
	}
	g := Group{Type: typ, ID: id}
	if err := g.Check(); err != nil {
		return Group{}, fmt.Errorf("backup group %q: %w", s, err)
	}
	return g, nil
}

// Check validates the group's type, id and namespace.
func (g Group) Check() error {
	if !validType(g.Type) {
		return fmt.Errorf("invalid type %q (want vm, ct or host)", g.Type)
	}
	if !ValidName(g.ID) {
		return fmt.Errorf("invalid id %q (want [A-Za-z0-9_][A-Za-z0-9._-]*)", g.ID)
	}
	if len(g.NS) > MaxNamespaceDepth {
		return fmt.Errorf("namespace %q: %d levels, at most %d allowed", g.NS.String(), len(g.NS), MaxNamespaceDepth)
	}
	for _, c := range g.NS {
		if !ValidName(c) {
			return fmt.Errorf("namespace %q: invalid component %q", g.NS.String(), c)
		}
	}
	return nil
}

// RelPath returns the group's directory relative to the store base:
// "vm/100", or "ns/a/vm/100" in namespace a.
func (g Group) RelPath() string {
	if len(g.NS) == 0 {
		return g.Type + "/" + g.ID
	}
	return g.NS.RelPath() + "/" + g.Type + "/" + g.ID
}

// String returns the group as PBS prints it with its namespace: the same as
// RelPath. Only for the root namespace does ParseGroup read it back.
func (g Group) String() string { return g.RelPath() }

// Snapshot is one backup of a group, named by its time (whole seconds, UTC).
type Snapshot struct {
	Group
	Time time.Time
}

// ParseSnapshot parses "vm/100/2025-04-04T15:02:49Z" into a snapshot in the
// root namespace.
func ParseSnapshot(s string) (Snapshot, error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return Snapshot{}, fmt.Errorf("backup snapshot %q: want TYPE/ID/TIME", s)
	}
	g, err := ParseGroup(s[:i])
	if err != nil {
		return Snapshot{}, fmt.Errorf("backup snapshot %q: %w", s, err)
	}
	t, ok := parseTime(s[i+1:])
	if !ok {
		return Snapshot{}, fmt.Errorf("backup snapshot %q: time %q is not RFC 3339 UTC to the second (like 2025-04-04T15:02:49Z)", s, s[i+1:])
	}
	return Snapshot{Group: g, Time: t}, nil
}

// Check validates the snapshot's group and time.
func (s Snapshot) Check() error {
	if err := s.Group.Check(); err != nil {
		return err
	}
	if s.Time.IsZero() {
		return errors.New("no snapshot time")
	}
	return nil
}

// TimeString returns the snapshot's time as its directory name: RFC 3339 in
// UTC to the second, "2025-04-04T15:02:49Z".
func (s Snapshot) TimeString() string { return s.Time.UTC().Format(TimeLayout) }

// RelPath returns the snapshot's directory relative to the store base:
// "vm/100/2025-04-04T15:02:49Z", with the namespace's "ns/a/" in front.
func (s Snapshot) RelPath() string { return s.Group.RelPath() + "/" + s.TimeString() }

// String returns the snapshot as PBS prints it with its namespace: the same
// as RelPath.
func (s Snapshot) String() string { return s.RelPath() }

// Tree is the tree of a datastore above the chunks, held as a directory fd
// of the store's base: every listing and every open below the base is
// relative to that fd and follows no symlink (nofollow, getdents, openat
// with O_NOFOLLOW), so a less privileged owner of the tree cannot redirect
// it outside the store, neither by planting a symlink nor by swapping one
// in while it runs (see the package doc, "No escape"). The base path is
// used only in messages.
//
// A Tree is safe for concurrent use: its fd is only ever a dirfd of *at
// calls, never read from. Close it when done.
type Tree struct {
	fd   int
	base string
	sys  fsys.Syscalls
}

// TreeOptions configure [NewTree].
type TreeOptions struct {
	// Syscalls is the syscall seam every listing, open and stat of the
	// tree goes through (see the package doc, "Syscalls"); nil means
	// fsys.Real{}. Callers pass the seam they give chunkstore.Options, so
	// that a test can fail a precise call of the tree as of the chunks.
	Syscalls fsys.Syscalls
}

// NewTree returns the tree of the store whose base directory is open as
// baseFD (at path base, for messages), such as chunkstore.Store.BaseFD.
// The tree works on a duplicate of baseFD, which its Close closes: the
// caller keeps its own fd and closes it itself, before or after the tree.
func NewTree(baseFD int, base string, opts TreeOptions) (*Tree, error) {
	sys := fsys.OrReal(opts.Syscalls)
	fd, err := eintr.Retry2(func() (int, error) { return unix.FcntlInt(uintptr(baseFD), unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "dup", Path: base, Err: err}
	}
	var st unix.Stat_t
	if err := sys.Fstatat(fd, "", &st, unix.AT_EMPTY_PATH); err != nil {
		unix.Close(fd)
		return nil, fsys.WithPath(err, base)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: base, Err: unix.ENOTDIR}
	}
	return &Tree{fd: fd, base: base, sys: sys}, nil
}

// OpenTree opens the tree of the store at base, with the real syscalls.
// base itself is the configured, trusted path: it is opened as any path is
// (a symlinked base is followed); nothing below it is.
func OpenTree(base string) (*Tree, error) {
	sys := fsys.Real{}
	fd, err := sys.Openat(unix.AT_FDCWD, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fsys.WithPath(err, base)
	}
	return &Tree{fd: fd, base: base, sys: sys}, nil
}

// Base returns the path of the store's base directory, as given.
func (t *Tree) Base() string { return t.base }

// FD returns the tree's O_DIRECTORY fd of the base, valid until Close, for
// callers that create below the base relative to it (package backup's
// nofollow.MkdirAll). It must not be closed, read from or seeked.
func (t *Tree) FD() int { return t.fd }

// Syscalls returns the seam the tree makes its syscalls through, for
// callers that work on the directories the tree opens for them.
func (t *Tree) Syscalls() fsys.Syscalls { return t.sys }

// Close closes the tree's fd. A second Close is an error.
func (t *Tree) Close() error {
	if t.fd < 0 {
		return fmt.Errorf("close tree of %s: %w", t.base, os.ErrClosed)
	}
	fd := t.fd
	t.fd = -1
	if err := unix.Close(fd); err != nil {
		return &fs.PathError{Op: "close", Path: t.base, Err: err}
	}
	return nil
}

// Path returns the path of rel below the base, for messages.
func (t *Tree) Path(rel string) string { return filepath.Join(t.base, rel) }

// relJoin joins two relative paths with "/", either of which may be "".
func relJoin(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "/" + b
}

// OpenDir opens directory rel below the base ("" for the base itself, as a
// new open file description) without following a symlink, and returns its
// fd, which the caller closes. A symlink or non-directory anywhere on the
// way is an error matching [ErrUnexpectedEntry] naming it; a missing one
// matches fs.ErrNotExist. The components are resolved by nofollow (openat2),
// not through the tree's seam.
func (t *Tree) OpenDir(rel string) (int, error) {
	if rel == "" {
		fd, err := t.sys.Openat(t.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fsys.WithPath(err, t.base)
		}
		return fd, nil
	}
	fd, err := nofollow.OpenDir(t.fd, t.base, rel)
	if err != nil {
		return -1, Doubt(err)
	}
	return fd, nil
}

// OpenSubdir opens the directory rel below the base, a namespace, group or
// snapshot directory whose parent directory is open as parentFD, by its
// last component relative to parentFD and without following a symlink,
// and returns its fd, which the caller closes. A missing one matches
// fs.ErrNotExist; one that is a symlink or no directory is an error
// matching [ErrUnexpectedEntry] that names it and says what the scheme
// expects at rel.
func (t *Tree) OpenSubdir(parentFD int, rel string) (int, error) {
	name := rel[strings.LastIndexByte(rel, '/')+1:]
	fd, err := t.sys.Openat(parentFD, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		return fd, nil
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		if typ, serr := t.notDir(parentFD, name, err); serr == nil {
			want := schemeRole(rel)
			if want == "" {
				want = "a directory"
			}
			return -1, unexpected("open", t.Path(rel), typ, want)
		}
	}
	return -1, fsys.WithPath(err, t.Path(rel))
}

// notDir returns the type of entry name of the directory open as dirfd,
// which an open with O_DIRECTORY|O_NOFOLLOW refused with errno (ELOOP or
// ENOTDIR). An entry that is a directory again (swapped back) was no
// directory at the open: it is a symlink if the open said ELOOP, else of a
// type unknown (dtOther). A failing fstatat is returned as is, naming name.
func (t *Tree) notDir(dirfd int, name string, errno error) (uint8, error) {
	var st unix.Stat_t
	if err := t.sys.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, err
	}
	typ := dtype(st.Mode)
	if typ == unix.DT_DIR {
		typ = dtOther
		if errors.Is(errno, unix.ELOOP) {
			typ = unix.DT_LNK
		}
	}
	return typ, nil
}

// readDir lists directory rel below the base: every entry but "." and
// "..", sorted by name, with its type (DT_UNKNOWN resolved with fstatat on
// the directory's fd; an entry that vanished meanwhile is left out). A
// directory that is missing, or that was removed after it was opened,
// gives an error matching fs.ErrNotExist.
func (t *Tree) readDir(rel string) ([]dirent, error) {
	fd, err := t.OpenDir(rel)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	ents, err := readDirents(t.sys, fd, t.Path(rel), make([]byte, direntBufSize))
	if err != nil {
		return nil, err
	}
	kept := ents[:0]
	for _, e := range ents {
		if e.typ == unix.DT_UNKNOWN {
			var st unix.Stat_t
			err := t.sys.Fstatat(fd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return nil, fsys.WithPath(err, t.Path(relJoin(rel, e.name)))
			}
			e.typ = dtype(st.Mode)
		}
		kept = append(kept, e)
	}
	slices.SortFunc(kept, func(a, b dirent) int { return strings.Compare(a.name, b.name) })
	return kept, nil
}

// listDirs lists the subdirectories of rel whose names pass keep, sorted by
// name; a missing rel gives an empty list. An entry whose name passes keep
// and that is a symlink, FIFO, socket or device is an error matching
// [ErrUnexpectedEntry] (want says what the tree expects there); a regular
// file is not part of the scheme and is ignored.
func (t *Tree) listDirs(rel string, keep func(name string) bool, want string) ([]string, error) {
	ents, err := t.readDir(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", t.Path(rel), err)
	}
	return t.pick(rel, ents, keep, unix.DT_DIR, want)
}

// pick returns the names of the entries ents of directory rel that keep
// accepts and whose type is typ (DT_DIR or DT_REG). An accepted entry of
// the other of the two types is not part of the scheme there and is
// ignored; one of any other type (a symlink, FIFO, socket or device) is an
// error matching [ErrUnexpectedEntry] naming it (want says what the tree
// expects there).
func (t *Tree) pick(rel string, ents []dirent, keep func(name string) bool, typ uint8, want string) ([]string, error) {
	var names []string
	for _, e := range ents {
		if !keep(e.name) {
			continue
		}
		switch {
		case e.typ == typ:
			names = append(names, e.name)
		case e.typ == unix.DT_DIR || e.typ == unix.DT_REG:
		default:
			return nil, unexpected("list", t.Path(relJoin(rel, e.name)), e.typ, want)
		}
	}
	return names, nil
}

// ListNamespaces returns every namespace of the store: the root first, then
// each nested namespace (ns/<a>/ns/<b>/…, at most [MaxNamespaceDepth]
// levels) in depth-first order with sorted children, so a parent precedes
// its children. Directories whose names are not valid namespace components
// are ignored. A symlink, FIFO, socket or device named ns, or named as a
// namespace inside an ns directory, is an error matching
// [ErrUnexpectedEntry] that names it.
func (t *Tree) ListNamespaces() ([]Namespace, error) {
	nss := []Namespace{nil}
	var walk func(parent Namespace) error
	walk = func(parent Namespace) error {
		if len(parent) == MaxNamespaceDepth {
			return nil
		}
		names, err := t.listDirs(relJoin(parent.RelPath(), nsDir), ValidName, wantNS)
		if err != nil {
			return err
		}
		for _, name := range names {
			ns := append(slices.Clip(parent), name)
			nss = append(nss, ns)
			if err := walk(ns); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(nil); err != nil {
		return nil, err
	}
	return nss, nil
}

// ListGroups returns the backup groups of namespace ns: the directories
// <type>/<id> under the namespace's directory with a valid type and id,
// sorted by type then id. A namespace whose directory does not exist has no
// groups. A type directory, or an entry with a valid id in one, that is a
// symlink, FIFO, socket or device is an error matching
// [ErrUnexpectedEntry] that names it.
func (t *Tree) ListGroups(ns Namespace) ([]Group, error) {
	var groups []Group
	for _, typ := range groupTypes() {
		ids, err := t.listDirs(relJoin(ns.RelPath(), typ), ValidName, wantGroup)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			groups = append(groups, Group{NS: slices.Clip(ns), Type: typ, ID: id})
		}
	}
	return groups, nil
}

// ListSnapshots returns the snapshots of group g, oldest first: the
// directories in the group's directory whose names are snapshot times
// ([TimeLayout]). Other directories and files are ignored. A group whose
// directory does not exist has no snapshots. An entry named as a snapshot
// that is a symlink, FIFO, socket or device, or a symlink on the way to
// the group, is an error matching [ErrUnexpectedEntry] that names it.
func (t *Tree) ListSnapshots(g Group) ([]Snapshot, error) {
	names, err := t.listDirs(g.RelPath(), func(name string) bool {
		_, ok := parseTime(name)
		return ok
	}, wantSnapshot)
	if err != nil {
		return nil, err
	}
	snaps := make([]Snapshot, 0, len(names))
	for _, name := range names {
		t, _ := parseTime(name)
		snaps = append(snaps, Snapshot{Group: g, Time: t})
	}
	// The layout sorts by name as it sorts by time, but say what is meant.
	slices.SortFunc(snaps, func(a, b Snapshot) int { return a.Time.Compare(b.Time) })
	return snaps, nil
}

// ListAllSnapshots returns every snapshot of every group of every namespace
// of the store, ordered by namespace (as [Tree.ListNamespaces]), group (as
// [Tree.ListGroups]) and time.
func (t *Tree) ListAllSnapshots() ([]Snapshot, error) {
	nss, err := t.ListNamespaces()
	if err != nil {
		return nil, err
	}
	var all []Snapshot
	for _, ns := range nss {
		groups, err := t.ListGroups(ns)
		if err != nil {
			return nil, err
		}
		for _, g := range groups {
			snaps, err := t.ListSnapshots(g)
			if err != nil {
				return nil, err
			}
			all = append(all, snaps...)
		}
	}
	return all, nil
}

// IndexFiles returns the names (not paths) of the index files of snapshot
// s: the regular files named *.fidx or *.didx in its directory, sorted.
// Hidden files are not index files, nor are directories. If the snapshot
// directory does not exist (it was removed), the error matches
// fs.ErrNotExist. An entry named as an index that is a symlink, FIFO,
// socket or device, or a snapshot directory (or a component on the way to
// it) that is a symlink, is an error matching [ErrUnexpectedEntry] that
// names it.
func (t *Tree) IndexFiles(s Snapshot) ([]string, error) {
	rel := s.RelPath()
	ents, err := t.readDir(rel)
	if err != nil {
		return nil, fmt.Errorf("list index files of snapshot %s: %w", t.Path(rel), err)
	}
	return t.pick(rel, ents, isIndexName, unix.DT_REG, wantIndex)
}

// OpenIndex opens the index file rel (relative to the base, "/"
// separators, as [Tree.WalkIndexFiles] gives it) without following any
// symlink and without blocking on a FIFO, and validates its header
// ([index.OpenFile]). A missing file (or directory on the way) matches
// fs.ErrNotExist: it was pruned. A symlink in any component, or a final
// component that is not a regular file, is an error matching
// [ErrUnexpectedEntry] that names it; a path longer than the kernel takes
// fails with ENAMETOOLONG naming it.
func (t *Tree) OpenIndex(rel string) (*index.Reader, error) {
	f, err := nofollow.OpenFile(t.fd, t.base, rel)
	if err != nil {
		return nil, fmt.Errorf("open index: %w", Doubt(err))
	}
	return index.OpenFile(f)
}

// withTree runs fn on the tree of base, opened for the call.
func withTree[T any](base string, fn func(t *Tree) (T, error)) (T, error) {
	t, err := OpenTree(base)
	if err != nil {
		var zero T
		return zero, err
	}
	defer t.Close()
	return fn(t)
}

// ListNamespaces is [Tree.ListNamespaces] on the store at base.
func ListNamespaces(base string) ([]Namespace, error) {
	return withTree(base, (*Tree).ListNamespaces)
}

// ListGroups is [Tree.ListGroups] on the store at base.
func ListGroups(base string, ns Namespace) ([]Group, error) {
	return withTree(base, func(t *Tree) ([]Group, error) { return t.ListGroups(ns) })
}

// ListSnapshots is [Tree.ListSnapshots] on the store at base.
func ListSnapshots(base string, g Group) ([]Snapshot, error) {
	return withTree(base, func(t *Tree) ([]Snapshot, error) { return t.ListSnapshots(g) })
}

// ListAllSnapshots is [Tree.ListAllSnapshots] on the store at base.
func ListAllSnapshots(base string) ([]Snapshot, error) {
	return withTree(base, (*Tree).ListAllSnapshots)
}

// IndexFiles is [Tree.IndexFiles] on the store at base.
func IndexFiles(base string, s Snapshot) ([]string, error) {
	return withTree(base, func(t *Tree) ([]string, error) { return t.IndexFiles(s) })
}

// isIndexName reports whether a directory entry's name is that of an index
// file: not hidden, ending in .fidx or .didx.
func isIndexName(name string) bool {
	_, ok := index.KindOf(name)
	return ok && !strings.HasPrefix(name, ".")
}
