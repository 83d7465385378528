package config

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
)

// DefaultS3Path is where PBS keeps its S3 endpoint config.
const DefaultS3Path = "/etc/proxmox-backup/s3.cfg"

// SectionS3Endpoint is the section type of an S3 endpoint in s3.cfg.
const SectionS3Endpoint = "s3-endpoint"

// DefaultS3Region is the region of an endpoint without a region property,
// as in PBS.
const DefaultS3Region = "us-west-1"

// The provider quirks of an S3 endpoint (property provider-quirks).
const (
	// QuirkSkipIfNoneMatch: the provider does not support the
	// If-None-Match header, so uploads are plain PUTs.
	QuirkSkipIfNoneMatch = "skip-if-none-match-header"
	// QuirkDeleteViaDeleteObject: the provider does not support
	// DeleteObjects, so keys are deleted one DELETE at a time.
	QuirkDeleteViaDeleteObject = "delete-objects-via-delete-object"
)

// The properties of an s3-endpoint section.
const (
	PropS3Endpoint    = "endpoint"
	PropS3Port        = "port"
	PropS3Region      = "region"
	PropS3Fingerprint = "fingerprint"
	PropS3AccessKey   = "access-key"
	PropS3SecretKey   = "secret-key"
	PropS3PathStyle   = "path-style"
	PropS3Quirks      = "provider-quirks"
)

// s3RateProps are PBS's rate limits of an endpoint: parsed, kept in
// [S3Endpoint.RateLimits] and not applied (see the package doc).
var s3RateProps = []string{"put-rate-limit", "rate-in", "burst-in", "rate-out", "burst-out"}

// S3Endpoint is an s3-endpoint section of PBS's s3.cfg: how to reach and
// authenticate to an S3 API. Values are checked and normalised by
// [ParseS3].
type S3Endpoint struct {
	ID string // the section id, named by a datastore's backend client=ID
	// Endpoint is the host name or IP address, possibly with the templates
	// {{bucket}} and {{region}} (e.g. "{{bucket}}.s3.{{region}}.amazonaws.com").
	Endpoint string
	Port     int    // 0: the HTTPS default, 443
	Region   string // DefaultS3Region when the property is absent
	// Fingerprint is the SHA-256 fingerprint of the server's leaf
	// certificate in lower case, "xx:xx:…" (32 pairs); empty: the
	// certificate is checked against the system's CAs.
	Fingerprint string
	AccessKey   string
	SecretKey   string
	PathStyle   bool     // path-style addressing (/bucket/key) instead of the bucket in the host
	Quirks      []string // the provider-quirks, in file order, each one of the Quirk constants
	// RateLimits holds PBS's put-rate-limit, rate-in, burst-in, rate-out
	// and burst-out as written; chunkgc does not apply them.
	RateLimits map[string]string
}

// HasQuirk reports whether the endpoint lists the provider quirk q.
func (e S3Endpoint) HasQuirk(q string) bool { return slices.Contains(e.Quirks, q) }

// Host returns the authority requests for bucket go to, as PBS builds it:
// the endpoint with {{region}} and {{bucket}} replaced, then ":port" when a
// port is set (an IPv6 address is bracketed).
func (e S3Endpoint) Host(bucket string) string {
	h := strings.ReplaceAll(e.Endpoint, "{{region}}", e.Region)
	h = strings.ReplaceAll(h, "{{bucket}}", bucket)
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if e.Port != 0 {
		h += ":" + strconv.Itoa(e.Port)
	}
	return h
}

// S3Config is PBS's s3.cfg: its s3-endpoint sections.
type S3Config struct {
	Path      string // the file, for errors
	Endpoints []S3Endpoint
}

// Endpoint returns the endpoint with the given id.
func (c *S3Config) Endpoint(id string) (S3Endpoint, bool) {
	for _, e := range c.Endpoints {
		if e.ID == id {
			return e, true
		}
	}
	return S3Endpoint{}, false
}

// ReadS3 reads PBS's s3.cfg at path, see [ParseS3]. A missing file is a
// config without endpoints. Like [Read], it refuses anything but a regular
// file.
func ReadS3(path string) (*S3Config, error) {
	b, err := readFile(path, "s3 config")
	if err != nil {
		return nil, err
	}
	return parseS3(b, path)
}

