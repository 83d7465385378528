package config

import (
	"slices"
	"strings"
	"unicode"
)

// SetDatastore adds the datastore d.Name, or updates its path, tuning,
// comment and backend. An updated section keeps its position, its other properties and
// its comments, and a property whose value does not change keeps its line
// as it was; an empty field removes the property. A new section goes at the
// end, its properties sorted by key as PBS writes them.
//
// Values are written on one line: control characters become spaces and
// surrounding white space is dropped. Call [Datastore.Validate] first to
// reject such values, an invalid name or a bad tuning string instead.
func (f *File) SetDatastore(d Datastore) {
	want := map[string]string{
		PropPath:    cleanValue(d.Path),
		PropTuning:  cleanValue(d.Tuning),
		PropComment: cleanValue(d.Comment),
		PropBackend: cleanValue(d.Backend),
	}
	p := f.section(d.Name)
	if p == nil {
		f.appendSection(d.Name)
		p = f.parts[len(f.parts)-1]
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
	for _, key := range []string{PropBackend, PropComment, PropPath, PropTuning} {
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
func (f *File) appendSection(name string) {
	if last := f.lastLine(); last != nil {
		terminate(&last.raw, "\n")
		if last.kind != lineBlank {
			blank := line{raw: "\n", kind: lineBlank}
			if p := f.parts[len(f.parts)-1]; p.header == nil {
				p.lines = append(p.lines, blank)
			} else {
				f.parts = append(f.parts, &part{lines: []line{blank}})
			}
		}
	}
	f.parts = append(f.parts, &part{
		header: &line{raw: SectionDatastore + ": " + name + "\n", kind: lineHeader},
		typ:    SectionDatastore,
		id:     name,
	})
}

// lastLine returns the last line of the config, nil when it is empty.
func (f *File) lastLine() *line {
	for i := len(f.parts) - 1; i >= 0; i-- {
		p := f.parts[i]
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
