package tuning

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"chunkgc/internal/testkit/rtest"
)

// TestDefaults pins the defaults as the README and SPEC state them, in the
// property-string units an operator writes (minutes, seconds, hours), so a
// unit change is caught as well as a value change.
func TestDefaults(t *testing.T) {
	const documented = "gc-atime-safety-check=true,gc-atime-cutoff=1445,gc-cache-capacity=1048576,sync-level=filesystem," +
		"chunk-order=inode,gc-concurrency=0,gc-max-clock-skew=30,gc-brake-percent=50,gc-brake-min-chunks=1000," +
		"gc-journal-keep=20,gc-quarantine-hours=0,gc-resume-max-age=168,gc-s3-list-ranges=16"
	p, err := Parse(documented)
	rtest.OK(t, err)
	rtest.Equal(t, "keys in the documented defaults", Keys(), p.keys())
	rtest.Equal(t, "Defaults", p.Apply(Tuning{}), Defaults())
	rtest.Equal(t, "empty Props applied to Defaults", Defaults(), Props{}.Apply(Defaults()))
}

func TestKeys(t *testing.T) {
	rtest.Equal(t, "Keys", []string{"gc-atime-safety-check", "gc-atime-cutoff", "gc-cache-capacity", "sync-level", "chunk-order", "gc-concurrency", "gc-max-clock-skew",
		"gc-brake-percent", "gc-brake-min-chunks", "gc-journal-keep", "gc-quarantine-hours", "gc-resume-max-age", "gc-s3-list-ranges"}, Keys())
	k := Keys()
	k[0] = "changed"
	if Keys()[0] != KeyAtimeSafetyCheck {
		t.Error("Keys returns a shared slice")
	}
}

func TestEnumStrings(t *testing.T) {
	tests := []struct {
		give fmtStringer
		want string
	}{
		{SyncNone, "none"},
		{SyncFilesystem, "filesystem"},
		{SyncFile, "file"},
		{SyncLevel(9), "SyncLevel(9)"},
		{OrderNone, "none"},
		{OrderInode, "inode"},
		{ChunkOrder(7), "ChunkOrder(7)"},
	}
	for _, tt := range tests {
		if got := tt.give.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.give, got, tt.want)
		}
	}
}

type fmtStringer interface{ String() string }

