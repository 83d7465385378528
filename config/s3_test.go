package config

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

const (
	pbsS3Config        = "../testdata/config/pbs-s3.cfg"
	pbsS3Golden        = "../testdata/config/pbs-s3.golden.json"
	pbsS3DatastoreCfg  = "../testdata/config/pbs-datastore-s3.cfg"
	pbsS3BackendGolden = "../testdata/config/pbs-datastore-s3.golden.json"
)

// TestReadS3 reads a PBS 4.2 s3.cfg and compares every endpoint, as
// parsed and normalised, with the golden file (go test -update rewrites it).
func TestReadS3(t *testing.T) {
	c, err := ReadS3(pbsS3Config)
	rtest.OK(t, err)
	got, err := json.MarshalIndent(c.Endpoints, "", "\t")
	rtest.OK(t, err)
	golden(t, pbsS3Golden, append(got, '\n'))

	rgw, ok := c.Endpoint("ceph-rgw")
	if !ok {
		t.Fatal("Endpoint(ceph-rgw) not found")
	}
	rtest.Equal(t, "quirk skip-if-none-match", true, rgw.HasQuirk(QuirkSkipIfNoneMatch))
	rtest.Equal(t, "quirk delete-via-delete-object", true, rgw.HasQuirk(QuirkDeleteViaDeleteObject))
	rtest.Equal(t, "fingerprint lower-cased", strings.ToLower(rgw.Fingerprint), rgw.Fingerprint)
	rtest.Equal(t, "rgw host", "rgw.example.lan:7480", rgw.Host("b1"))
	aws, _ := c.Endpoint("aws-frankfurt")
	rtest.Equal(t, "aws host", "pbs-backups.s3.eu-central-1.amazonaws.com", aws.Host("pbs-backups"))
	rtest.Equal(t, "aws quirks", false, aws.HasQuirk(QuirkSkipIfNoneMatch))
	lab, _ := c.Endpoint("lab_minio.2")
	rtest.Equal(t, "default region", DefaultS3Region, lab.Region)
	rtest.Equal(t, "secret with spaces", "lab secret with spaces", lab.SecretKey)
	if strings.Contains(lab.String(), lab.SecretKey) || strings.Contains(lab.String(), lab.AccessKey) {
		t.Errorf("String() %q shows a key", lab.String())
	}
	if _, ok := c.Endpoint("not-an-endpoint"); ok {
		t.Error("a sync section is not an endpoint")
	}
}

func TestReadS3Missing(t *testing.T) {
	c, err := ReadS3(filepath.Join(t.TempDir(), "s3.cfg"))
	rtest.OK(t, err)
	rtest.Equal(t, "endpoints", 0, len(c.Endpoints))
}

func TestReadS3FIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s3.cfg")
	rtest.OK(t, syscall.Mkfifo(p, 0o600))
	_, err := ReadS3(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("ReadS3(FIFO) = %v, want not a regular file naming %s", err, p)
	}
}

func TestHostTemplates(t *testing.T) {
	tests := []struct {
		name string
		give S3Endpoint
		want string
	}{
		{"plain", S3Endpoint{Endpoint: "s3.example.com", Region: "us-west-1"}, "s3.example.com"},
		{"port", S3Endpoint{Endpoint: "127.0.0.1", Port: 7070}, "127.0.0.1:7070"},
		{"ipv6", S3Endpoint{Endpoint: "::1", Port: 7070}, "[::1]:7070"},
		{"both templates", S3Endpoint{Endpoint: "{{bucket}}.s3.{{region}}.example.com", Region: "eu-2", Port: 443}, "bk1.s3.eu-2.example.com:443"},
		{"region only", S3Endpoint{Endpoint: "s3.{{region}}.example.com", Region: "auto"}, "s3.auto.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rtest.Equal(t, "Host", tt.want, tt.give.Host("bk1"))
		})
	}
}

