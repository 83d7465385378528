package blob

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"chunkgc/internal/testkit/rtest"
)

func TestMagicsMatchSpec(t *testing.T) {
	tests := []struct {
		give Kind
		want [8]byte
		vars [8]byte
	}{
		{Uncompressed, specMagic[Uncompressed], MagicUncompressed},
		{Compressed, specMagic[Compressed], MagicCompressed},
		{Encrypted, specMagic[Encrypted], MagicEncrypted},
		{EncryptedCompressed, specMagic[EncryptedCompressed], MagicEncryptedCompressed},
	}
	for _, tt := range tests {
		t.Run(tt.give.String(), func(t *testing.T) {
			rtest.Equal(t, "Magic()", tt.want, tt.give.Magic())
			rtest.Equal(t, "exported Magic var", tt.want, tt.vars)
		})
	}
}

// TestReasonStrings: each Reason has its description and sentinel; a value
// that names no reason has neither.
func TestReasonStrings(t *testing.T) {
	for r, want := range map[Reason]string{ReasonTruncated: "truncated", ReasonBadMagic: "bad magic",
		ReasonBadCRC: "bad crc", ReasonTooLarge: "too large", ReasonCorrupt: "corrupt", 0: "Reason(0)", 6: "Reason(6)"} {
		rtest.Equal(t, fmt.Sprintf("Reason(%d).String()", r), want, r.String())
	}
	for r, want := range map[Reason]error{ReasonTruncated: ErrTruncated, ReasonBadMagic: ErrBadMagic,
		ReasonBadCRC: ErrBadCRC, ReasonTooLarge: ErrTooLarge, ReasonCorrupt: ErrCorrupt, 0: nil, 6: nil} {
		rtest.Equal(t, fmt.Sprintf("Reason(%d).sentinel()", r), want, r.sentinel())
	}
}

func TestKindString(t *testing.T) {
	tests := []struct {
		give Kind
		want string
	}{
		{Uncompressed, "uncompressed"},
		{Compressed, "compressed"},
		{Encrypted, "encrypted"},
		{EncryptedCompressed, "encrypted+compressed"},
		{0, "Kind(0)"},
		{9, "Kind(9)"},
	}
	for _, tt := range tests {
		rtest.Equal(t, fmt.Sprintf("Kind(%d).String()", tt.give), tt.want, tt.give.String())
	}
	for k, enc := range map[Kind]bool{Uncompressed: false, Compressed: false, Encrypted: true, EncryptedCompressed: true} {
		rtest.Equal(t, k.String()+".IsEncrypted()", enc, k.IsEncrypted())
	}
	for k, c := range map[Kind]bool{Uncompressed: false, Compressed: true, Encrypted: false, EncryptedCompressed: true} {
		rtest.Equal(t, k.String()+".IsCompressed()", c, k.IsCompressed())
	}
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		name       string
		give       []byte
		want       Kind
		wantReason Reason
	}{
		{"uncompressed", rawBlob(Uncompressed, []byte("x")), Uncompressed, 0},
		{"compressed", rawBlob(Compressed, []byte("x")), Compressed, 0},
		{"encrypted", rawBlob(Encrypted, nil), Encrypted, 0},
		{"encrypted+compressed", rawBlob(EncryptedCompressed, nil), EncryptedCompressed, 0},
		{"magic only", MagicCompressed[:], Compressed, 0},
		{"bad CRC is not looked at", withCRC(rawBlob(Uncompressed, []byte("x")), 1), Uncompressed, 0},
		{"nil", nil, 0, ReasonTruncated},
		{"7 bytes", MagicUncompressed[:7], 0, ReasonTruncated},
		{"zeros", make([]byte, 64), 0, ReasonBadMagic},
		{"text", []byte("hello, world"), 0, ReasonBadMagic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := KindOf(tt.give)
			rtest.Equal(t, "kind", tt.want, got)
			checkReason(t, err, tt.wantReason, 0, len(tt.give))
		})
	}
}

