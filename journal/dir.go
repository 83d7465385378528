package journal

import (
	"cmp"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"chunkgc/blob"
	"chunkgc/internal/fsys"
)

// Info describes one journal of a directory, as [List] found it.
type Info struct {
	Path    string
	Name    string   // the file name, <RunID>.journal
	Header  Header   // zero when Err is set
	Records int64    // the records of its intact frames
	Trailer *Trailer // nil when the journal is incomplete (or Err is set)
	Tail    error    // as [Journal.Tail]
	// Err is set when the journal could not be read at all: its header is
	// bad ([ErrBadHeader]), it is not a regular file ([ErrNotRegular]), or
	// opening or reading it failed.
	Err error
}

// Complete reports whether the journal has its trailer.
func (i *Info) Complete() bool { return i.Trailer != nil }

// isJournalName reports whether name is one a journal can have: it ends in
// .journal and does not start with a dot.
func isJournalName(name string) bool {
	return len(name) > len(Extension) && name[0] != '.' && strings.HasSuffix(name, Extension)
}

// order sorts infos oldest first: the unreadable ones (Err set) first, by
// name, then by StartTime, RunID and name.
func order(a, b *Info) int {
	if (a.Err != nil) != (b.Err != nil) {
		if a.Err != nil {
			return -1
		}
		return 1
	}
	return cmp.Or(
		cmp.Compare(a.Header.StartTime, b.Header.StartTime),
		strings.Compare(a.Header.RunID, b.Header.RunID),
		strings.Compare(a.Name, b.Name))
}

// List returns the journals in the directory open as dirfd (dir is its
// path, for Info.Path and errors): the entries named *.journal (but for
// names starting with a dot), oldest first (see [Prune] for the order; the
// unreadable come first). sys (nil: fsys.Real) lists the directory. Every
// journal is opened relative to dirfd, never following a symlink, and read
// through: Records, Trailer and Tail are what [ReadFile] would find. A
// journal that cannot be read (a symlink or FIFO in its place included) is
// listed with its Err set, not skipped; one removed between the listing and
// its open (a concurrent [Prune]) is left out. The error List returns is
// only that of listing the directory.
func List(sys fsys.Syscalls, dirfd int, dir string) ([]Info, error) {
	return scanDir(sys, dirfd, dir, nil)
}

// journalNames returns the journal names (see [isJournalName]) in the
// directory open as dirfd, through sys, with their d_type (unix.DT_*).
func journalNames(sys fsys.Syscalls, dirfd int, dir string) ([]string, []uint8, error) {
	fd, err := sys.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fsys.WithPath(err, dir)
	}
	defer unix.Close(fd)
	var names []string
	var types []uint8
	err = fsys.ReadDirents(sys, fd, func() string { return dir }, make([]byte, 8<<10), func(name []byte, dtype uint8) error {
		if isJournalName(string(name)) {
			names = append(names, string(name))
			types = append(types, dtype)
		}
		return nil
	})
	return names, types, err
}

// scanDir lists the directory as List does, calling fn with every record of
// each journal.
func scanDir(sys fsys.Syscalls, dirfd int, dir string, fn func(info *Info, r *Record)) ([]Info, error) {
	names, _, err := journalNames(fsys.OrReal(sys), dirfd, dir)
	if err != nil {
		return nil, err
	}
	var infos []Info
	for _, name := range names {
		info := Info{Path: filepath.Join(dir, name), Name: name}
		var each func(*Record) error
		if fn != nil {
			each = func(r *Record) error { fn(&info, r); return nil }
		}
		s, err := scanAt(dirfd, dir, name, each, false)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // pruned since it was listed
		case err != nil:
			info.Err = err
		default:
			info.Header, info.Records, info.Trailer, info.Tail = s.header, s.records, s.trailer, s.tail
		}
		infos = append(infos, info)
	}
	slices.SortFunc(infos, func(a, b Info) int { return order(&a, &b) })
	return infos, nil
}

// Hit is a record [Find] found, with the journal it is in.
type Hit struct {
	Info   Info
	Record Record
}

// Find scans every journal of the directory open as dirfd (dir is its
// path; sys lists it, as for [List]) for digest d and returns each record
// of it, in the order of [List] (oldest journal first) and within a journal
// in file order. The error joins the Err of every journal that could not be
// read (the hits of the others are returned all the same) or is the error
// of listing the directory.
func Find(sys fsys.Syscalls, dirfd int, dir string, d blob.Digest) ([]Hit, error) {
	type found struct {
		name string
		r    Record
	}
	var recs []found
	infos, err := scanDir(sys, dirfd, dir, func(info *Info, r *Record) {
		if r.Digest == d {
			recs = append(recs, found{info.Name, *r})
		}
	})
	if err != nil {
		return nil, err
	}
	var hits []Hit
	var errs []error
	for _, info := range infos {
		if info.Err != nil {
			errs = append(errs, info.Err)
		}
		for _, f := range recs {
			if f.name == info.Name {
				hits = append(hits, Hit{Info: info, Record: f.r})
			}
		}
	}
	return hits, errors.Join(errs...)
}

// Prune removes all but the newest keep journals of the directory open as
// dirfd (dirPath is its path, for errors) and returns how many it removed;
// sys (nil: fsys.Real) lists the directory and removes the files. keep < 1
// is taken as 1: the newest journal always stays. The journal of run
// current (a RunID; "" for none) is never removed, even when it is not
// among the newest keep.
//
// Journals are ordered as [List] orders them: by the StartTime and RunID
// of their header, and a *.journal whose header is bad counts as the
// oldest of all, so it goes first. Entries that are not regular files
// (symlinks, directories, FIFOs), names that do not end in .journal and
// names starting with a dot are neither counted nor removed. Every name is
// opened relative to dirfd, never following a symlink, as [ReadFile] opens
// it.
//
// An error reading or removing one journal does not stop the others: the
// errors are joined, and the file is left alone.
func Prune(sys fsys.Syscalls, dirfd int, dirPath string, keep int, current string) (removed int, err error) {
	sys = fsys.OrReal(sys)
	keep = max(keep, 1)
	names, types, err := journalNames(sys, dirfd, dirPath)
	if err != nil {
		return 0, err
	}
	var infos []Info
	var errs []error
	for i, name := range names {
		if types[i] != unix.DT_REG && types[i] != unix.DT_UNKNOWN {
			continue // not a journal
		}
		info := Info{Path: filepath.Join(dirPath, name), Name: name}
		var s scanned
		s, info.Err = scanAt(dirfd, dirPath, name, nil, true)
		info.Header = s.header
		switch {
		case info.Err == nil, errors.Is(info.Err, ErrBadHeader):
			infos = append(infos, info)
		case errors.Is(info.Err, ErrNotRegular), errors.Is(info.Err, fs.ErrNotExist):
			// not a journal, or gone
		default:
			errs = append(errs, info.Err)
		}
	}
	slices.SortFunc(infos, func(a, b Info) int { return order(&a, &b) })
	for _, info := range infos[:max(len(infos)-keep, 0)] {
		if current != "" && info.Name == FileName(current) {
			continue
		}
		if err := sys.Unlinkat(dirfd, info.Name, 0); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fsys.WithPath(err, info.Path))
			}
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}
