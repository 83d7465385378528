package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"chunkgc/internal/nofollow"
)

// DefaultPath is where chunkgc reads its datastore config when neither
// --config nor CHUNKGC_CONFIG names another file.
const DefaultPath = "/etc/chunkgc/datastore.cfg"

// ParseError is a syntax error in a config file. Path is the name given to
// [Parse] (the file path for [Read]), Line counts from 1.
type ParseError struct {
	Path   string
	Line   int
	Reason string
	// Err is the underlying error, when there is one (an invalid datastore
	// name matches [ErrInvalidStoreName]); Reason already includes it.
	Err error
}

func (e *ParseError) Error() string {
	return e.Path + ":" + strconv.Itoa(e.Line) + ": " + e.Reason
}

// Unwrap returns e.Err.
func (e *ParseError) Unwrap() error { return e.Err }

// File is a config file in PBS's section format. It keeps every line as
// read, so [File.Bytes] of an unmodified File is the input byte for byte,
// and [File.SetDatastore] changes only the lines it must. The zero value is
// an empty config.
type File struct {
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

// Read reads and parses the config file at path. A missing file is an
// empty config. Syntax errors are a [*ParseError] naming path and line.
//
// The file is opened with O_NONBLOCK and must be a regular file: a FIFO or
// device at path is an error naming it, never a hang. It is read up to
// [maxSize].
func Read(path string) (*File, error) {
	b, err := readFile(path, "datastore config")
	if err != nil {
		return nil, err
	}
	return parse(b, path)
}

// readFile reads the config file at path for [Read] and [ReadS3]; what
// names the file's kind in errors. A missing file reads as empty.
func readFile(path, what string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s %s: not a regular file (%v)", what, path, fi.Mode().Type())
	}
	b, err := nofollow.ReadAll(f, maxSize)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return b, nil
}

// maxSize bounds the config file Read reads: 16 MiB is thousands of
// datastores.
const maxSize = 16 << 20

// Parse parses a config from r; name stands for the file in errors.
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
func Parse(r io.Reader, name string) (*File, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read datastore config %s: %w", name, err)
	}
	return parse(b, name)
}

func parse(b []byte, name string) (*File, error) {
	p := &parser{name: name, f: &File{}, seen: map[string]int{}}
	for len(b) > 0 {
		var raw string
		raw, b = nextLine(b)
		if err := p.line(raw); err != nil {
			return nil, err
		}
	}
	if err := p.closeSection(); err != nil {
		return nil, err
	}
	return p.f, nil
}

// parser is the state of one parse: the file built so far, the open
// section or run of loose lines, and what the checks of datastore sections
// need.
type parser struct {
	name   string // the file, for errors
	f      *File
	lineNo int            // of the current line, from 1
	cur    *part          // the open section, nil outside one
	loose  *part          // the open run of lines outside any section
	seen   map[string]int // datastore name → header line
	props  map[string]int // key → line, of the open datastore section
}

// nextLine splits the first line, with its terminator, off b.
func nextLine(b []byte) (raw string, rest []byte) {
	n := bytes.IndexByte(b, '\n') + 1
	if n == 0 {
		n = len(b)
	}
	return string(b[:n]), b[n:]
}

// classify returns the kind of a line from its text without terminator:
// blank (nothing but white space), comment (first non-blank character
// '#'), property (starts with white space) or header (anything else; the
// parser checks its syntax).
func classify(text string) lineKind {
	trimmed := strings.TrimSpace(text)
	switch {
	case trimmed == "":
		return lineBlank
	case trimmed[0] == '#':
		return lineComment
	case unicode.IsSpace(firstRune(text)):
		return lineProp
	default:
		return lineHeader
	}
}

