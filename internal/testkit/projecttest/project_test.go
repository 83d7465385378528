package projecttest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"chunkgc/internal/testkit/rtest"
)

type goPackage struct {
	ImportPath string
	Dir        string
	Doc        string
	Name       string
	Imports    []string
	Deps       []string
	Module     *struct{ Path string }
	Standard   bool
}

func listPackages(t *testing.T, args ...string) []goPackage {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestEveryPackageHasDoc(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s has no doc comment", p.ImportPath)
		}
	}
}

// layer is the position of each package in the one-way import order; a
// package may import only packages of a lower layer.
var layer = map[string]int{
	"chunkgc/tuning":      0,
	"chunkgc/blob":        0,
	"chunkgc/config":      1,
	"chunkgc/journal":     1,
	"chunkgc/locking":     1,
	"chunkgc/index":       1,
	"chunkgc/chunkstore":  2,
	"chunkgc/datastore":   2, // beside chunkstore: neither imports the other
	"chunkgc/objstore":    2, // the S3 client, on config; beside chunkstore and datastore
	"chunkgc/backup":      3, // the writer, on datastore, chunkstore, index, locking
	"chunkgc/gc":          3, // beside backup: GC and the writer share no code
	"chunkgc/usage":       3, // beside gc: reads the tree and stats chunks, changes nothing
	"chunkgc/metrics":     4, // a run's outcome and gc.Status as Prometheus metrics
	"chunkgc/cmd/chunkgc": 5,
	// internal/ outside internal/testkit is production code: leaves below
	// everything but tuning (which stays a leaf).
	"chunkgc/internal/atomicfile": -2,
	"chunkgc/internal/nofollow":   -2,
	"chunkgc/internal/adapt":      -3,
	"chunkgc/internal/eintr":      -3,
	"chunkgc/internal/fsys":       -3,
}

func TestImportsFlowOneWay(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		from, ok := layer[p.ImportPath]
		if !ok {
			if !strings.HasPrefix(p.ImportPath, "chunkgc/internal/testkit/") && !strings.HasPrefix(p.ImportPath, "chunkgc/bench") {
				t.Errorf("package %s has no place in the import order; add it to layer", p.ImportPath)
			}
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, "chunkgc/") {
				continue
			}
			if strings.HasPrefix(imp, "chunkgc/internal/testkit/") {
				t.Errorf("%s (non-test code) imports test support package %s", p.ImportPath, imp)
				continue
			}
			to, ok := layer[imp]
			if !ok || to >= from {
				t.Errorf("%s (layer %d) must not import %s (layer %d)", p.ImportPath, from, imp, to)
			}
		}
	}
}

// allowed is the dependency budget of the chunkgc binary: the five required
// modules plus what they pull in. README "Dependencies" explains each.
var allowed = []string{
	"golang.org/x/sys",
	"github.com/klauspost/compress",
	"github.com/minio/sha256-simd",
	"github.com/klauspost/cpuid/v2", // sha256-simd's CPU feature detection
	"go.uber.org/zap",
	"go.uber.org/multierr",              // zap's
	"github.com/schollz/progressbar/v3", // the terminal progress line
	"github.com/mitchellh/colorstring",  // progressbar's
	"github.com/rivo/uniseg",            // progressbar's (display widths)
	"golang.org/x/term",                 // progressbar's (terminal width)
	"github.com/coreos/go-systemd/v22",  // sd_notify STATUS= under systemd
	"github.com/prometheus/client_golang",
	"github.com/prometheus/client_model", // client_golang's, and the rest below
	"github.com/prometheus/common",
	"github.com/prometheus/procfs",
	"github.com/beorn7/perks",
	"github.com/cespare/xxhash/v2",
	"github.com/munnerz/goautoneg",
	"google.golang.org/protobuf",
	// The S3 client of objstore (S3 datastores, issue 13): the service
	// module, its core and smithy-go, and the SDK's internal modules the
	// s3 service pulls in, all from the aws organisation.
	"github.com/aws/aws-sdk-go-v2",
	"github.com/aws/aws-sdk-go-v2/service/s3",
	"github.com/aws/smithy-go",
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream",
	"github.com/aws/aws-sdk-go-v2/internal/configsources",
	"github.com/aws/aws-sdk-go-v2/internal/endpoints/v2",
	"github.com/aws/aws-sdk-go-v2/internal/v4a",
	"github.com/aws/aws-sdk-go-v2/service/internal/accept-encoding",
	"github.com/aws/aws-sdk-go-v2/service/internal/checksum",
	"github.com/aws/aws-sdk-go-v2/service/internal/presigned-url",
	"github.com/aws/aws-sdk-go-v2/service/internal/s3shared",
}

func TestDependencyBudget(t *testing.T) {
	pkgs := listPackages(t, "-deps", "./cmd/chunkgc")
	mods := map[string]bool{}
	for _, p := range pkgs {
		if p.Standard || p.Module == nil || p.Module.Path == "chunkgc" {
			continue
		}
		mods[p.Module.Path] = true
	}
	for m := range mods {
		if !slices.Contains(allowed, m) {
			t.Errorf("chunkgc binary links module %s, which is not in the dependency budget (README Dependencies)", m)
		}
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range append(slices.Clone(allowed), "github.com/hanwen/go-fuse/v2") {
		if !bytes.Contains(readme, []byte(m)) {
			t.Errorf("README.md does not mention dependency %s", m)
		}
	}
}

// TestSystemdUnitsVerify runs systemd-analyze verify on the shipped units,
// with ExecStart pointed at a freshly built binary (verify checks that the
// executable exists).
func TestSystemdUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		rtest.SkipOrFail(t, "systemd-analyze not installed (CI installs systemd)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "chunkgc")
	build := exec.Command("go", "build", "-o", bin, "./cmd/chunkgc")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, unit := range []string{"chunkgc-gc@.service", "chunkgc-gc@.timer"} {
		b, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/chunkgc"), []byte(bin))
		inst := strings.Replace(unit, "@.", "@store1.", 1)
		if err := os.WriteFile(filepath.Join(dir, inst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(analyze, "verify", "--man=no",
		filepath.Join(dir, "chunkgc-gc@store1.service"), filepath.Join(dir, "chunkgc-gc@store1.timer"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	svc, _ := os.ReadFile(filepath.Join(repoRoot(t), "systemd", "chunkgc-gc@.service"))
	for _, want := range []string{"Type=oneshot", "ExecStart=/usr/local/bin/chunkgc gc", "IOSchedulingClass=idle", "Nice=", "SuccessExitStatus=75"} {
		if !bytes.Contains(svc, []byte(want)) {
			t.Errorf("chunkgc-gc@.service lacks %q", want)
		}
	}
	tmr, _ := os.ReadFile(filepath.Join(repoRoot(t), "systemd", "chunkgc-gc@.timer"))
	for _, want := range []string{"OnCalendar=daily", "Persistent=true", "RandomizedDelaySec="} {
		if !bytes.Contains(tmr, []byte(want)) {
			t.Errorf("chunkgc-gc@.timer lacks %q", want)
		}
	}
}
