package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"chunkgc/tuning"
)

// SectionDatastore is the section type of a datastore.
const SectionDatastore = "datastore"

// The datastore properties chunkgc reads and writes; every other property
// of a datastore section is kept as it is.
const (
	PropPath    = "path"
	PropTuning  = "tuning"
	PropComment = "comment"
	PropBackend = "backend"
)

// BackendFilesystem is the backend type of a datastore whose chunks are the
// files below its path: PBS's default, and the only one chunkgc collects.
const BackendFilesystem = "filesystem"

// ErrUnsupportedBackend is matched (errors.Is) by the error for a datastore
// whose backend chunkgc cannot collect: its path is not the whole store.
var ErrUnsupportedBackend = errors.New("unsupported datastore backend")

// ErrInvalidStoreName is matched (errors.Is) by the error of
// [ValidateStoreName] for a name PBS would not accept.
var ErrInvalidStoreName = errors.New("invalid datastore name")

// Datastore is the part of a datastore section chunkgc uses. An empty field
// is an absent property.
type Datastore struct {
	Name    string // the section id, see [ValidateStoreName]
	Path    string // absolute base path of the store
	Tuning  string // raw property string; parse it with [tuning.Parse]
	Comment string
	Backend string // raw property string, e.g. "type=s3,client=c1,bucket=b"
}

// Validate checks that d can be written to a config and read back as it is:
// a valid name, a path, a tuning string that parses, and no control
// characters or surrounding white space in any value.
func (d Datastore) Validate() error {
	if err := ValidateStoreName(d.Name); err != nil {
		return err
	}
	if d.Path == "" {
		return fmt.Errorf("datastore %s: empty path", d.Name)
	}
	for _, kv := range [][2]string{{PropPath, d.Path}, {PropTuning, d.Tuning}, {PropComment, d.Comment}, {PropBackend, d.Backend}} {
		if v := kv[1]; v != strings.TrimSpace(v) || strings.ContainsFunc(v, unicode.IsControl) || !utf8.ValidString(v) {
			return fmt.Errorf("datastore %s: %s %q has control characters, invalid UTF-8 or surrounding white space", d.Name, kv[0], v)
		}
	}
	if _, err := tuning.Parse(d.Tuning); err != nil {
		return fmt.Errorf("datastore %s: %w", d.Name, err)
	}
	return nil
}

// ValidateStoreName checks a datastore name the way PBS does: 3 to 32
// characters from [A-Za-z0-9._-], not starting with '.' or '-'. The error
// matches [ErrInvalidStoreName].
func ValidateStoreName(name string) error {
	if n := len(name); n < 3 || n > 32 {
		return fmt.Errorf("%w %q: want 3 to 32 characters, have %d", ErrInvalidStoreName, name, n)
	}
	for i, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%w %q: character %q at %d (want [A-Za-z0-9_][A-Za-z0-9._-]*)", ErrInvalidStoreName, name, rune(c), i)
		}
	}
	return nil
}

// CheckStorePath returns an error unless p is an absolute path without "."
// or ".." components, as a datastore's base path must be: GC resolves the
// base as a path (everything below it without following links), so the
// configured path must say plainly where the store is. Repeated and trailing
// slashes are allowed (filepath.Clean removes them).
func CheckStorePath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("datastore path %q is not absolute", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == "." || c == ".." {
			return fmt.Errorf("datastore path %q has a %q component (give it without \".\" and \"..\" components)", p, c)
		}
	}
	return nil
}

// section returns the datastore section named name, or nil.
func (f *File) section(name string) *part {
	for _, p := range f.parts {
		if p.header != nil && p.typ == SectionDatastore && p.id == name {
			return p
		}
	}
	return nil
}

func (p *part) datastore() Datastore {
	d := Datastore{Name: p.id}
	for _, l := range p.lines {
		if l.kind != lineProp {
			continue
		}
		switch l.key {
		case PropPath:
			d.Path = l.val
		case PropTuning:
			d.Tuning = l.val
		case PropComment:
			d.Comment = l.val
		case PropBackend:
			d.Backend = l.val
		}
	}
	return d
}

// Datastore returns the datastore section named name.
func (f *File) Datastore(name string) (Datastore, bool) {
	if p := f.section(name); p != nil {
		return p.datastore(), true
	}
	return Datastore{}, false
}

// Datastores returns every datastore section, in file order.
func (f *File) Datastores() []Datastore {
	var ds []Datastore
	for _, p := range f.parts {
		if p.header != nil && p.typ == SectionDatastore {
			ds = append(ds, p.datastore())
		}
	}
	return ds
}