// checkReason checks that err is a *FormatError with reason want (nil when
// want is 0), found by both errors.Is and errors.AsType.
func checkReason(t *testing.T, err error, want Reason, wantKind Kind, wantSize int) {
	t.Helper()
	if want == 0 {
		rtest.OK(t, err)
		return
	}
	if err == nil {
		t.Fatalf("want a %s error, got nil", want)
	}
	if !errors.Is(err, want.sentinel()) {
		t.Errorf("errors.Is(%v, %v) = false", err, want.sentinel())
	}
	for _, other := range []Reason{ReasonTruncated, ReasonBadMagic, ReasonBadCRC, ReasonTooLarge, ReasonCorrupt} {
		if other != want && errors.Is(err, other.sentinel()) {
			t.Errorf("errors.Is(%v, %v) = true, want only %v", err, other.sentinel(), want.sentinel())
		}
	}
	fe, isFE := errors.AsType[*FormatError](err)
	if !isFE {
		t.Fatalf("errors.AsType[*FormatError](%v) found none", err)
	}
	rtest.Equal(t, "Reason", want, fe.Reason)
	rtest.Equal(t, "Kind", wantKind, fe.Kind)
	rtest.Equal(t, "Size", wantSize, fe.Size)
	if errors.Is(err, ErrEncrypted) {
		t.Errorf("format error %v matches ErrEncrypted", err)
	}
}

// TestMalformed covers blobs that Verify itself rejects; Decode must reject
// them the same way.
func TestMalformed(t *testing.T) {
	good := rawBlob(Uncompressed, []byte("some plain data"))
	badMagic := bytes.Clone(good)
	badMagic[3] ^= 0x40
	flippedPayload := bytes.Clone(good)
	flippedPayload[HeaderSize+2] ^= 1
	compressed, err := Encode(text(10000, 1), true)
	rtest.OK(t, err)
	flippedCompressed := bytes.Clone(compressed)
	flippedCompressed[len(flippedCompressed)/2] ^= 0x80
	iv := make([]byte, 32)

	tests := []struct {
		name       string
		give       []byte
		wantReason Reason
		wantKind   Kind
	}{
		{"empty", []byte{}, ReasonTruncated, 0},
		{"5 bytes", MagicCompressed[:5], ReasonTruncated, 0},
		{"magic only", MagicUncompressed[:], ReasonTruncated, Uncompressed},
		{"11 bytes", good[:11], ReasonTruncated, Uncompressed},
		{"encrypted without iv and tag", rawBlob(Encrypted, nil), ReasonTruncated, Encrypted},
		{"encrypted with 31 of 32 iv and tag bytes", rawBlob(Encrypted, iv[:31]), ReasonTruncated, Encrypted},
		{"encrypted+compressed header only", rawBlob(EncryptedCompressed, nil), ReasonTruncated, EncryptedCompressed},
		{"zeros", make([]byte, 100), ReasonBadMagic, 0},
		{"one magic bit flipped", badMagic, ReasonBadMagic, 0},
		{"index magic", []byte{47, 127, 65, 237, 145, 253, 15, 205, 0, 0, 0, 0}, ReasonBadMagic, 0},
		{"payload bit flipped", flippedPayload, ReasonBadCRC, Uncompressed},
		{"crc wrong", withCRC(good, 0xdeadbeef), ReasonBadCRC, Uncompressed},
		{"empty payload crc wrong", withCRC(rawBlob(Uncompressed, nil), 1), ReasonBadCRC, Uncompressed},
		{"compressed payload bit flipped", flippedCompressed, ReasonBadCRC, Compressed},
		{"encrypted crc wrong", withCRC(rawBlob(Encrypted, make([]byte, 48)), 7), ReasonBadCRC, Encrypted},
		{"uncompressed payload MaxSize+1", rawBlob(Uncompressed, make([]byte, MaxSize+1)), ReasonTooLarge, Uncompressed},
		{"compressed payload MaxSize+1", rawBlob(Compressed, make([]byte, MaxSize+1)), ReasonTooLarge, Compressed},
		{"encrypted ciphertext MaxSize+1", rawBlob(Encrypted, make([]byte, 32+MaxSize+1)), ReasonTooLarge, Encrypted},
		{"too large beats bad crc", withCRC(rawBlob(Uncompressed, make([]byte, MaxSize+1)), 1), ReasonTooLarge, Uncompressed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Verify(tt.give)
			checkReason(t, err, tt.wantReason, tt.wantKind, len(tt.give))
			rtest.Equal(t, "Verify kind", tt.wantKind, k)

			out, err := Decode(tt.give)
			checkReason(t, err, tt.wantReason, tt.wantKind, len(tt.give))
			if out != nil {
				t.Errorf("Decode returned %d bytes with its error", len(out))
			}
		})
	}
}

