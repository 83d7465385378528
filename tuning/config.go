package tuning

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// DefaultConfigPath is where chunkgc reads its datastore config when neither
// --config nor CHUNKGC_CONFIG names another file.
const DefaultConfigPath = "/etc/chunkgc/datastore.cfg"

// SectionDatastore is the section type of a datastore.
const SectionDatastore = "datastore"

// The datastore properties chunkgc reads and writes; every other property
// of a datastore section is kept as it is.
const (
	PropPath    = "path"
	PropTuning  = "tuning"
	PropComment = "comment"
)

// ErrInvalidStoreName is matched (errors.Is) by the error of
// [ValidateStoreName] for a name PBS would not accept.
var ErrInvalidStoreName = errors.New("invalid datastore name")

// ConfigError is a syntax error in a config file. Path is the name given to
// [ParseConfig] (the file path for [ReadConfig]), Line counts from 1.
type ConfigError struct {
	Path   string
	Line   int
	Reason string
	// Err is the underlying error, when there is one (an invalid datastore
	// name matches [ErrInvalidStoreName]); Reason already includes it.
	Err error
}

func (e *ConfigError) Error() string {
	return e.Path + ":" + strconv.Itoa(e.Line) + ": " + e.Reason
}

// Unwrap returns e.Err.
func (e *ConfigError) Unwrap() error { return e.Err }

// Datastore is the part of a datastore section chunkgc uses. An empty field
// is an absent property.
type Datastore struct {
	Name    string // the section id, see [ValidateStoreName]
	Path    string // absolute base path of the store
	Tuning  string // raw property string; parse it with [Parse]
	Comment string
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
	for _, kv := range [][2]string{{PropPath, d.Path}, {PropTuning, d.Tuning}, {PropComment, d.Comment}} {
		if v := kv[1]; v != strings.TrimSpace(v) || strings.ContainsFunc(v, unicode.IsControl) || !utf8.ValidString(v) {
			return fmt.Errorf("datastore %s: %s %q has control characters, invalid UTF-8 or surrounding white space", d.Name, kv[0], v)
		}
	}
	if _, err := Parse(d.Tuning); err != nil {
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

// Config is a config file in PBS's section format. It keeps every line as
// read, so [Config.Bytes] of an unmodified Config is the input byte for
// byte, and [Config.SetDatastore] changes only the lines it must. The zero
// value is an empty config.
type Config struct {
	parts []*part
}

// part is a section (header set) or a run of lines outside any section:
// blank lines and comments.
type part struct {
	header *line // nil outside a section
	typ    string
	id     string
	lines  []line // property and comment lines of a section; blank and comment lines outside
}

type lineKind uint8

const (
	lineBlank lineKind = iota + 1
	lineComment
	lineHeader
	lineProp
)

type line struct {
	raw  string // verbatim, with its line terminator if it had one
	kind lineKind
	key  string // lineProp
	val  string // lineProp
}

// ReadConfig reads and parses the config file at path. A missing file is an
// empty config. Syntax errors are a [*ConfigError] naming path and line.
//
// The file is opened with O_NONBLOCK and must be a regular file: a FIFO or
// device at path is an error naming it, never a hang. It is read up to
// [maxConfigSize].
func ReadConfig(path string) (*Config, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read datastore config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read datastore config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read datastore config %s: not a regular file (%v)", path, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read datastore config %s: %w", path, err)
	}
	if len(b) > maxConfigSize {
		return nil, fmt.Errorf("read datastore config %s: larger than %d bytes", path, maxConfigSize)
	}
	return parseConfig(b, path)
}

// maxConfigSize bounds the config file ReadConfig reads: 16 MiB is
// thousands of datastores.
const maxConfigSize = 16 << 20

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