// ParseS3 parses PBS's s3.cfg from r; name stands for the file in errors.
// The syntax is the section format [Parse] reads. Every s3-endpoint
// section is checked as PBS checks it: an id of 3 to 32 characters from
// [A-Za-z0-9_][A-Za-z0-9._-]*, unique; an endpoint (DNS labels or the
// templates {{bucket}} and {{region}}, or an IP address); an access-key and
// a secret-key; optionally a port (1…65535), a region, a fingerprint (32
// hex pairs separated by ':'), path-style (a PBS boolean), provider-quirks
// (one per line, as PBS writes an array; a comma-separated list is also
// read) and the rate limits. A property other than provider-quirks may
// appear once. Unknown properties and sections of other types are
// ignored. Errors are a [*ParseError] naming the file, the line, the
// section and the property.
func ParseS3(r io.Reader, name string) (*S3Config, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read s3 config %s: %w", name, err)
	}
	return parseS3(b, name)
}

func parseS3(b []byte, name string) (*S3Config, error) {
	f, err := parse(b, name)
	if err != nil {
		return nil, err
	}
	c := &S3Config{Path: name}
	seen := map[string]int{}
	lineNo := 0
	for _, p := range f.parts {
		if p.header == nil {
			lineNo += len(p.lines)
			continue
		}
		lineNo++
		headerLine := lineNo
		if p.typ != SectionS3Endpoint {
			lineNo += len(p.lines)
			continue
		}
		errorf := func(n int, format string, args ...any) error {
			return &ParseError{Path: name, Line: n, Reason: SectionS3Endpoint + " " + p.id + ": " + fmt.Sprintf(format, args...)}
		}
		if err := checkS3ID(p.id); err != nil {
			return nil, errorf(headerLine, "%v", err)
		}
		if prev, dup := seen[p.id]; dup {
			return nil, errorf(headerLine, "duplicate s3-endpoint (first on line %d)", prev)
		}
		seen[p.id] = headerLine
		e := S3Endpoint{ID: p.id, Region: DefaultS3Region}
		props := map[string]int{}
		for _, l := range p.lines {
			lineNo++
			if l.kind != lineProp {
				continue
			}
			if l.key != PropS3Quirks {
				if prev := props[l.key]; prev != 0 {
					return nil, errorf(lineNo, "duplicate property %s (first on line %d)", l.key, prev)
				}
			}
			props[l.key] = lineNo
			if err := e.set(l.key, l.val); err != nil {
				return nil, errorf(lineNo, "%s %q: %v", l.key, l.val, err)
			}
		}
		for _, key := range []string{PropS3Endpoint, PropS3AccessKey, PropS3SecretKey} {
			if props[key] == 0 {
				return nil, errorf(headerLine, "missing property %s", key)
			}
		}
		c.Endpoints = append(c.Endpoints, e)
	}
	return c, nil
}

// set checks and sets the property key of e.
func (e *S3Endpoint) set(key, val string) error {
	switch key {
	case PropS3Endpoint:
		if err := checkS3Endpoint(val); err != nil {
			return err
		}
		e.Endpoint = val
	case PropS3Port:
		n, err := strconv.ParseUint(val, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("want a port number 1…65535")
		}
		e.Port = int(n)
	case PropS3Region:
		if err := checkS3Region(val); err != nil {
			return err
		}
		e.Region = val
	case PropS3Fingerprint:
		fp, err := normalizeFingerprint(val)
		if err != nil {
			return err
		}
		e.Fingerprint = fp
	case PropS3AccessKey, PropS3SecretKey:
		if val == "" {
			return fmt.Errorf("empty")
		}
		if key == PropS3AccessKey {
			e.AccessKey = val
		} else {
			e.SecretKey = val
		}
	case PropS3PathStyle:
		v, err := parsePBSBool(val)
		if err != nil {
			return err
		}
		e.PathStyle = v
	case PropS3Quirks:
		for _, q := range strings.FieldsFunc(val, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\t' }) {
			if q != QuirkSkipIfNoneMatch && q != QuirkDeleteViaDeleteObject {
				return fmt.Errorf("unknown provider quirk %q (want %s or %s)", q, QuirkSkipIfNoneMatch, QuirkDeleteViaDeleteObject)
			}
			if !e.HasQuirk(q) {
				e.Quirks = append(e.Quirks, q)
			}
		}
	default:
		if !slices.Contains(s3RateProps, key) {
			return nil // unknown: ignored, as the package doc says
		}
		if key == "put-rate-limit" {
			if _, err := strconv.ParseUint(val, 10, 64); err != nil {
				return fmt.Errorf("want a number of requests per second")
			}
		} else if _, err := ParseHumanByte(val); err != nil {
			return err
		}
		if e.RateLimits == nil {
			e.RateLimits = map[string]string{}
		}
		e.RateLimits[key] = val
	}
	return nil
}

