package journal

import (
	"cmp"
	"errors"
	"io"
	"io/fs"
	"os"
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

// List returns the journals in dir, the entries named *.journal (but for
// names starting with a dot), oldest first (see [Prune] for the order; the
// unreadable come first). Every journal is read through: Records, Trailer
// and Tail are what [ReadFile] would find. A journal that cannot be read is
// listed with its Err set, not skipped; the error List returns is only that
// of reading dir itself.
func List(dir string) ([]Info, error) {
	return scanDir(dir, nil)
}

// scanDir lists dir as List does, calling fn with every record of each
// journal.
func scanDir(dir string, fn func(info *Info, r *Record)) ([]Info, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var infos []Info
	for _, e := range ents {
		if !isJournalName(e.Name()) {
			continue
		}
		info := Info{Path: filepath.Join(dir, e.Name()), Name: e.Name()}
		var each func(*Record) error
		if fn != nil {
			each = func(r *Record) error { fn(&info, r); return nil }
		}
		s, err := scanFile(info.Path, each)
		if err != nil {
			info.Err = err
		} else {
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

// Find scans every journal in dir for digest d and returns each record of
// it, in the order of [List] (oldest journal first) and within a journal in
// file order. The error joins the Err of every journal that could not be
// read (the hits of the others are returned all the same) or is the error
// of reading dir.
func Find(dir string, d blob.Digest) ([]Hit, error) {
	type found struct {
		name string
		r    Record
	}
	var recs []found
	infos, err := scanDir(dir, func(info *Info, r *Record) {
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
// dirfd (dirPath is its path, for errors), through sys, and returns how
// many it removed. keep < 1 is taken as 1: the newest journal always
// stays. The journal of run current (a RunID; "" for none) is never
// removed, even when it is not among the newest keep.
//
// Journals are ordered as [List] orders them: by the StartTime and RunID
// of their header, and a *.journal whose header is bad counts as the
// oldest of all, so it goes first. Entries that are not regular files
// (symlinks, directories, FIFOs), names that do not end in .journal and
// names starting with a dot are neither counted nor removed. Every name is
// opened relative to dirfd, never following a symlink.
//
// An error reading or removing one journal does not stop the others: the
// errors are joined, and the file is left alone.
func Prune(sys fsys.Syscalls, dirfd int, dirPath string, keep int, current string) (removed int, err error) {
	sys = fsys.OrReal(sys)
	keep = max(keep, 1)
	fd, err := sys.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fsys.WithPath(err, dirPath)
	}
	var names []string
	err = fsys.ReadDirents(sys, fd, func() string { return dirPath }, make([]byte, 8<<10), func(name []byte, dtype uint8) error {
		if (dtype == unix.DT_REG || dtype == unix.DT_UNKNOWN) && isJournalName(string(name)) {
			names = append(names, string(name))
		}
		return nil
	})
	unix.Close(fd)
	if err != nil {
		return 0, err
	}
	var infos []Info
	var errs []error
	for _, name := range names {
		info := Info{Path: dirPath + "/" + name, Name: name}
		info.Header, info.Err = readHeaderAt(sys, dirfd, name, info.Path)
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

// readHeaderAt reads the header of the journal name in dirfd, a regular
// file, without following a symlink.
func readHeaderAt(sys fsys.Syscalls, dirfd int, name, path string) (Header, error) {
	var st unix.Stat_t
	if err := sys.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Header{}, fsys.WithPath(err, path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Header{}, &fs.PathError{Op: "open", Path: path, Err: ErrNotRegular}
	}
	fd, err := sys.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return Header{}, &fs.PathError{Op: "open", Path: path, Err: ErrNotRegular}
		}
		return Header{}, fsys.WithPath(err, path)
	}
	defer unix.Close(fd)
	if err := sys.Fstat(fd, &st); err != nil {
		return Header{}, fsys.WithPath(err, path)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Header{}, &fs.PathError{Op: "open", Path: path, Err: ErrNotRegular}
	}
	s, err := scan(&preader{sys: sys, fd: fd, path: path}, path, nil, true)
	return s.header, err
}

// preader reads a file through sys.Pread from offset 0 on.
type preader struct {
	sys  fsys.Syscalls
	fd   int
	off  int64
	path string
}

func (p *preader) Read(b []byte) (int, error) {
	n, err := p.sys.Pread(p.fd, b, p.off)
	if err != nil {
		return 0, fsys.WithPath(err, p.path)
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	p.off += int64(n)
	return n, nil
}
