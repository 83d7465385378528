package gc

import (
	"os"
	"testing"

	"chunkgc/internal/leakcheck"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m, "chunkgc/gc.", "chunkgc/chunkstore.", "chunkgc/locking."))
}