// TestParseS3Errors: every bad input is a *ParseError naming the file, the
// line, the section and the property.
func TestParseS3Errors(t *testing.T) {
	const ok = "s3-endpoint: ep1\n\tendpoint s3.example.com\n\taccess-key a\n\tsecret-key s\n"
	tests := []struct {
		name string
		give string
		line int
		want string // in the error, besides "s3.cfg:<line>:"
	}{
		{"no endpoint", "s3-endpoint: ep1\n\taccess-key a\n\tsecret-key s\n", 1, "s3-endpoint ep1: missing property endpoint"},
		{"no access key", "s3-endpoint: ep1\n\tendpoint e.com\n\tsecret-key s\n", 1, "missing property access-key"},
		{"no secret key", "s3-endpoint: ep1\n\tendpoint e.com\n\taccess-key a\n", 1, "missing property secret-key"},
		{"short id", "s3-endpoint: e1\n\tendpoint e.com\n", 1, `invalid id "e1"`},
		{"bad id", "s3-endpoint: -ep\n\tendpoint e.com\n", 1, `invalid id "-ep"`},
		{"duplicate id", ok + "\ns3-endpoint: ep1\n\tendpoint b.com\n\taccess-key a\n\tsecret-key s\n", 6, "duplicate s3-endpoint (first on line 1)"},
		{"scheme in endpoint", "s3-endpoint: ep1\n\tendpoint https://e.com\n", 2, `endpoint "https://e.com": want a host name`},
		{"port in endpoint", "s3-endpoint: ep1\n\tendpoint e.com:9000\n", 2, `endpoint "e.com:9000"`},
		{"template last", "s3-endpoint: ep1\n\tendpoint s3.{{bucket}}\n", 2, `endpoint "s3.{{bucket}}"`},
		{"bad port", ok + "\tport 70000\n", 5, `port "70000": want a port number`},
		{"port zero", ok + "\tport 0\n", 5, `port "0"`},
		{"bad region", ok + "\tregion EU-West\n", 5, `region "EU-West"`},
		{"short fingerprint", ok + "\tfingerprint aa:bb\n", 5, `fingerprint "aa:bb": want a SHA-256 fingerprint`},
		{"non-hex fingerprint", ok + "\tfingerprint " + strings.Repeat("zz:", 31) + "zz\n", 5, "fingerprint"},
		{"bad bool", ok + "\tpath-style maybe\n", 5, `path-style "maybe": want a boolean`},
		{"unknown quirk", ok + "\tprovider-quirks skip-if-none-match-header,no-such-quirk\n", 5, `unknown provider quirk "no-such-quirk"`},
		{"bad rate", ok + "\trate-in fast\n", 5, `rate-in "fast"`},
		{"bad put rate", ok + "\tput-rate-limit -1\n", 5, `put-rate-limit "-1"`},
		{"duplicate key", ok + "\tregion eu-west-1\n\tregion eu-west-2\n", 6, "duplicate property region (first on line 5)"},
		{"empty access key", "s3-endpoint: ep1\n\tendpoint e.com\n\taccess-key\n", 3, "access-key \"\": empty"},
		{"syntax", "s3-endpoint: ep1\nendpoint e.com\n", 2, "syntax error in section s3-endpoint: ep1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseS3(strings.NewReader(tt.give), "s3.cfg")
			pe, isPE := errors.AsType[*ParseError](err)
			if !isPE {
				t.Fatalf("ParseS3 = %v, want a *ParseError", err)
			}
			if pe.Path != "s3.cfg" || pe.Line != tt.line || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseS3 = %q (line %d), want s3.cfg:%d: … %s", err, pe.Line, tt.line, tt.want)
			}
		})
	}
}

func TestParseS3Quirks(t *testing.T) {
	c, err := ParseS3(strings.NewReader("s3-endpoint: ep1\n\tendpoint e.com\n\taccess-key a\n\tsecret-key s\n"+
		"\tprovider-quirks delete-objects-via-delete-object\n\tprovider-quirks skip-if-none-match-header, delete-objects-via-delete-object\n"), "s3.cfg")
	rtest.OK(t, err)
	rtest.Equal(t, "quirks", []string{QuirkDeleteViaDeleteObject, QuirkSkipIfNoneMatch}, c.Endpoints[0].Quirks)
}

func TestParseHumanByte(t *testing.T) {
	tests := []struct {
		give string
		want uint64
		err  bool
	}{
		{"0", 0, false},
		{"1024", 1024, false},
		{"100B", 100, false},
		{"1K", 1000, false},
		{"1KB", 1000, false},
		{"1KiB", 1024, false},
		{"1ki", 1024, false},
		{"1.5 GiB", 1536 << 20, false},
		{"64GiB", 64 << 30, false},
		{"2T", 2e12, false},
		{"1PiB", 1 << 50, false},
		{"", 0, true},
		{"GiB", 0, true},
		{"-1", 0, true},
		{"1e9", 0, true},
		{"inf", 0, true},
		{"5i", 0, true},
		{"12 XB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseHumanByte(tt.give)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseHumanByte(%q) = %d, %v; want %d, error %v", tt.give, got, err, tt.want, tt.err)
		}
	}
}