// line parses the next line, raw with its terminator.
func (p *parser) line(raw string) error {
	p.lineNo++
	text := strings.TrimSuffix(strings.TrimSuffix(raw, "\n"), "\r")
	switch classify(text) {
	case lineBlank:
		if err := p.closeSection(); err != nil {
			return err
		}
		p.addLoose(line{raw: raw, kind: lineBlank})
	case lineComment:
		l := line{raw: raw, kind: lineComment}
		if p.cur != nil {
			p.cur.lines = append(p.cur.lines, l)
		} else {
			p.addLoose(l)
		}
	case lineProp:
		return p.property(raw, strings.TrimSpace(text))
	default:
		return p.header(raw, text)
	}
	return nil
}

// errorf returns a *ParseError at line n.
func (p *parser) errorf(n int, format string, args ...any) error {
	return &ParseError{Path: p.name, Line: n, Reason: fmt.Sprintf(format, args...)}
}

// addLoose appends l to the run of lines outside any section, opening one
// when the last part is a section.
func (p *parser) addLoose(l line) {
	p.cur = nil
	if p.loose == nil {
		p.loose = &part{}
		p.f.parts = append(p.f.parts, p.loose)
	}
	p.loose.lines = append(p.loose.lines, l)
}

// closeSection ends the open section, if any: a datastore section must have
// had a path.
func (p *parser) closeSection() error {
	if p.cur != nil && p.cur.typ == SectionDatastore && p.props[PropPath] == 0 {
		return p.errorf(p.seen[p.cur.id], "datastore %s has no path", p.cur.id)
	}
	p.cur = nil
	return nil
}

// header opens a section at the line text ("type: id"). A datastore
// section's name must be valid and new in the file.
func (p *parser) header(raw, text string) error {
	if p.cur != nil {
		return p.errorf(p.lineNo, "syntax error in section %s: %s: a property line starts with white space, and a blank line must end the section before the next header", p.cur.typ, p.cur.id)
	}
	typ, id, ok := splitHeader(text)
	if !ok {
		return p.errorf(p.lineNo, "syntax error: want a section header \"type: name\", a comment or a blank line")
	}
	if typ == SectionDatastore {
		if err := ValidateStoreName(id); err != nil {
			return &ParseError{Path: p.name, Line: p.lineNo, Reason: err.Error(), Err: err}
		}
		if prev, dup := p.seen[id]; dup {
			return p.errorf(p.lineNo, "duplicate datastore %s (first on line %d)", id, prev)
		}
		p.seen[id] = p.lineNo
		p.props = map[string]int{}
	}
	p.cur = &part{header: &line{raw: raw, kind: lineHeader}, typ: typ, id: id}
	p.loose = nil
	p.f.parts = append(p.f.parts, p.cur)
	return nil
}

// property adds the property line trimmed ("key value") to the open
// section. In a datastore section, path, tuning and comment may appear once
// and the path must not be empty.
func (p *parser) property(raw, trimmed string) error {
	if p.cur == nil {
		return p.errorf(p.lineNo, "property line outside a section (want \"type: name\" first)")
	}
	key, val := splitProp(trimmed)
	if p.cur.typ == SectionDatastore {
		switch key {
		case PropPath, PropTuning, PropComment:
			if prev := p.props[key]; prev != 0 {
				return p.errorf(p.lineNo, "datastore %s: duplicate property %s (first on line %d)", p.cur.id, key, prev)
			}
			p.props[key] = p.lineNo
		}
		if key == PropPath && val == "" {
			return p.errorf(p.lineNo, "datastore %s: empty path", p.cur.id)
		}
	}
	p.cur.lines = append(p.cur.lines, line{raw: raw, kind: lineProp, key: key, val: val})
	return nil
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

// Bytes returns the config file's content.
func (f *File) Bytes() []byte {
	var b bytes.Buffer
	for _, p := range f.parts {
		if p.header != nil {
			b.WriteString(p.header.raw)
		}
		for _, l := range p.lines {
			b.WriteString(l.raw)
		}
	}
	return b.Bytes()
}