// TestCorruptPayload covers compressed blobs with a valid header and CRC
// whose zstd payload Decode rejects.
func TestCorruptPayload(t *testing.T) {
	frame, err := Encode(text(100000, 2), true)
	rtest.OK(t, err)
	frame = frame[HeaderSize:]

	overMax := make([]byte, MaxSize+1)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	rtest.OK(t, err)
	withSize := enc.EncodeAll(overMax, nil)
	var stream bytes.Buffer
	enc.Reset(&stream) // a streamed frame does not declare its content size
	_, err = enc.Write(overMax)
	rtest.OK(t, err)
	rtest.OK(t, enc.Close())

	tests := []struct {
		name       string
		give       []byte
		wantReason Reason
		wantErr    error // the decompressor's error, if it must be kept
	}{
		{"empty payload", nil, ReasonCorrupt, nil},
		{"not zstd", []byte("this is not a zstd frame at all"), ReasonCorrupt, nil},
		{"frame cut short", frame[:len(frame)/2], ReasonCorrupt, nil},
		{"frame with trailing garbage", append(bytes.Clone(frame), 1, 2, 3), ReasonCorrupt, nil},
		{"frame declaring MaxSize+1 bytes", withSize, ReasonTooLarge, zstd.ErrDecoderSizeExceeded},
		{"streamed frame of MaxSize+1 bytes", stream.Bytes(), ReasonTooLarge, zstd.ErrDecoderSizeExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := rawBlob(Compressed, tt.give)
			k, err := Verify(b)
			rtest.OK(t, err)
			rtest.Equal(t, "Verify kind", Compressed, k)

			out, err := Decode(b)
			checkReason(t, err, tt.wantReason, Compressed, len(b))
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantErr)
			}
			if out != nil {
				t.Errorf("Decode returned %d bytes with its error", len(out))
			}
		})
	}
}

func TestEncrypted(t *testing.T) {
	ivTag := bytes.Repeat([]byte{0xa5}, 32)
	tests := []struct {
		name string
		kind Kind
		give []byte
	}{
		{"encrypted", Encrypted, append(bytes.Clone(ivTag), randomBytes(1000, 3)...)},
		{"encrypted+compressed", EncryptedCompressed, append(bytes.Clone(ivTag), randomBytes(200, 4)...)},
		{"empty ciphertext", Encrypted, ivTag},
		{"ciphertext of MaxSize", Encrypted, append(bytes.Clone(ivTag), make([]byte, MaxSize)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := rawBlob(tt.kind, tt.give)
			k, err := Verify(b)
			rtest.OK(t, err)
			rtest.Equal(t, "Verify kind", tt.kind, k)

			out, err := Decode(b)
			if !errors.Is(err, ErrEncrypted) {
				t.Fatalf("Decode: want ErrEncrypted, got %v", err)
			}
			if _, isFE := errors.AsType[*FormatError](err); isFE {
				t.Errorf("Decode of a valid encrypted blob gave a FormatError: %v", err)
			}
			if out != nil {
				t.Errorf("Decode returned %d bytes with its error", len(out))
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	sizes := []int{0, 1, 11, 12, 13, 100, 4095, 4096, 65536, ZeroChunkSize, MaxSize - 1, MaxSize}
	patterns := []struct {
		name string
		make func(n int) []byte
	}{
		{"zeros", func(n int) []byte { return make([]byte, n) }},
		{"text", func(n int) []byte { return text(n, uint64(n)) }},
		{"random", func(n int) []byte { return randomBytes(n, uint64(n)) }},
	}
	for _, size := range sizes {
		for _, p := range patterns {
			data := p.make(size)
			for _, compress := range []bool{false, true} {
				t.Run(fmt.Sprintf("%d/%s/compress=%v", size, p.name, compress), func(t *testing.T) {
					b, err := Encode(data, compress)
					rtest.OK(t, err)
					k, err := Verify(b)
					rtest.OK(t, err)
					switch {
					case !compress || size == 0:
						rtest.Equal(t, "kind", Uncompressed, k)
					case p.name == "random":
						rtest.Equal(t, "kind of incompressible data", Uncompressed, k)
					case size >= 4096:
						rtest.Equal(t, "kind of compressible data", Compressed, k)
					}
					if k == Uncompressed {
						rtest.Equal(t, "blob length", HeaderSize+size, len(b))
						if !bytes.Equal(b[HeaderSize:], data) {
							t.Errorf("uncompressed payload differs from the data")
						}
					} else if len(b)-HeaderSize >= size {
						t.Errorf("compressed payload of %d bytes is not smaller than the %d data bytes", len(b)-HeaderSize, size)
					}
					got, err := Decode(b)
					rtest.OK(t, err)
					if !bytes.Equal(got, data) {
						t.Fatalf("Decode returned %d bytes that differ from the %d encoded", len(got), len(data))
					}
					if got == nil {
						t.Errorf("Decode returned nil for %d bytes", size)
					}
				})
			}
		}
	}
}

func TestEncodeTooLarge(t *testing.T) {
	for _, compress := range []bool{false, true} {
		b, err := Encode(make([]byte, MaxSize+1), compress)
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("Encode(MaxSize+1, %v): want ErrTooLarge, got %v", compress, err)
		}
		if b != nil {
			t.Errorf("Encode(MaxSize+1, %v) returned %d bytes with its error", compress, len(b))
		}
	}
}

func TestDecodeDoesNotAlias(t *testing.T) {
	for _, compress := range []bool{false, true} {
		data := text(1000, 5)
		b, err := Encode(data, compress)
		rtest.OK(t, err)
		orig := bytes.Clone(b)
		got, err := Decode(b)
		rtest.OK(t, err)
		for i := range got {
			got[i] = 0xff
		}
		if !bytes.Equal(b, orig) {
			t.Errorf("compress=%v: writing to Decode's result changed the blob", compress)
		}
	}
}

func TestZeroChunk(t *testing.T) {
	b, d, err := ZeroChunk(ZeroChunkSize)
	rtest.OK(t, err)
	rtest.Equal(t, "digest", "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8", d.String())
	if len(b) >= 1024 {
		t.Errorf("zero chunk blob is %d bytes, want < 1 KiB", len(b))
	}
	k, err := Verify(b)
	rtest.OK(t, err)
	rtest.Equal(t, "kind", Compressed, k)
	data, err := Decode(b)
	rtest.OK(t, err)
	rtest.Equal(t, "decoded length", ZeroChunkSize, len(data))
	if !bytes.Equal(data, make([]byte, ZeroChunkSize)) {
		t.Errorf("zero chunk does not decode to zeros")
	}
	rtest.Equal(t, "Sum of decoded data", d, Sum(data))
}

func TestZeroChunkSizes(t *testing.T) {
	tests := []struct {
		give     int
		wantKind Kind
		wantErr  error
	}{
		{0, Uncompressed, nil},
		{1, Uncompressed, nil},
		{4096, Compressed, nil},
		{MaxSize, Compressed, nil},
		{MaxSize + 1, 0, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.give), func(t *testing.T) {
			b, d, err := ZeroChunk(tt.give)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("want %v, got %v", tt.wantErr, err)
				}
				return
			}
			rtest.OK(t, err)
			k, err := Verify(b)
			rtest.OK(t, err)
			rtest.Equal(t, "kind", tt.wantKind, k)
			rtest.Equal(t, "digest", Sum(make([]byte, tt.give)), d)
		})
	}
	if _, _, err := ZeroChunk(-1); err == nil {
		t.Errorf("ZeroChunk(-1): want an error")
	}
}