// TestParseGood covers every key with good values, every boolean spelling
// and both ends of every range; want is the Tuning after Apply over
// Defaults and wantString the canonical form.
func TestParseGood(t *testing.T) {
	d := Defaults()
	with := func(f func(*Tuning)) Tuning {
		t := Defaults()
		f(&t)
		return t
	}
	tests := []struct {
		give       string
		want       Tuning
		wantString string
	}{
		{"", d, ""},
		{"   ", d, ""},

		{"gc-atime-safety-check=1", with(func(t *Tuning) { t.AtimeSafetyCheck = true }), "gc-atime-safety-check=true"},
		{"gc-atime-safety-check=true", d, "gc-atime-safety-check=true"},
		{"gc-atime-safety-check=TRUE", d, "gc-atime-safety-check=true"},
		{"gc-atime-safety-check=yes", d, "gc-atime-safety-check=true"},
		{"gc-atime-safety-check=Yes", d, "gc-atime-safety-check=true"},
		{"gc-atime-safety-check=on", d, "gc-atime-safety-check=true"},
		{"gc-atime-safety-check=ON", d, "gc-atime-safety-check=true"},
		{"gc-atime-safety-check=0", with(func(t *Tuning) { t.AtimeSafetyCheck = false }), "gc-atime-safety-check=false"},
		{"gc-atime-safety-check=false", with(func(t *Tuning) { t.AtimeSafetyCheck = false }), "gc-atime-safety-check=false"},
		{"gc-atime-safety-check=False", with(func(t *Tuning) { t.AtimeSafetyCheck = false }), "gc-atime-safety-check=false"},
		{"gc-atime-safety-check=no", with(func(t *Tuning) { t.AtimeSafetyCheck = false }), "gc-atime-safety-check=false"},
		{"gc-atime-safety-check=NO", with(func(t *Tuning) { t.AtimeSafetyCheck = false }), "gc-atime-safety-check=false"},
		{"gc-atime-safety-check=off", with(func(t *Tuning) { t.AtimeSafetyCheck = false }), "gc-atime-safety-check=false"},
		{"gc-atime-safety-check=oFF", with(func(t *Tuning) { t.AtimeSafetyCheck = false }), "gc-atime-safety-check=false"},

		{"gc-atime-cutoff=1", with(func(t *Tuning) { t.AtimeCutoff = time.Minute }), "gc-atime-cutoff=1"},
		{"gc-atime-cutoff=60", with(func(t *Tuning) { t.AtimeCutoff = time.Hour }), "gc-atime-cutoff=60"},
		{"gc-atime-cutoff=0060", with(func(t *Tuning) { t.AtimeCutoff = time.Hour }), "gc-atime-cutoff=60"},
		{"gc-atime-cutoff=2880", with(func(t *Tuning) { t.AtimeCutoff = 48 * time.Hour }), "gc-atime-cutoff=2880"},

		{"gc-cache-capacity=0", with(func(t *Tuning) { t.CacheCapacity = 0 }), "gc-cache-capacity=0"},
		{"gc-cache-capacity=-0", with(func(t *Tuning) { t.CacheCapacity = 0 }), "gc-cache-capacity=0"},
		{"gc-cache-capacity=1024", with(func(t *Tuning) { t.CacheCapacity = 1024 }), "gc-cache-capacity=1024"},
		{"gc-cache-capacity=8388608", with(func(t *Tuning) { t.CacheCapacity = 8388608 }), "gc-cache-capacity=8388608"},

		{"sync-level=none", with(func(t *Tuning) { t.SyncLevel = SyncNone }), "sync-level=none"},
		{"sync-level=filesystem", d, "sync-level=filesystem"},
		{"sync-level=file", with(func(t *Tuning) { t.SyncLevel = SyncFile }), "sync-level=file"},

		{"chunk-order=none", with(func(t *Tuning) { t.ChunkOrder = OrderNone }), "chunk-order=none"},
		{"chunk-order=inode", d, "chunk-order=inode"},

		{"gc-concurrency=0", d, "gc-concurrency=0"},
		{"gc-concurrency=1", with(func(t *Tuning) { t.Concurrency = 1 }), "gc-concurrency=1"},
		{"gc-concurrency=256", with(func(t *Tuning) { t.Concurrency = 256 }), "gc-concurrency=256"},
		{"gc-max-clock-skew=0", with(func(t *Tuning) { t.MaxClockSkew = 0 }), "gc-max-clock-skew=0"},
		{"gc-max-clock-skew=30", d, "gc-max-clock-skew=30"},
		{"gc-max-clock-skew=900", with(func(t *Tuning) { t.MaxClockSkew = 15 * time.Minute }), "gc-max-clock-skew=900"},
		{"gc-max-clock-skew=3600", with(func(t *Tuning) { t.MaxClockSkew = time.Hour }), "gc-max-clock-skew=3600"},
		{"gc-brake-percent=0", with(func(t *Tuning) { t.BrakePercent = 0 }), "gc-brake-percent=0"},
		{"gc-brake-percent=100", with(func(t *Tuning) { t.BrakePercent = 100 }), "gc-brake-percent=100"},
		{"gc-brake-min-chunks=0", with(func(t *Tuning) { t.BrakeMinChunks = 0 }), "gc-brake-min-chunks=0"},
		{"gc-journal-keep=0", with(func(t *Tuning) { t.JournalKeep = 0 }), "gc-journal-keep=0"},
		{"gc-quarantine-hours=168", with(func(t *Tuning) { t.QuarantineHours = 168 }), "gc-quarantine-hours=168"},
		{"gc-quarantine-hours=8760", with(func(t *Tuning) { t.QuarantineHours = 8760 }), "gc-quarantine-hours=8760"},
		{"gc-resume-max-age=0", with(func(t *Tuning) { t.ResumeMaxAge = 0 }), "gc-resume-max-age=0"},
		{"gc-resume-max-age=720", with(func(t *Tuning) { t.ResumeMaxAge = 720 * time.Hour }), "gc-resume-max-age=720"},
		{"gc-s3-list-ranges=1", with(func(t *Tuning) { t.S3ListRanges = 1 }), "gc-s3-list-ranges=1"},
		{"gc-s3-list-ranges=7", with(func(t *Tuning) { t.S3ListRanges = 7 }), "gc-s3-list-ranges=7"},
		{"gc-s3-list-ranges=16", d, "gc-s3-list-ranges=16"},

		{
			"gc-atime-safety-check=0,gc-atime-cutoff=60",
			with(func(t *Tuning) { t.AtimeSafetyCheck = false; t.AtimeCutoff = time.Hour }),
			"gc-atime-safety-check=false,gc-atime-cutoff=60",
		},
		{
			" sync-level = file ,\tchunk-order=none , gc-concurrency=8 ",
			with(func(t *Tuning) { t.SyncLevel = SyncFile; t.ChunkOrder = OrderNone; t.Concurrency = 8 }),
			"sync-level=file,chunk-order=none,gc-concurrency=8",
		},
		// A repeated key takes its last value at its first position.
		{
			"gc-atime-cutoff=10,sync-level=none,gc-atime-cutoff=20",
			with(func(t *Tuning) { t.AtimeCutoff = 20 * time.Minute; t.SyncLevel = SyncNone }),
			"gc-atime-cutoff=20,sync-level=none",
		},
		// PBS writes its keys sorted; that order is kept.
		{
			"chunk-order=none,gc-atime-cutoff=1445,gc-atime-safety-check=1,gc-cache-capacity=524288,sync-level=file",
			with(func(t *Tuning) { t.ChunkOrder = OrderNone; t.CacheCapacity = 524288; t.SyncLevel = SyncFile }),
			"chunk-order=none,gc-atime-cutoff=1445,gc-atime-safety-check=true,gc-cache-capacity=524288,sync-level=file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			p, err := Parse(tt.give)
			rtest.OK(t, err)
			rtest.Equal(t, "applied tuning", tt.want, p.Apply(Defaults()))
			rtest.Equal(t, "String", tt.wantString, p.String())
			q, err := Parse(p.String())
			rtest.OK(t, err)
			rtest.Equal(t, "Props parsed from String", p, q)
		})
	}
}