// ParseConfig parses a config from r; name stands for the file in errors.
//
// The format is PBS's section config: a line "type: id" (starting with a
// letter) opens a section; the section's lines that follow start with white
// space and hold "key value", where the value is the rest of the line
// without surrounding white space and may be empty; a blank line ends the
// section (a line of only white space is blank). Lines whose first
// non-blank character is '#' are comments, inside or outside a section. As
// in PBS, any other line inside a section that does not start with white
// space is an error, so a mistyped property cannot open a new section.
//
// A datastore section must have a valid name ([ValidateStoreName]) unique
// in the file, and exactly one path; tuning and comment may appear once.
// Its tuning string is not parsed here: a bad one concerns only that store.
// Sections of other types and unknown properties are kept, unchecked.
func ParseConfig(r io.Reader, name string) (*Config, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read datastore config %s: %w", name, err)
	}
	return parseConfig(b, name)
}

func parseConfig(b []byte, name string) (*Config, error) {
	c := &Config{}
	var cur *part // the open section, nil outside one
	var loose *part
	addLoose := func(l line) {
		cur = nil
		if loose == nil {
			loose = &part{}
			c.parts = append(c.parts, loose)
		}
		loose.lines = append(loose.lines, l)
	}
	seen := map[string]int{} // datastore name → header line
	var props map[string]int // key → line, of the open datastore section
	closeSection := func() error {
		if cur != nil && cur.typ == SectionDatastore && props[PropPath] == 0 {
			return &ConfigError{Path: name, Line: seen[cur.id], Reason: "datastore " + cur.id + " has no path"}
		}
		cur = nil
		return nil
	}

	lineNo := 0
	for len(b) > 0 {
		lineNo++
		n := bytes.IndexByte(b, '\n') + 1
		if n == 0 {
			n = len(b)
		}
		raw := string(b[:n])
		b = b[n:]
		text := strings.TrimSuffix(strings.TrimSuffix(raw, "\n"), "\r")
		trimmed := strings.TrimSpace(text)
		startsBlank := text != "" && unicode.IsSpace(firstRune(text))

		switch {
		case trimmed == "":
			if err := closeSection(); err != nil {
				return nil, err
			}
			addLoose(line{raw: raw, kind: lineBlank})
		case trimmed[0] == '#':
			if cur != nil {
				cur.lines = append(cur.lines, line{raw: raw, kind: lineComment})
			} else {
				addLoose(line{raw: raw, kind: lineComment})
			}
		case startsBlank:
			if cur == nil {
				return nil, &ConfigError{Path: name, Line: lineNo, Reason: "property line outside a section (want \"type: name\" first)"}
			}
			key, val := splitProp(trimmed)
			if cur.typ == SectionDatastore {
				switch key {
				case PropPath, PropTuning, PropComment:
					if prev := props[key]; prev != 0 {
						return nil, &ConfigError{Path: name, Line: lineNo, Reason: "datastore " + cur.id + ": duplicate property " + key + " (first on line " + strconv.Itoa(prev) + ")"}
					}
					props[key] = lineNo
				}
				if key == PropPath && val == "" {
					return nil, &ConfigError{Path: name, Line: lineNo, Reason: "datastore " + cur.id + ": empty path"}
				}
			}
			cur.lines = append(cur.lines, line{raw: raw, kind: lineProp, key: key, val: val})
		case cur != nil:
			return nil, &ConfigError{Path: name, Line: lineNo, Reason: "syntax error in section " + cur.typ + ": " + cur.id + ": a property line starts with white space, and a blank line must end the section before the next header"}
		default:
			typ, id, ok := splitHeader(text)
			if !ok {
				return nil, &ConfigError{Path: name, Line: lineNo, Reason: "syntax error: want a section header \"type: name\", a comment or a blank line"}
			}
			if typ == SectionDatastore {
				if err := ValidateStoreName(id); err != nil {
					return nil, &ConfigError{Path: name, Line: lineNo, Reason: err.Error(), Err: err}
				}
				if prev, dup := seen[id]; dup {
					return nil, &ConfigError{Path: name, Line: lineNo, Reason: "duplicate datastore " + id + " (first on line " + strconv.Itoa(prev) + ")"}
				}
				seen[id] = lineNo
				props = map[string]int{}
			}
			cur = &part{header: &line{raw: raw, kind: lineHeader}, typ: typ, id: id}
			loose = nil
			c.parts = append(c.parts, cur)
		}
	}
	if err := closeSection(); err != nil {
		return nil, err
	}
	return c, nil
}