// checkS3ID checks an endpoint id as PBS does (its SAFE_ID format, 3 to 32
// characters).
func checkS3ID(id string) error {
	if n := len(id); n < 3 || n > 32 {
		return fmt.Errorf("invalid id %q: want 3 to 32 characters, have %d", id, n)
	}
	for i, c := range []byte(id) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		default:
			return fmt.Errorf("invalid id %q: character %q at %d (want [A-Za-z0-9_][A-Za-z0-9._-]*)", id, rune(c), i)
		}
	}
	return nil
}

// checkS3Endpoint accepts an IP address, or dot-separated labels each a DNS
// label or one of the templates {{bucket}} and {{region}}, the last one a
// DNS label (PBS's S3_ENDPOINT_REGEX).
func checkS3Endpoint(v string) error {
	if net.ParseIP(v) != nil {
		return nil
	}
	labels := strings.Split(v, ".")
	for i, l := range labels {
		if (l == "{{bucket}}" || l == "{{region}}") && i < len(labels)-1 {
			continue
		}
		if !isDNSLabel(l) {
			return fmt.Errorf("want a host name (DNS labels, {{bucket}} and {{region}} allowed before the last) or an IP address, without scheme or port")
		}
	}
	return nil
}

func isDNSLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, c := range []byte(l) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// checkS3Region accepts what any PBS 4 release accepts: 3 to 32 characters
// from [-_a-z0-9], not starting with '-' (PBS 4.2 narrowed this to "auto"
// or "xx-…"; a config written earlier still reads).
func checkS3Region(v string) error {
	if n := len(v); n < 3 || n > 32 {
		return fmt.Errorf("want 3 to 32 characters")
	}
	for i, c := range []byte(v) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' && i > 0) {
			return fmt.Errorf("character %q at %d (want [_a-z0-9][-_a-z0-9]*)", rune(c), i)
		}
	}
	return nil
}

// normalizeFingerprint checks a SHA-256 certificate fingerprint, 32 hex
// pairs separated by ':', and returns it in lower case as PBS compares it.
func normalizeFingerprint(v string) (string, error) {
	pairs := strings.Split(v, ":")
	if len(pairs) != 32 {
		return "", fmt.Errorf("want a SHA-256 fingerprint: 32 hex pairs separated by ':', have %d parts", len(pairs))
	}
	for _, p := range pairs {
		if len(p) != 2 || !isHex(p[0]) || !isHex(p[1]) {
			return "", fmt.Errorf("want a SHA-256 fingerprint: 32 hex pairs separated by ':', have %q", p)
		}
	}
	return strings.ToLower(v), nil
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// parsePBSBool parses a boolean the way PBS's schema does: 1, on, yes or
// true; 0, off, no or false; in any case.
func parsePBSBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "on", "yes", "true":
		return true, nil
	case "0", "off", "no", "false":
		return false, nil
	}
	return false, fmt.Errorf("want a boolean (1/on/yes/true or 0/off/no/false)")
}