// TestParseBad covers bad values, both ends out of range and malformed
// strings. wantIn are substrings of the message: the key, and the range or
// the allowed values.
func TestParseBad(t *testing.T) {
	type keyErr = KeyError
	tests := []struct {
		give     string
		wantKey  *keyErr // nil for a *SyntaxError
		wantItem string  // SyntaxError.Item
		wantMsg  string  // the whole message
		wantIn   []string
	}{
		{give: "=", wantItem: "=", wantIn: []string{`"="`, "missing key"}},
		{give: "=5", wantItem: "=5", wantIn: []string{"missing key"}},
		{give: "a", wantItem: "a", wantIn: []string{`tuning "a"`, "missing '='"}},
		{give: "gc-atime-cutoff", wantItem: "gc-atime-cutoff", wantIn: []string{"gc-atime-cutoff", "missing '='"}},
		{give: ",,", wantItem: ",,", wantIn: []string{`",,"`, "empty item"}},
		{give: ",", wantItem: ",", wantIn: []string{"empty item"}},
		{give: "gc-atime-cutoff=60,", wantItem: "gc-atime-cutoff=60,", wantIn: []string{"empty item"}},
		{give: "gc-atime-cutoff=60,,sync-level=file", wantItem: "gc-atime-cutoff=60,,sync-level=file", wantIn: []string{"empty item"}},
		{give: "gc-atime-cutoff=60 sync-level=file", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "60 sync-level=file"}, wantIn: []string{"not a decimal integer"}},

		{
			give: "a=", wantKey: &keyErr{Key: "a", Value: ""},
			wantMsg: `tuning a=: unknown key (known keys: gc-atime-safety-check, gc-atime-cutoff, gc-cache-capacity, sync-level, chunk-order, gc-concurrency, gc-max-clock-skew, gc-brake-percent, gc-brake-min-chunks, gc-journal-keep, gc-quarantine-hours, gc-resume-max-age, gc-s3-list-ranges)`,
		},
		{give: "foo=1", wantKey: &keyErr{Key: "foo", Value: "1"}, wantIn: []string{"tuning foo=1", "unknown key", "gc-atime-cutoff", "gc-concurrency"}},
		{give: "GC-ATIME-CUTOFF=60", wantKey: &keyErr{Key: "GC-ATIME-CUTOFF", Value: "60"}, wantIn: []string{"unknown key"}},
		{give: "gc-atime-cutoff=60,foo=1", wantKey: &keyErr{Key: "foo", Value: "1"}, wantIn: []string{"unknown key"}},

		{give: "gc-atime-safety-check=", wantKey: &keyErr{Key: "gc-atime-safety-check", Value: ""}, wantIn: []string{"tuning gc-atime-safety-check=: not a boolean", "1/0, true/false, yes/no or on/off"}},
		{give: "gc-atime-safety-check=2", wantKey: &keyErr{Key: "gc-atime-safety-check", Value: "2"}, wantIn: []string{"not a boolean"}},
		{give: "gc-atime-safety-check=y", wantKey: &keyErr{Key: "gc-atime-safety-check", Value: "y"}, wantIn: []string{"not a boolean"}},
		{give: "gc-atime-safety-check=enabled", wantKey: &keyErr{Key: "gc-atime-safety-check", Value: "enabled"}, wantIn: []string{"not a boolean"}},

		{give: "gc-atime-cutoff=abc", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "abc"}, wantMsg: "tuning gc-atime-cutoff=abc: not a decimal integer (want 1..2880 (minutes))"},
		{give: "gc-atime-cutoff=", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: ""}, wantIn: []string{"not a decimal integer", "1..2880"}},
		{give: "gc-atime-cutoff=0", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "0"}, wantMsg: "tuning gc-atime-cutoff=0: out of range 1..2880 (minutes)"},
		{give: "gc-atime-cutoff=-1", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "-1"}, wantMsg: "tuning gc-atime-cutoff=-1: out of range 1..2880 (minutes)"},
		{give: "gc-atime-cutoff=2881", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "2881"}, wantMsg: "tuning gc-atime-cutoff=2881: out of range 1..2880 (minutes)"},
		{give: "gc-atime-cutoff=99999999999999999999", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "99999999999999999999"}, wantIn: []string{"out of range 1..2880"}},
		{give: "gc-atime-cutoff=-99999999999999999999", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "-99999999999999999999"}, wantIn: []string{"out of range 1..2880"}},
		{give: "gc-atime-cutoff=+60", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "+60"}, wantIn: []string{"not a decimal integer"}},
		{give: "gc-atime-cutoff=0x10", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "0x10"}, wantIn: []string{"not a decimal integer"}},
		{give: "gc-atime-cutoff=1_000", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "1_000"}, wantIn: []string{"not a decimal integer"}},
		{give: "gc-atime-cutoff=1.5", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "1.5"}, wantIn: []string{"not a decimal integer"}},
		{give: "gc-atime-cutoff=60m", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "60m"}, wantIn: []string{"not a decimal integer"}},
		{give: "gc-atime-cutoff=-", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "-"}, wantIn: []string{"not a decimal integer"}},
		{give: "gc-atime-cutoff=６０", wantKey: &keyErr{Key: "gc-atime-cutoff", Value: "６０"}, wantIn: []string{"not a decimal integer"}},

		{give: "gc-cache-capacity=-1", wantKey: &keyErr{Key: "gc-cache-capacity", Value: "-1"}, wantMsg: "tuning gc-cache-capacity=-1: out of range 0..8388608 (entries)"},
		{give: "gc-cache-capacity=8388609", wantKey: &keyErr{Key: "gc-cache-capacity", Value: "8388609"}, wantMsg: "tuning gc-cache-capacity=8388609: out of range 0..8388608 (entries)"},
		{give: "gc-cache-capacity=1M", wantKey: &keyErr{Key: "gc-cache-capacity", Value: "1M"}, wantIn: []string{"not a decimal integer", "0..8388608"}},

		{give: "gc-concurrency=-1", wantKey: &keyErr{Key: "gc-concurrency", Value: "-1"}, wantMsg: "tuning gc-concurrency=-1: out of range 0..256 (workers, 0 = automatic)"},
		{give: "gc-concurrency=257", wantKey: &keyErr{Key: "gc-concurrency", Value: "257"}, wantMsg: "tuning gc-concurrency=257: out of range 0..256 (workers, 0 = automatic)"},
		{give: "gc-concurrency=auto", wantKey: &keyErr{Key: "gc-concurrency", Value: "auto"}, wantIn: []string{"not a decimal integer", "0..256"}},
		{give: "gc-brake-percent=101", wantKey: &keyErr{Key: "gc-brake-percent", Value: "101"}, wantMsg: "tuning gc-brake-percent=101: out of range 0..100 (percent, 0 = off)"},
		{give: "gc-resume-max-age=721", wantKey: &keyErr{Key: "gc-resume-max-age", Value: "721"}, wantMsg: "tuning gc-resume-max-age=721: out of range 0..720 (hours, 0 = never resume)"},
		{give: "gc-journal-keep=-1", wantKey: &keyErr{Key: "gc-journal-keep", Value: "-1"}, wantMsg: "tuning gc-journal-keep=-1: out of range 0..10000 (runs, 0 = no journal)"},
		{give: "gc-quarantine-hours=8761", wantKey: &keyErr{Key: "gc-quarantine-hours", Value: "8761"}, wantMsg: "tuning gc-quarantine-hours=8761: out of range 0..8760 (hours, 0 = off)"},
		{give: "gc-max-clock-skew=-1", wantKey: &keyErr{Key: "gc-max-clock-skew", Value: "-1"}, wantMsg: "tuning gc-max-clock-skew=-1: out of range 0..3600 (seconds)"},
		{give: "gc-max-clock-skew=3601", wantKey: &keyErr{Key: "gc-max-clock-skew", Value: "3601"}, wantMsg: "tuning gc-max-clock-skew=3601: out of range 0..3600 (seconds)"},
		{give: "gc-s3-list-ranges=0", wantKey: &keyErr{Key: "gc-s3-list-ranges", Value: "0"}, wantMsg: "tuning gc-s3-list-ranges=0: out of range 1..16 (key ranges, 1 = one listing as PBS)"},
		{give: "gc-s3-list-ranges=17", wantKey: &keyErr{Key: "gc-s3-list-ranges", Value: "17"}, wantMsg: "tuning gc-s3-list-ranges=17: out of range 1..16 (key ranges, 1 = one listing as PBS)"},
		{give: "gc-s3-list-ranges=auto", wantKey: &keyErr{Key: "gc-s3-list-ranges", Value: "auto"}, wantIn: []string{"not a decimal integer", "1..16"}},
		{give: "gc-max-clock-skew=30s", wantKey: &keyErr{Key: "gc-max-clock-skew", Value: "30s"}, wantIn: []string{"not a decimal integer", "0..3600 (seconds)"}},

		{give: "sync-level=", wantKey: &keyErr{Key: "sync-level", Value: ""}, wantIn: []string{"unknown value", "none, filesystem, file"}},
		{give: "sync-level=fsync", wantKey: &keyErr{Key: "sync-level", Value: "fsync"}, wantMsg: "tuning sync-level=fsync: unknown value (want one of none, filesystem, file)"},
		{give: "sync-level=FILE", wantKey: &keyErr{Key: "sync-level", Value: "FILE"}, wantIn: []string{"unknown value"}},
		{give: "chunk-order=atime", wantKey: &keyErr{Key: "chunk-order", Value: "atime"}, wantMsg: "tuning chunk-order=atime: unknown value (want one of none, inode)"},
		{give: "chunk-order=1", wantKey: &keyErr{Key: "chunk-order", Value: "1"}, wantIn: []string{"none, inode"}},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			p, err := Parse(tt.give)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want an error", tt.give, p)
			}
			rtest.Equal(t, "Props on error", Props{}, p)
			msg := err.Error()
			if !strings.HasPrefix(msg, "tuning ") {
				t.Errorf("message %q does not start with \"tuning \"", msg)
			}
			if tt.wantMsg != "" && msg != tt.wantMsg {
				t.Errorf("message\nwant %s\ngot  %s", tt.wantMsg, msg)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q does not contain %q", msg, s)
				}
			}
			if tt.wantKey != nil {
				ke, isKE := errors.AsType[*KeyError](err)
				if !isKE {
					t.Fatalf("error %T %v, want *KeyError", err, err)
				}
				rtest.Equal(t, "KeyError.Key", tt.wantKey.Key, ke.Key)
				rtest.Equal(t, "KeyError.Value", tt.wantKey.Value, ke.Value)
				if !strings.Contains(msg, ke.Key) {
					t.Errorf("message %q does not name key %q", msg, ke.Key)
				}
				return
			}
			se, isSE := errors.AsType[*SyntaxError](err)
			if !isSE {
				t.Fatalf("error %T %v, want *SyntaxError", err, err)
			}
			rtest.Equal(t, "SyntaxError.Item", tt.wantItem, se.Item)
		})
	}
}

