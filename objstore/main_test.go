package objstore

import (
	"os"
	"testing"

	"chunkgc/internal/testkit/leakcheck"
)

func TestMain(m *testing.M) {
	os.Exit(leakcheck.Run(m, "chunkgc/objstore.", "chunkgc/internal/testkit/s3server."))
}