// ParseHumanByte parses a size as PBS's HumanByte does: a non-negative
// decimal number, optional white space, and an optional unit: B, K/KB, M/MB,
// G/GB, T/TB, P/PB (powers of 1000) or Ki/KiB … Pi/PiB (powers of 1024),
// letters in either case. A bare number is bytes.
func ParseHumanByte(v string) (uint64, error) {
	s := strings.TrimSpace(v)
	s = strings.TrimSuffix(strings.TrimSuffix(s, "b"), "B")
	binary := false
	if t, ok := strings.CutSuffix(s, "i"); ok {
		s, binary = t, true
	}
	mult := 1.0
	if s != "" {
		if i := strings.IndexByte("kmgtp", lower(s[len(s)-1])); i >= 0 {
			base := 1000.0
			if binary {
				base = 1024
			}
			for range i + 1 {
				mult *= base
			}
			s = s[:len(s)-1]
		} else if binary {
			return 0, fmt.Errorf("size %q: unknown unit", v)
		}
	}
	s = strings.TrimSpace(s)
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 || s == "" || strings.ContainsAny(s, "eExXpPnN") {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (B, KB, KiB, MB, MiB, …)", v)
	}
	return uint64(n * mult), nil
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// BackendS3 is the backend type of a datastore in an S3 bucket.
const BackendS3 = "s3"

// Backend is a datastore's parsed backend property (PBS's
// DatastoreBackendConfig): "type=s3,client=ID,bucket=B[,max-cache-size=SIZE]".
type Backend struct {
	Type         string // BackendFilesystem when absent
	Client       string // the s3-endpoint id in s3.cfg
	Bucket       string
	MaxCacheSize uint64 // bytes; 0 when absent
}

// ParseBackend parses d's backend property string. Keys are type (also the
// default key of a value without "key="), client, bucket and
// max-cache-size (a [ParseHumanByte] size); each may appear once. An s3
// backend needs a client and a bucket named as S3 bucket names must be (3
// to 63 characters from [a-z0-9-], starting and ending with a letter or
// digit). Errors name the datastore and the key.
func (d Datastore) ParseBackend() (Backend, error) {
	b := Backend{Type: BackendFilesystem}
	errorf := func(format string, args ...any) error {
		return fmt.Errorf("datastore %s: backend %q: %s", d.Name, d.Backend, fmt.Sprintf(format, args...))
	}
	seen := map[string]bool{}
	for _, kv := range strings.Split(d.Backend, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			k, v = "type", kv
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if seen[k] {
			return Backend{}, errorf("duplicate key %s", k)
		}
		seen[k] = true
		switch k {
		case "type":
			b.Type = v
		case "client":
			if err := checkS3ID(v); err != nil {
				return Backend{}, errorf("client: %v", err)
			}
			b.Client = v
		case "bucket":
			if err := CheckBucketName(v); err != nil {
				return Backend{}, errorf("bucket: %v", err)
			}
			b.Bucket = v
		case "max-cache-size":
			n, err := ParseHumanByte(v)
			if err != nil {
				return Backend{}, errorf("max-cache-size: %v", err)
			}
			b.MaxCacheSize = n
		default:
			return Backend{}, errorf("unknown key %s (want type, client, bucket, max-cache-size)", k)
		}
	}
	switch b.Type {
	case BackendFilesystem:
	case BackendS3:
		if b.Client == "" || b.Bucket == "" {
			return Backend{}, errorf("an s3 backend needs client=ID and bucket=NAME")
		}
	default:
		return Backend{}, errorf("unknown type %q (want %s or %s)", b.Type, BackendFilesystem, BackendS3)
	}
	return b, nil
}

// CheckBucketName checks an S3 bucket name as PBS does: 3 to 63
// characters from [a-z0-9-], starting and ending with a letter or digit,
// without the prefixes xn--, sthree-, amzn-s3-demo- and the suffixes
// --ol-s3, --x-s3.
func CheckBucketName(v string) error {
	if n := len(v); n < 3 || n > 63 {
		return fmt.Errorf("bucket name %q: want 3 to 63 characters", v)
	}
	for i, c := range []byte(v) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(v)-1) {
			return fmt.Errorf("bucket name %q: character %q at %d (want [a-z0-9][a-z0-9-]*[a-z0-9])", v, rune(c), i)
		}
	}
	for _, p := range []string{"xn--", "sthree-", "amzn-s3-demo-"} {
		if strings.HasPrefix(v, p) {
			return fmt.Errorf("bucket name %q: must not start with %s", v, p)
		}
	}
	for _, s := range []string{"--ol-s3", "--x-s3"} {
		if strings.HasSuffix(v, s) {
			return fmt.Errorf("bucket name %q: must not end with %s", v, s)
		}
	}
	return nil
}

// String formats the endpoint for a log or an error: its id, host template
// and port, never the keys.
func (e S3Endpoint) String() string {
	var b bytes.Buffer
	b.WriteString(e.ID)
	b.WriteString(" (")
	b.WriteString(e.Endpoint)
	if e.Port != 0 {
		b.WriteString(":" + strconv.Itoa(e.Port))
	}
	b.WriteString(")")
	return b.String()
}

// S3Backend returns the parsed backend of d and, for an s3 backend, its
// endpoint in c. The error names the datastore, and the s3.cfg file when
// the backend's client is not an endpoint there.
func (c *S3Config) S3Backend(d Datastore) (Backend, S3Endpoint, error) {
	b, err := d.ParseBackend()
	if err != nil {
		return Backend{}, S3Endpoint{}, err
	}
	if b.Type != BackendS3 {
		return b, S3Endpoint{}, nil
	}
	ep, ok := c.Endpoint(b.Client)
	if !ok {
		return Backend{}, S3Endpoint{}, fmt.Errorf("datastore %s: backend client %s: no s3-endpoint %s in %s", d.Name, b.Client, b.Client, c.Path)
	}
	return b, ep, nil
}