// TestParseRangeInMessage checks that every numeric key's errors name the
// key and its range, at both ends.
func TestParseRangeInMessage(t *testing.T) {
	for _, sp := range specs {
		if sp.kind != kindInt {
			continue
		}
		rng := strings.Join([]string{itoa(sp.min), itoa(sp.max)}, "..")
		for _, v := range []int64{sp.min - 1, sp.max + 1} {
			_, err := Parse(sp.key + "=" + itoa(v))
			if err == nil || !strings.Contains(err.Error(), sp.key) || !strings.Contains(err.Error(), rng) {
				t.Errorf("%s=%d: error %v, want one naming the key and %s", sp.key, v, err, rng)
			}
		}
		for _, v := range []int64{sp.min, sp.max} {
			if _, err := Parse(sp.key + "=" + itoa(v)); err != nil {
				t.Errorf("%s=%d: %v", sp.key, v, err)
			}
		}
	}
}

func itoa(n int64) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + itoa(n%10)
}

func mustParse(t *testing.T, s string) Props {
	t.Helper()
	p, err := Parse(s)
	rtest.OK(t, err)
	return p
}

// TestPrecedence checks defaults < config < command line, per key.
func TestPrecedence(t *testing.T) {
	tests := []struct {
		name   string
		config string
		cli    string
		want   func(*Tuning)
	}{
		{"defaults", "", "", func(*Tuning) {}},
		{"config only", "gc-atime-cutoff=60,sync-level=file", "", func(t *Tuning) {
			t.AtimeCutoff = time.Hour
			t.SyncLevel = SyncFile
		}},
		{"cli only", "", "gc-atime-safety-check=off", func(t *Tuning) { t.AtimeSafetyCheck = false }},
		{"cli wins per key", "gc-atime-cutoff=60,sync-level=file", "gc-atime-cutoff=120", func(t *Tuning) {
			t.AtimeCutoff = 2 * time.Hour
			t.SyncLevel = SyncFile // from config: cli does not name it
		}},
		{"disjoint keys", "gc-cache-capacity=0", "chunk-order=none,gc-concurrency=3", func(t *Tuning) {
			t.CacheCapacity = 0
			t.ChunkOrder = OrderNone
			t.Concurrency = 3
		}},
		{"cli sets the default back", "gc-atime-safety-check=0,sync-level=none", "gc-atime-safety-check=1,sync-level=filesystem", func(*Tuning) {}},
		{"every key both", "gc-atime-safety-check=0,gc-atime-cutoff=1,gc-cache-capacity=1,sync-level=none,chunk-order=none,gc-concurrency=1,gc-max-clock-skew=0",
			"gc-atime-safety-check=1,gc-atime-cutoff=2880,gc-cache-capacity=8388608,sync-level=file,chunk-order=inode,gc-concurrency=256,gc-max-clock-skew=3600",
			func(t *Tuning) {
				t.AtimeCutoff = 48 * time.Hour
				t.CacheCapacity = 8388608
				t.SyncLevel = SyncFile
				t.Concurrency = 256
				t.MaxClockSkew = time.Hour
			}},
		{"clock skew bound from config, cli wins", "gc-max-clock-skew=900", "gc-max-clock-skew=60", func(t *Tuning) {
			t.MaxClockSkew = time.Minute
		}},
		{"clock skew bound from config only", "gc-max-clock-skew=900", "gc-concurrency=2", func(t *Tuning) {
			t.MaxClockSkew = 15 * time.Minute
			t.Concurrency = 2
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := Defaults()
			tt.want(&want)
			got := mustParse(t, tt.config).Merge(mustParse(t, tt.cli)).Apply(Defaults())
			rtest.Equal(t, "config merged with cli", want, got)
			// The same through the flag: config first, then --tuning.
			p := mustParse(t, tt.config)
			rtest.OK(t, p.Set(tt.cli))
			rtest.Equal(t, "config with cli set through the flag", want, p.Apply(Defaults()))
		})
	}
}