func TestFormatErrorMessages(t *testing.T) {
	tests := []struct {
		name string
		give []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "blob truncated: 3 bytes, the header needs 12"},
		{"encrypted short", rawBlob(Encrypted, make([]byte, 4)), "encrypted blob truncated: 16 bytes, need at least 44"},
		{"magic", []byte("PBSBLOB!0000"), "blob of 12 bytes has unknown magic 504253424c4f4221"},
		{"crc", withCRC(rawBlob(Uncompressed, []byte("abc")), 0x01020304), "uncompressed blob of 15 bytes: crc32 mismatch: header has 01020304, payload has 352441c2"},
		{"large", rawBlob(Compressed, make([]byte, MaxSize+1)), "compressed blob too large: 16777229 bytes, payload exceeds 16777216"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.give)
			if err == nil {
				t.Fatal("want an error")
			}
			rtest.Equal(t, "message", tt.want, err.Error())
		})
	}
	_, err := Decode(rawBlob(Compressed, []byte("junk")))
	if err == nil || !strings.HasPrefix(err.Error(), "compressed blob of 16 bytes: corrupt payload: ") {
		t.Errorf("corrupt payload message: got %v", err)
	}
	_, err = Decode(rawBlob(EncryptedCompressed, make([]byte, 32)))
	rtest.Equal(t, "encrypted message", "decode encrypted+compressed blob: blob is encrypted", fmt.Sprint(err))
}

// TestConcurrent runs Encode and Decode from several goroutines at once; the
// race detector checks the shared codecs.
func TestConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				data := text(50000+g*1000+i, uint64(g*100+i))
				b, err := Encode(data, true)
				if err != nil {
					t.Errorf("goroutine %d: Encode: %v", g, err)
					return
				}
				got, err := Decode(b)
				if err != nil {
					t.Errorf("goroutine %d: Decode: %v", g, err)
					return
				}
				if !bytes.Equal(got, data) {
					t.Errorf("goroutine %d: round trip %d differs", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
}
