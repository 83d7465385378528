package blob

import (
	"chunkgc/internal/testkit/leakcheck"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m, "chunkgc/blob.", "klauspost/compress"))
}

// specMagic holds the magics as SPEC §2 writes them, in decimal, so that
// tests check the package against the contract rather than against itself.
var specMagic = map[Kind][8]byte{
	Uncompressed:        {66, 171, 56, 7, 190, 131, 112, 161},
	Compressed:          {49, 185, 88, 66, 111, 182, 163, 127},
	Encrypted:           {123, 103, 133, 190, 34, 45, 76, 240},
	EncryptedCompressed: {230, 89, 27, 191, 11, 191, 216, 11},
}

// rawBlob builds a blob of kind k around payload straight from the format
// description, with a valid CRC. For encrypted kinds payload must include
// iv and tag.
func rawBlob(k Kind, payload []byte) []byte {
	m := specMagic[k]
	b := append(m[:], 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[8:], crc32.ChecksumIEEE(payload))
	return append(b, payload...)
}

// withCRC returns a copy of b with the CRC field set to crc.
func withCRC(b []byte, crc uint32) []byte {
	b = append([]byte(nil), b...)
	binary.LittleEndian.PutUint32(b[8:], crc)
	return b
}

// randomBytes returns n incompressible bytes from a fixed seed.
func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	p := make([]byte, n)
	rand.NewChaCha8(s).Read(p)
	return p
}

// text returns n bytes of pseudo-text from a fixed seed: compressible about
// as well as logs or configuration files.
func text(n int, seed uint64) []byte {
	words := strings.Fields("chunk index snapshot backup garbage collect atime prefix digest " +
		"store group namespace lock writer sweep mark pending removed bytes the a of to and")
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	p := make([]byte, 0, n+16)
	for len(p) < n {
		p = append(p, words[r.IntN(len(words))]...)
		switch r.IntN(12) {
		case 0:
			p = append(p, '\n')
		case 1:
			p = fmt.Appendf(p, " %d ", r.IntN(100000))
		default:
			p = append(p, ' ')
		}
	}
	return p[:n]
}