func TestMerge(t *testing.T) {
	p := mustParse(t, "sync-level=none,gc-atime-cutoff=10")
	q := mustParse(t, "gc-concurrency=2,gc-atime-cutoff=20")
	m := p.Merge(q)
	rtest.Equal(t, "merged", "sync-level=none,gc-atime-cutoff=20,gc-concurrency=2", m.String())
	// Neither operand changes.
	rtest.Equal(t, "left operand after Merge", "sync-level=none,gc-atime-cutoff=10", p.String())
	rtest.Equal(t, "right operand after Merge", "gc-concurrency=2,gc-atime-cutoff=20", q.String())
	m2 := m.Merge(mustParse(t, "sync-level=file"))
	rtest.Equal(t, "merged after a second Merge", "sync-level=none,gc-atime-cutoff=20,gc-concurrency=2", m.String())
	rtest.Equal(t, "merged twice", "sync-level=file,gc-atime-cutoff=20,gc-concurrency=2", m2.String())
	rtest.Equal(t, "empty merged with empty", Props{}, Props{}.Merge(Props{}))
	rtest.Equal(t, "p merged with empty", p, p.Merge(Props{}))
	rtest.Equal(t, "empty merged with p", p, Props{}.Merge(p))
}

func TestHasGetLen(t *testing.T) {
	p := mustParse(t, "gc-atime-safety-check=No,gc-atime-cutoff=007")
	for _, key := range Keys() {
		want := key == KeyAtimeSafetyCheck || key == KeyAtimeCutoff
		if p.Has(key) != want {
			t.Errorf("Has(%q) = %v, want %v", key, !want, want)
		}
	}
	if p.Has("foo") {
		t.Error(`Has("foo") = true`)
	}
	v, found := p.Get(KeyAtimeSafetyCheck)
	rtest.Equal(t, "Get gc-atime-safety-check", "false", v)
	rtest.Equal(t, "gc-atime-safety-check found", true, found)
	v, _ = p.Get(KeyAtimeCutoff)
	rtest.Equal(t, "Get gc-atime-cutoff", "7", v)
	_, found = p.Get(KeySyncLevel)
	rtest.Equal(t, "sync-level found", false, found)
	rtest.Equal(t, "Len", 2, p.Len())
	rtest.Equal(t, "Len of empty Props", 0, Props{}.Len())
}

