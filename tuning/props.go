package tuning

import (
	"errors"
	"flag"
	"strconv"
	"strings"
)

// Props is a parsed, validated property string: an ordered set of key=value
// overrides, at most one per key. Its zero value is the empty set, which
// overrides nothing. Props is a value type; its methods never modify the
// receiver, except [Props.Set].
type Props struct {
	items []prop
}

// prop is one validated key=value.
type prop struct {
	key string // a known key
	val string // canonical value text
	num int64  // parsed value: the number, 1/0 for a bool, the index for an enum
}

var _ flag.Value = (*Props)(nil)

// KeyError is returned by [Parse] for an unknown key or a value that is not
// valid for its key: not a number, out of range, not a boolean, not one of
// the allowed names. Reason names the allowed range or values.
type KeyError struct {
	Key    string // the key as given
	Value  string // the value as given
	Reason string // e.g. "out of range 1..2880 (minutes)"
}

func (e *KeyError) Error() string {
	return "tuning " + quoteItem(e.Key+"="+e.Value) + ": " + e.Reason
}

// SyntaxError is returned by [Parse] for an item that is not key=value:
// an empty item (",,") or an item without '=' or without a key.
type SyntaxError struct {
	Item   string // the offending item, or the whole input for an empty item
	Reason string
}

func (e *SyntaxError) Error() string {
	return "tuning " + strconv.Quote(e.Item) + ": " + e.Reason
}

// quoteItem quotes s when it is empty or holds a space, a quote or a
// character that is not printable ASCII, so that messages stay one line.
func quoteItem(s string) string {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.Quote(s)
		}
	}
	return s
}

// Parse parses a property string: key=value items separated by commas, e.g.
// "gc-atime-safety-check=0,gc-atime-cutoff=60". The empty string (or only
// white space) is the empty set. White space around items, keys and values
// is ignored. A key given twice takes its last value, at the position of
// its first. Booleans accept 1/0, true/false, yes/no and on/off in any
// case; numbers are decimal integers. Errors are a [*SyntaxError] or a
// [*KeyError] naming the key, the value and what is allowed.
func Parse(s string) (Props, error) {
	var p Props
	if strings.TrimSpace(s) == "" {
		return p, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return Props{}, &SyntaxError{Item: s, Reason: "empty item (want key=value items separated by single commas)"}
		}
		key, val, ok := strings.Cut(item, "=")
		if !ok {
			return Props{}, &SyntaxError{Item: item, Reason: "missing '=' (want key=value, e.g. " + KeyAtimeCutoff + "=60)"}
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if key == "" {
			return Props{}, &SyntaxError{Item: item, Reason: "missing key before '='"}
		}
		pr, err := parseProp(key, val)
		if err != nil {
			return Props{}, err
		}
		p.put(pr)
	}
	return p, nil
}

func parseProp(key, val string) (prop, error) {
	sp := lookup(key)
	if sp == nil {
		return prop{}, &KeyError{Key: key, Value: val, Reason: "unknown key (known keys: " + strings.Join(Keys(), ", ") + ")"}
	}
	bad := func(reason string) (prop, error) {
		return prop{}, &KeyError{Key: key, Value: val, Reason: reason}
	}
	switch sp.kind {
	case kindBool:
		switch strings.ToLower(val) {
		case "1", "true", "yes", "on":
			return prop{key: key, val: "true", num: 1}, nil
		case "0", "false", "no", "off":
			return prop{key: key, val: "false", num: 0}, nil
		}
		return bad("not a boolean (want 1/0, true/false, yes/no or on/off)")
	case kindInt:
		rng := strconv.FormatInt(sp.min, 10) + ".." + strconv.FormatInt(sp.max, 10) + " (" + sp.unit + ")"
		if !isDecimal(val) {
			return bad("not a decimal integer (want " + rng + ")")
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return bad("not a decimal integer (want " + rng + ")")
		}
		if err != nil || n < sp.min || n > sp.max {
			return bad("out of range " + rng)
		}
		return prop{key: key, val: strconv.FormatInt(n, 10), num: n}, nil
	case kindEnum:
		for i, name := range sp.values {
			if val == name {
				return prop{key: key, val: name, num: int64(i)}, nil
			}
		}
		return bad("unknown value (want one of " + strings.Join(sp.values, ", ") + ")")
	}
	panic("tuning: spec " + key + " has no kind")
}

// isDecimal reports whether s is an optional '-' followed by one or more
// ASCII digits.
func isDecimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// put sets pr.key to pr, in place when the key is already present.
func (p *Props) put(pr prop) {
	for i := range p.items {
		if p.items[i].key == pr.key {
			p.items[i] = pr
			return
		}
	}
	p.items = append(p.items, pr)
}

// Apply returns t with every key present in p overridden.
func (p Props) Apply(t Tuning) Tuning {
	for _, pr := range p.items {
		lookup(pr.key).set(&t, pr.num)
	}
	return t
}

// Merge returns the union of p and q where q's value wins for a key in
// both. Keys keep their position in p; q's other keys follow in q's order.
func (p Props) Merge(q Props) Props {
	var r Props
	if n := len(p.items) + len(q.items); n > 0 {
		r.items = make([]prop, 0, n)
	}
	r.items = append(r.items, p.items...)
	for _, pr := range q.items {
		r.put(pr)
	}
	return r
}

// Has reports whether p overrides key.
func (p Props) Has(key string) bool {
	_, ok := p.Get(key)
	return ok
}

// Get returns the canonical value p gives key, and whether it gives one.
func (p Props) Get(key string) (string, bool) {
	for _, pr := range p.items {
		if pr.key == key {
			return pr.val, true
		}
	}
	return "", false
}

// Len returns the number of keys p overrides.
func (p Props) Len() int { return len(p.items) }

// String returns the canonical property string: "key=value" items in p's
// order, joined by commas, with booleans as true/false and numbers without
// leading zeros. [Parse] of it gives p back. The empty set gives "".
func (p Props) String() string {
	var b strings.Builder
	for i, pr := range p.items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(pr.key)
		b.WriteByte('=')
		b.WriteString(pr.val)
	}
	return b.String()
}

// Set parses s and merges it over p, so that a repeated --tuning flag
// accumulates and a later flag wins per key. On error p is unchanged. Set
// implements [flag.Value].
func (p *Props) Set(s string) error {
	q, err := Parse(s)
	if err != nil {
		return err
	}
	*p = p.Merge(q)
	return nil
}
