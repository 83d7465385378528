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

	"chunkgc/index"
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

// validName reports whether s is a PBS "safe id", the syntax of namespace
// components and group ids: [A-Za-z0-9_][A-Za-z0-9._\-]*.
func validName(s string) bool {
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
		if !validName(p) {
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
	if err := g.check(); err != nil {
		return Group{}, fmt.Errorf("backup group %q: %w", s, err)
	}
	return g, nil
}

// check validates the group's type, id and namespace.
func (g Group) check() error {
	if !validType(g.Type) {
		return fmt.Errorf("invalid type %q (want vm, ct or host)", g.Type)
	}
	if !validName(g.ID) {
		return fmt.Errorf("invalid id %q (want [A-Za-z0-9_][A-Za-z0-9._-]*)", g.ID)
	}
	if len(g.NS) > MaxNamespaceDepth {
		return fmt.Errorf("namespace %q: %d levels, at most %d allowed", g.NS.String(), len(g.NS), MaxNamespaceDepth)
	}
	for _, c := range g.NS {
		if !validName(c) {
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

// TimeString returns the snapshot's time as its directory name: RFC 3339 in
// UTC to the second, "2025-04-04T15:02:49Z".
func (s Snapshot) TimeString() string { return s.Time.UTC().Format(TimeLayout) }

// RelPath returns the snapshot's directory relative to the store base:
// "vm/100/2025-04-04T15:02:49Z", with the namespace's "ns/a/" in front.
func (s Snapshot) RelPath() string { return s.Group.RelPath() + "/" + s.TimeString() }

// String returns the snapshot as PBS prints it with its namespace: the same
// as RelPath.
func (s Snapshot) String() string { return s.RelPath() }

// readDirs lists the subdirectories of dir (not symlinks to directories)
// whose names pass keep, sorted by name. A missing dir gives an empty list.
func readDirs(dir string, keep func(name string) bool) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries { // os.ReadDir sorts by name
		if e.IsDir() && keep(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// ListNamespaces returns every namespace of the store at base: the root
// first, then each nested namespace (ns/<a>/ns/<b>/…, at most
// [MaxNamespaceDepth] levels) in depth-first order with sorted children, so
// a parent precedes its children. Directories whose names are not valid
// namespace components are ignored, as are symlinks.
func ListNamespaces(base string) ([]Namespace, error) {
	nss := []Namespace{nil}
	var walk func(parent Namespace) error
	walk = func(parent Namespace) error {
		if len(parent) == MaxNamespaceDepth {
			return nil
		}
		names, err := readDirs(filepath.Join(base, parent.RelPath(), nsDir), validName)
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
// groups.
func ListGroups(base string, ns Namespace) ([]Group, error) {
	nsPath := filepath.Join(base, ns.RelPath())
	var groups []Group
	for _, typ := range groupTypes() {
		ids, err := readDirs(filepath.Join(nsPath, typ), validName)
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
// directory does not exist has no snapshots.
func ListSnapshots(base string, g Group) ([]Snapshot, error) {
	names, err := readDirs(filepath.Join(base, g.RelPath()), func(name string) bool {
		_, ok := parseTime(name)
		return ok
	})
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
// of the store, ordered by namespace (as [ListNamespaces]), group (as
// [ListGroups]) and time.
func ListAllSnapshots(base string) ([]Snapshot, error) {
	nss, err := ListNamespaces(base)
	if err != nil {
		return nil, err
	}
	var all []Snapshot
	for _, ns := range nss {
		groups, err := ListGroups(base, ns)
		if err != nil {
			return nil, err
		}
		for _, g := range groups {
			snaps, err := ListSnapshots(base, g)
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
// Hidden files are not index files. If the snapshot directory does not exist
// (it was removed), the error matches fs.ErrNotExist.
func IndexFiles(base string, s Snapshot) ([]string, error) {
	dir := filepath.Join(base, s.RelPath())
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list index files of snapshot %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() && isIndexName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// isIndexName reports whether a directory entry's name is that of an index
// file: not hidden, ending in .fidx or .didx.
func isIndexName(name string) bool {
	_, ok := index.KindOf(name)
	return ok && !strings.HasPrefix(name, ".")
}
