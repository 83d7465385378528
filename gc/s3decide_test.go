package gc

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"chunkgc/blob"
	"chunkgc/chunkstore"
	"chunkgc/internal/testkit/rtest"
)

// TestParseS3Key: only <store>/.chunks/<p>/<64 lowercase hex>[.N.bad] under
// the digest's own prefix dir names a chunk; every other key is foreign and
// never deleted (uppercase hex, which PBS accepts, included).
func TestParseS3Key(t *testing.T) {
	const pre = "store1/.chunks/"
	// A digest whose prefix dir has a letter, so that its uppercase
	// spelling differs.
	var d blob.Digest
	for i := 0; ; i++ {
		if d = blob.Sum([]byte(fmt.Sprint("s3 key ", i))); strings.ToUpper(d.String()[:4]) != d.String()[:4] {
			break
		}
	}
	h := d.String()
	other := blob.Sum([]byte("other")).String()
	for _, tt := range []struct {
		key  string
		kind chunkstore.Kind // KindOther: foreign
	}{
		{pre + h[:4] + "/" + h, chunkstore.KindChunk},
		{pre + h[:4] + "/" + h + ".0.bad", chunkstore.KindBad},
		{pre + h[:4] + "/" + h + ".9.bad", chunkstore.KindBad},
		{pre + h[:4] + "/" + strings.ToUpper(h), chunkstore.KindOther},
		{pre + strings.ToUpper(h[:4]) + "/" + h, chunkstore.KindOther},
		{pre + other[:4] + "/" + h, chunkstore.KindOther}, // not its prefix dir
		{pre + h[:4] + "/" + h + ".10.bad", chunkstore.KindOther},
		{pre + h[:4] + "/" + h + ".0.bad.0.bad", chunkstore.KindOther},
		{pre + h[:4] + "/" + h + ".using", chunkstore.KindOther},
		{pre + h[:4] + "/" + h + ".tmp_x", chunkstore.KindOther},
		{pre + h[:4] + "/" + h[:63], chunkstore.KindOther},
		{pre + h[:4] + "/sub/" + h, chunkstore.KindOther},
		{pre + h, chunkstore.KindOther},
		{pre + h[:3] + "/" + h, chunkstore.KindOther},
		{"store2/.chunks/" + h[:4] + "/" + h, chunkstore.KindOther},
		{"store1/.cnt/vm/100/" + h, chunkstore.KindOther},
		{"x" + pre + h[:4] + "/" + h, chunkstore.KindOther},
	} {
		k, ok := parseS3Key(pre, tt.key)
		if ok != (tt.kind != chunkstore.KindOther) {
			t.Errorf("parseS3Key(%q): ok %v, want kind %v", tt.key, ok, tt.kind)
			continue
		}
		if !ok {
			continue
		}
		rtest.Equal(t, tt.key+" kind", tt.kind, k.kind)
		rtest.Equal(t, tt.key+" digest", d, k.digest)
		rtest.Equal(t, tt.key+" local name", tt.key[strings.LastIndexByte(tt.key, '/')+1:], k.name)
	}
}

// TestDecideS3 is the full decision table: local file present (a cached
// chunk, an empty marker and a local bad copy are all a file of the
// object's name), missing, or only a .using marker × local atime old,
// pending or new × LastModified old, new or absent × chunk lock free or
// held. An object goes only when the lock is free, the local evidence says
// unused and LastModified is before the server-clock cutoff.
func TestDecideS3(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	c := s3Cutoffs{
		minAtime:     now.Add(-24*time.Hour - 5*time.Minute).Unix(),
		oldestWriter: now.Add(-time.Hour).Unix(),
		objCutoff:    now.Add(-24*time.Hour - 5*time.Minute).Add(7 * time.Second), // server 7 s ahead
	}
	atimes := map[string]int64{
		"old":     c.minAtime - 1,
		"pending": c.minAtime,
		"new":     c.oldestWriter,
	}
	lastMods := map[string]time.Time{
		"old":    c.objCutoff.Add(-time.Second),
		"cutoff": c.objCutoff, // not before the cutoff: young
		"new":    now,
		"absent": {},
	}
	n := 0
	for _, busy := range []bool{false, true} {
		for _, local := range []s3Local{localFile, localMissing, localUsing} {
			for an, atime := range atimes {
				if local != localFile && an != "old" {
					continue // no file, no atime
				}
				for ln, lm := range lastMods {
					e := s3Evidence{local: local, atime: atime, lastModified: lm, busy: busy}
					var want s3Verdict
					switch {
					case busy:
						want = s3KeepBusy
					case local == localUsing:
						want = s3KeepUsing
					case local == localFile && an == "new":
						want = s3Keep
					case local == localFile && an == "pending":
						want = s3Pending
					case ln != "old":
						want = s3KeepYoung
					default:
						want = s3Delete
					}
					name := fmt.Sprintf("busy=%v/local=%d/atime=%s/last-modified=%s", busy, local, an, ln)
					if got := decideS3(e, c); got != want {
						t.Errorf("%s: %v, want %v", name, got, want)
					}
					n++
				}
			}
		}
	}
	rtest.Equal(t, "rows", 2*(3*4+4+4), n)
}