// TestFlagRepeated checks that --tuning may be repeated and later values
// win per key, and that a bad value is a flag error naming the key.
func TestFlagRepeated(t *testing.T) {
	var p Props
	fs := flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&p, "tuning", "tuning property string")
	rtest.OK(t, fs.Parse([]string{
		"--tuning", "gc-atime-cutoff=60,sync-level=none",
		"--tuning", "gc-atime-safety-check=0",
		"--tuning=gc-atime-cutoff=90",
		"STORE",
	}))
	rtest.Equal(t, "Props after repeated --tuning", "gc-atime-cutoff=90,sync-level=none,gc-atime-safety-check=false", p.String())
	rtest.Equal(t, "arguments", []string{"STORE"}, fs.Args())

	fs = flag.NewFlagSet("gc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var q Props
	fs.Var(&q, "tuning", "")
	err := fs.Parse([]string{"--tuning", "gc-atime-cutoff=60", "--tuning", "gc-atime-cutoff=0"})
	if err == nil || !strings.Contains(err.Error(), "gc-atime-cutoff=0: out of range 1..2880") {
		t.Errorf("error %v, want one naming gc-atime-cutoff and its range", err)
	}
	// A failed Set leaves the earlier value.
	rtest.Equal(t, "Props after a failed Set", "gc-atime-cutoff=60", q.String())
}