// TestParseBackend parses the backend lines of a PBS 4.2 datastore.cfg
// against the golden file, then bad backend strings.
func TestParseBackend(t *testing.T) {
	c, err := Read(pbsS3DatastoreCfg)
	rtest.OK(t, err)
	type row struct {
		Store   string
		Backend Backend
	}
	var rows []row
	for _, d := range c.Datastores() {
		b, err := d.ParseBackend()
		rtest.OK(t, err)
		rows = append(rows, row{d.Name, b})
	}
	got, err := json.MarshalIndent(rows, "", "\t")
	rtest.OK(t, err)
	golden(t, pbsS3BackendGolden, append(got, '\n'))

	tests := []struct {
		name, give, want string
	}{
		{"unknown type", "type=nfs", `unknown type "nfs"`},
		{"lone unknown", "ceph", `unknown type "ceph"`},
		{"s3 without bucket", "type=s3,client=c1x", "needs client=ID and bucket=NAME"},
		{"s3 without client", "type=s3,bucket=b12", "needs client=ID and bucket=NAME"},
		{"bad bucket", "type=s3,client=c1x,bucket=My_Bucket", `bucket: bucket name "My_Bucket"`},
		{"short bucket", "type=s3,client=c1x,bucket=ab", "want 3 to 63 characters"},
		{"forbidden prefix", "type=s3,client=c1x,bucket=xn--abc", "must not start with xn--"},
		{"forbidden suffix", "type=s3,client=c1x,bucket=abc--x-s3", "must not end with --x-s3"},
		{"bad client", "type=s3,client=c1,bucket=b12", `client: invalid id "c1"`},
		{"bad cache size", "type=s3,client=c1x,bucket=b12,max-cache-size=lots", `max-cache-size: size "lots"`},
		{"unknown key", "type=s3,client=c1x,bucket=b12,region=x", "unknown key region"},
		{"duplicate key", "type=s3,client=c1x,bucket=b12,bucket=b13", "duplicate key bucket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Datastore{Name: "st1", Path: "/p", Backend: tt.give}
			_, err := d.ParseBackend()
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "datastore st1") || !strings.Contains(err.Error(), tt.give) {
				t.Fatalf("ParseBackend(%q) = %v, want an error naming st1, the backend and %q", tt.give, err, tt.want)
			}
		})
	}
	b, err := Datastore{Name: "st1", Path: "/p", Backend: "s3, client=c1x , bucket=b12"}.ParseBackend()
	rtest.OK(t, err)
	rtest.Equal(t, "lone type value", Backend{Type: BackendS3, Client: "c1x", Bucket: "b12"}, b)
	b, err = Datastore{Name: "st1", Path: "/p"}.ParseBackend()
	rtest.OK(t, err)
	rtest.Equal(t, "no backend", Backend{Type: BackendFilesystem}, b)
}

// FuzzParseS3: any input parses or fails with an error naming the file,
// and what parses is normalised: a valid id, an endpoint and both keys.
// go test -run '^$' -fuzz FuzzParseS3 -fuzztime 60s ./config
func FuzzParseS3(f *testing.F) {
	if b, err := os.ReadFile(pbsS3Config); err == nil {
		f.Add(b)
	}
	f.Add([]byte("s3-endpoint: ep1\n\tendpoint {{bucket}}.e.com\n\taccess-key a\n\tsecret-key s\n\tport 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseS3(strings.NewReader(string(b)), "fuzz.cfg")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.cfg:") {
				t.Errorf("error %q does not name the file", err)
			}
			return
		}
		for _, e := range c.Endpoints {
			if checkS3ID(e.ID) != nil || e.Endpoint == "" || e.AccessKey == "" || e.SecretKey == "" || e.Region == "" {
				t.Fatalf("parsed endpoint %+v", e)
			}
		}
	})
}

func TestS3Backend(t *testing.T) {
	s3c, err := ReadS3(pbsS3Config)
	rtest.OK(t, err)
	ds, err := Read(pbsS3DatastoreCfg)
	rtest.OK(t, err)
	d, _ := ds.Datastore("s3store")
	b, ep, err := s3c.S3Backend(d)
	rtest.OK(t, err)
	rtest.Equal(t, "bucket", "pbs-backups", b.Bucket)
	rtest.Equal(t, "endpoint", "aws-frankfurt", ep.ID)
	d, _ = ds.Datastore("local")
	b, ep, err = s3c.S3Backend(d)
	rtest.OK(t, err)
	rtest.Equal(t, "local backend", BackendFilesystem, b.Type)
	rtest.Equal(t, "local endpoint", "", ep.ID)
	_, _, err = s3c.S3Backend(Datastore{Name: "st1", Path: "/p", Backend: "type=s3,client=nowhere,bucket=b12"})
	if err == nil || !strings.Contains(err.Error(), "datastore st1") || !strings.Contains(err.Error(), "no s3-endpoint nowhere in "+pbsS3Config) {
		t.Fatalf("unknown client: %v, want an error naming st1, the client and the file", err)
	}
}