func firstRune(s string) rune {
	r, _ := utf8.DecodeRuneInString(s)
	return r
}

// splitHeader splits "type: id" as PBS does: the line starts with a letter,
// type is the text before the first ':', id the text after it, both without
// surrounding white space.
func splitHeader(text string) (typ, id string, ok bool) {
	if !unicode.IsLetter(firstRune(text)) {
		return "", "", false
	}
	typ, id, ok = strings.Cut(text, ":")
	return strings.TrimSpace(typ), strings.TrimSpace(id), ok
}

// splitProp splits a trimmed property line into key and value at the first
// white space.
func splitProp(s string) (key, val string) {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}

// section returns the datastore section named name, or nil.
func (c *Config) section(name string) *part {
	for _, p := range c.parts {
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
		}
	}
	return d
}

// Datastore returns the datastore section named name.
func (c *Config) Datastore(name string) (Datastore, bool) {
	if p := c.section(name); p != nil {
		return p.datastore(), true
	}
	return Datastore{}, false
}

// Datastores returns every datastore section, in file order.
func (c *Config) Datastores() []Datastore {
	var ds []Datastore
	for _, p := range c.parts {
		if p.header != nil && p.typ == SectionDatastore {
			ds = append(ds, p.datastore())
		}
	}
	return ds
}

// SetDatastore adds the datastore d.Name, or updates its path, tuning and
// comment. An updated section keeps its position, its other properties and
// its comments, and a property whose value does not change keeps its line
// as it was; an empty field removes the property. A new section goes at the
// end, its properties sorted by key as PBS writes them.
//
// Values are written on one line: control characters become spaces and
// surrounding white space is dropped. Call [Datastore.Validate] first to
// reject such values, an invalid name or a bad tuning string instead.
func (c *Config) SetDatastore(d Datastore) {
	want := map[string]string{
		PropPath:    cleanValue(d.Path),
		PropTuning:  cleanValue(d.Tuning),
		PropComment: cleanValue(d.Comment),
	}
	p := c.section(d.Name)
	if p == nil {
		c.appendSection(d.Name)
		p = c.parts[len(c.parts)-1]
	}
	eol := "\n"
	if strings.HasSuffix(p.header.raw, "\r\n") {
		eol = "\r\n"
	}
	indent := "\t" // of new lines: that of the section's first property
	for _, l := range p.lines {
		if l.kind == lineProp {
			indent = leadingSpace(l.raw)
			break
		}
	}
	var lines []line
	for _, l := range p.lines {
		v, known := want[l.key]
		if l.kind != lineProp || !known {
			lines = append(lines, l)
			continue
		}
		delete(want, l.key)
		switch {
		case v == "":
			// removed
		case v == l.val:
			lines = append(lines, l)
		default:
			lines = append(lines, propLine(leadingSpace(l.raw), l.key, v, eol))
		}
	}
	for _, key := range []string{PropComment, PropPath, PropTuning} {
		v, ok := want[key]
		if !ok || v == "" {
			continue
		}
		// Before the first property that sorts after key, else after the
		// last property.
		at := len(lines)
		last := -1
		for i, l := range lines {
			if l.kind == lineProp {
				last = i
				if l.key > key && at == len(lines) {
					at = i
				}
			}
		}
		if at == len(lines) {
			at = last + 1
		}
		if at == 0 {
			terminate(&p.header.raw, eol)
		} else {
			terminate(&lines[at-1].raw, eol)
		}
		lines = slices.Insert(lines, at, propLine(indent, key, v, eol))
	}
	p.lines = lines
}