func TestSetEmpty(t *testing.T) {
	p := mustParse(t, "sync-level=file")
	rtest.OK(t, p.Set(""))
	rtest.Equal(t, "Props after Set of the empty string", "sync-level=file", p.String())
}

func TestStringRoundTrip(t *testing.T) {
	for _, s := range []string{
		"",
		"gc-atime-safety-check=on",
		"gc-concurrency=0,chunk-order=inode,sync-level=none,gc-cache-capacity=0000,gc-atime-cutoff=2880,gc-atime-safety-check=OFF",
		" gc-atime-cutoff = 5 , gc-atime-cutoff = 6 ",
	} {
		p := mustParse(t, s)
		q := mustParse(t, p.String())
		rtest.Equal(t, "Props parsed from String", p, q)
		rtest.Equal(t, "String of the reparsed Props", p.String(), q.String())
		rtest.Equal(t, "applied reparsed Props", p.Apply(Defaults()), q.Apply(Defaults()))
	}
}

func TestKeyErrorQuotes(t *testing.T) {
	_, err := Parse("gc-atime-cutoff=1 2")
	rtest.Equal(t, "message", `tuning "gc-atime-cutoff=1 2": not a decimal integer (want 1..2880 (minutes))`, err.Error())
	_, err = Parse("sync-level=\x00")
	if strings.ContainsRune(err.Error(), 0) {
		t.Errorf("message %q holds a NUL", err)
	}
}

func TestSpecsConsistent(t *testing.T) {
	seen := map[string]bool{}
	for _, sp := range specs {
		if seen[sp.key] {
			t.Errorf("key %s twice", sp.key)
		}
		seen[sp.key] = true
		switch sp.kind {
		case kindInt:
			if sp.min > sp.max || sp.unit == "" {
				t.Errorf("%s: bad range or unit", sp.key)
			}
		case kindEnum:
			if len(sp.values) == 0 || slices.Contains(sp.values, "") {
				t.Errorf("%s: bad values", sp.key)
			}
		case kindBool:
		default:
			t.Errorf("%s: no kind", sp.key)
		}
	}
}

// keys lists p's keys in order.
func (p Props) keys() []string {
	var ks []string
	for _, pr := range p.items {
		ks = append(ks, pr.key)
	}
	return ks
}
