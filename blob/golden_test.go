package blob

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"

	"chunkgc/internal/testkit/rtest"
)

var update = flag.Bool("update", false, "rewrite the golden blobs in ../testdata/blob and the seed corpus in testdata/fuzz/FuzzDecode")

const (
	goldenDir = "../testdata/blob"
	corpusDir = "testdata/fuzz/FuzzDecode"
)

// golden is one golden blob: the plain data and how the blob is made.
type golden struct {
	name string
	data []byte
	kind Kind
	// libzstd marks a blob compressed by the reference zstd CLI, as PBS's
	// libzstd would, instead of by Encode.
	libzstd bool
}

func goldens() []golden {
	return []golden{
		{name: "uncompressed.blob", data: []byte("chunkgc golden blob: plain data, stored as is\n"), kind: Uncompressed},
		{name: "compressed.blob", data: text(20000, 42), kind: Compressed},
		{name: "zero-chunk.blob", data: make([]byte, ZeroChunkSize), kind: Compressed},
		{name: "zero-chunk.libzstd.blob", data: make([]byte, ZeroChunkSize), kind: Compressed, libzstd: true},
	}
}

// make builds the golden blob the way its README line says.
func (g golden) make(t *testing.T) []byte {
	t.Helper()
	if g.libzstd {
		frame := runZstd(t, g.data, "-1", "--no-check", "-c")
		return rawBlob(Compressed, frame)
	}
	b, err := Encode(g.data, g.kind == Compressed)
	rtest.OK(t, err)
	return b
}

// runZstd runs the reference zstd CLI with args on stdin. Without the CLI
// the test skips, or fails under CI.
func runZstd(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	path, err := exec.LookPath("zstd")
	if err != nil {
		if *update {
			t.Fatalf("reference zstd CLI needed to update the golden files: %v", err)
		}
		rtest.SkipOrFailf(t, "reference zstd CLI not installed (apt-get install zstd): %v", err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("zstd %v: %v: %s", args, err, stderr.Bytes())
	}
	return out
}

// TestGolden checks that each golden blob decodes to its data, and that
// Encode still writes the same bytes (true while the zstd module version is
// pinned; after an upgrade, check that the old goldens still decode, then
// -update).
func TestGolden(t *testing.T) {
	if *update {
		rtest.OK(t, os.MkdirAll(goldenDir, 0o755))
	}
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			path := filepath.Join(goldenDir, g.name)
			if *update {
				rtest.OK(t, os.WriteFile(path, g.make(t), 0o644))
			}
			b, err := os.ReadFile(path)
			rtest.OK(t, err)
			k, err := Verify(b)
			rtest.OK(t, err)
			rtest.Equal(t, "kind", g.kind, k)
			data, err := Decode(b)
			rtest.OK(t, err)
			if !bytes.Equal(data, g.data) {
				t.Fatalf("%s decodes to %d bytes that differ from the %d expected", path, len(data), len(g.data))
			}
			if g.libzstd {
				return
			}
			enc, err := Encode(g.data, g.kind == Compressed)
			rtest.OK(t, err)
			if !bytes.Equal(enc, b) {
				t.Errorf("Encode now writes %d bytes that differ from the %d of %s; run go test ./blob -run TestGolden -update", len(enc), len(b), path)
			}
		})
	}
}

// TestLibzstdDecodesOurBlobs checks the other direction of compatibility:
// the reference decoder (PBS's libzstd) reads what Encode writes.
func TestLibzstdDecodesOurBlobs(t *testing.T) {
	for _, data := range [][]byte{make([]byte, ZeroChunkSize), text(MaxSize, 7)} {
		b, err := Encode(data, true)
		rtest.OK(t, err)
		k, err := KindOf(b)
		rtest.OK(t, err)
		rtest.Equal(t, "kind", Compressed, k)
		got := runZstd(t, b[HeaderSize:], "-d", "-c")
		if !bytes.Equal(got, data) {
			t.Errorf("zstd -d gives %d bytes that differ from the %d encoded", len(got), len(data))
		}
	}
}