// terminate appends eol to *raw when it lacks a line terminator: the line
// was the last of a file without a final newline, and a line now follows.
func terminate(raw *string, eol string) {
	if !strings.HasSuffix(*raw, "\n") {
		*raw += eol
	}
}

// appendSection adds an empty datastore section at the end, after a blank
// line when the config does not already end with one.
func (c *Config) appendSection(name string) {
	if last := c.lastLine(); last != nil {
		terminate(&last.raw, "\n")
		if last.kind != lineBlank {
			blank := line{raw: "\n", kind: lineBlank}
			if p := c.parts[len(c.parts)-1]; p.header == nil {
				p.lines = append(p.lines, blank)
			} else {
				c.parts = append(c.parts, &part{lines: []line{blank}})
			}
		}
	}
	c.parts = append(c.parts, &part{
		header: &line{raw: SectionDatastore + ": " + name + "\n", kind: lineHeader},
		typ:    SectionDatastore,
		id:     name,
	})
}

// lastLine returns the last line of the config, nil when it is empty.
func (c *Config) lastLine() *line {
	for i := len(c.parts) - 1; i >= 0; i-- {
		p := c.parts[i]
		if n := len(p.lines); n > 0 {
			return &p.lines[n-1]
		}
		if p.header != nil {
			return p.header
		}
	}
	return nil
}

func leadingSpace(s string) string {
	return s[:len(s)-len(strings.TrimLeftFunc(s, unicode.IsSpace))]
}

func propLine(indent, key, val, eol string) line {
	return line{raw: indent + key + " " + val + eol, kind: lineProp, key: key, val: val}
}

// cleanValue makes v a value that reads back as itself: control characters
// and invalid UTF-8 become spaces, surrounding white space goes.
func cleanValue(v string) string {
	v = strings.ToValidUTF8(v, " ")
	v = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, v)
	return strings.TrimSpace(v)
}

// Bytes returns the config file's content.
func (c *Config) Bytes() []byte {
	var b bytes.Buffer
	for _, p := range c.parts {
		if p.header != nil {
			b.WriteString(p.header.raw)
		}
		for _, l := range p.lines {
			b.WriteString(l.raw)
		}
	}
	return b.Bytes()
}

// WriteFile writes the config to path atomically: a temporary file in the
// same directory, written, chmod 0640, chowned to uid:gid when running as
// root (-1 leaves an id unchanged; both -1 skips the chown), fsynced, then
// renamed over path, and the directory fsynced. The parent directory is
// created (0755) when missing. When path is a symlink, even a dangling
// one, the file it points to is written and the link stays. No temporary file is left behind on error.
func (c *Config) WriteFile(path string, uid, gid int) error {
	path, err := followLinks(path)
	if err != nil {
		return fmt.Errorf("write datastore config %s: %w", path, err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write datastore config %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write datastore config %s: %w", path, err)
	}
	tmp := f.Name()
	err = writeSync(f, c.Bytes(), uid, gid)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("write datastore config %s: %w", path, err), removeTmp(tmp))
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write datastore config %s: %w", path, err)
	}
	return nil
}

// followLinks returns the file a chain of symlinks at path ends in, which
// need not exist; path itself when it is not a symlink.
func followLinks(path string) (string, error) {
	for range 40 {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return path, nil // a missing file is created, other errors show later
		}
		target, err := os.Readlink(path)
		if err != nil {
			return path, err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	return path, &fs.PathError{Op: "readlink", Path: path, Err: syscall.ELOOP}
}

// writeSync writes b to f, sets mode and owner, fsyncs and closes it.
func writeSync(f *os.File, b []byte, uid, gid int) error {
	_, err := f.Write(b)
	if err == nil {
		err = f.Chmod(0o640)
	}
	if err == nil && (uid >= 0 || gid >= 0) && os.Geteuid() == 0 {
		err = f.Chown(uid, gid)
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func removeTmp(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
