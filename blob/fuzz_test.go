package blob

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode checks that Verify and Decode never panic, that every error is
// typed, that they agree with each other, and that whatever decodes
// round-trips through Encode. Seeds are in testdata/fuzz/FuzzDecode.
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 5m ./blob
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		kOf, ofErr := KindOf(b)
		k, verr := Verify(b)
		out, err := Decode(b)
		if !bytes.Equal(b, orig) {
			t.Fatal("Verify or Decode modified its input")
		}
		if ofErr == nil && kOf != k {
			t.Fatalf("KindOf says %v, Verify says %v", kOf, k)
		}
		if verr != nil {
			if _, isFE := errors.AsType[*FormatError](verr); !isFE {
				t.Fatalf("Verify error is not a *FormatError: %v", verr)
			}
			if err == nil || err.Error() != verr.Error() {
				t.Fatalf("Verify failed with %v but Decode gave %v", verr, err)
			}
			return
		}
		if ofErr != nil {
			t.Fatalf("Verify accepted a blob KindOf rejects: %v", ofErr)
		}
		if k.IsEncrypted() {
			if !errors.Is(err, ErrEncrypted) {
				t.Fatalf("%v blob verified, Decode gave %v, want ErrEncrypted", k, err)
			}
			return
		}
		if err != nil {
			fe, isFE := errors.AsType[*FormatError](err)
			if !isFE || (fe.Reason != ReasonCorrupt && fe.Reason != ReasonTooLarge) || k != Compressed {
				t.Fatalf("%v blob verified, then Decode gave %v", k, err)
			}
			return
		}
		if len(out) > MaxSize {
			t.Fatalf("Decode returned %d bytes, more than MaxSize", len(out))
		}
		if k == Uncompressed && !bytes.Equal(out, b[HeaderSize:]) {
			t.Fatal("uncompressed blob decodes to something other than its payload")
		}
		for _, compress := range []bool{false, true} {
			b2, err := Encode(out, compress)
			if err != nil {
				t.Fatalf("Encode(compress=%v) of decoded data: %v", compress, err)
			}
			out2, err := Decode(b2)
			if err != nil {
				t.Fatalf("Decode of re-encoded blob (compress=%v): %v", compress, err)
			}
			if !bytes.Equal(out, out2) {
				t.Fatalf("re-encoded blob (compress=%v) decodes to different data", compress)
			}
		}
	})
}