// fuzzSeeds is the seed corpus of FuzzDecode: one blob per branch of Verify
// and Decode.
func fuzzSeeds(t *testing.T) map[string][]byte {
	t.Helper()
	small := text(2000, 9)
	compressed, err := Encode(small, true)
	rtest.OK(t, err)
	uncompressed, err := Encode([]byte("hello, chunkgc"), false)
	rtest.OK(t, err)
	zero, _, err := ZeroChunk(ZeroChunkSize)
	rtest.OK(t, err)
	libzstd, err := os.ReadFile(filepath.Join(goldenDir, "zero-chunk.libzstd.blob"))
	rtest.OK(t, err)

	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	rtest.OK(t, err)
	overMax := enc.EncodeAll(make([]byte, MaxSize+1), nil)
	var stream bytes.Buffer
	enc.Reset(&stream)
	_, err = enc.Write(small)
	rtest.OK(t, err)
	rtest.OK(t, enc.Close())
	frame := compressed[HeaderSize:]

	return map[string][]byte{
		"empty":                    {},
		"short-magic":              MagicUncompressed[:5],
		"header-only-uncompressed": rawBlob(Uncompressed, nil),
		"header-only-compressed":   rawBlob(Compressed, nil),
		"header-only-encrypted":    rawBlob(Encrypted, nil),
		"uncompressed":             uncompressed,
		"compressed":               compressed,
		"compressed-zero-chunk":    zero,
		"compressed-libzstd-zero":  libzstd,
		"compressed-stream-frame":  rawBlob(Compressed, stream.Bytes()),
		"compressed-two-frames":    rawBlob(Compressed, append(bytes.Clone(frame), frame...)),
		"compressed-over-max":      rawBlob(Compressed, overMax),
		"compressed-garbage":       rawBlob(Compressed, []byte("not a zstd frame")),
		"compressed-cut":           rawBlob(Compressed, frame[:len(frame)/2]),
		"bad-crc":                  withCRC(uncompressed, 0),
		"bad-magic":                append([]byte("PBSBLOB!"), uncompressed[8:]...),
		"encrypted":                rawBlob(Encrypted, randomBytes(32+64, 10)),
		"encrypted-compressed":     rawBlob(EncryptedCompressed, randomBytes(32+16, 11)),
	}
}

// marshalCorpus writes b in the go test fuzz v1 corpus format.
func marshalCorpus(b []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n")
}

// TestFuzzCorpus checks that testdata/fuzz/FuzzDecode holds exactly the seeds
// fuzzSeeds makes; -update rewrites it. Files the fuzzer adds after a
// failure must be kept or removed by hand, so they are reported, not deleted.
func TestFuzzCorpus(t *testing.T) {
	seeds := fuzzSeeds(t)
	if *update {
		rtest.OK(t, os.MkdirAll(corpusDir, 0o755))
		for name, b := range seeds {
			rtest.OK(t, os.WriteFile(filepath.Join(corpusDir, name), marshalCorpus(b), 0o644))
		}
	}
	entries, err := os.ReadDir(corpusDir)
	rtest.OK(t, err)
	var extra, differ []string
	have := map[string]bool{}
	for _, e := range entries {
		have[e.Name()] = true
		want, known := seeds[e.Name()]
		if !known {
			extra = append(extra, e.Name())
			continue
		}
		got, err := os.ReadFile(filepath.Join(corpusDir, e.Name()))
		rtest.OK(t, err)
		if !bytes.Equal(got, marshalCorpus(want)) {
			differ = append(differ, e.Name())
		}
	}
	var missing []string
	for name := range seeds {
		if !have[name] {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	if len(missing)+len(extra)+len(differ) > 0 {
		t.Errorf("%s is stale (run go test ./blob -run TestFuzzCorpus -update; keep fuzzer finds as new fuzzSeeds):\nmissing: %v\nextra: %v\ndiffer: %v",
			corpusDir, missing, extra, differ)
	}
}
