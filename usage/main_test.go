package usage

import (
	"os"
	"testing"

	"chunkgc/internal/testkit/leakcheck"
)

func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m, "chunkgc/usage.")) }
