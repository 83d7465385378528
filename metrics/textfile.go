package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"chunkgc/gc"
	"chunkgc/internal/atomicfile"
	"chunkgc/internal/eintr"
	"chunkgc/internal/fsys"
	"chunkgc/internal/nofollow"
)

// EnvDir is the environment variable that sets the textfile directory when
// --metrics-dir is not given; the systemd unit sets it with Environment=.
const EnvDir = "CHUNKGC_METRICS_DIR"

// maxTextfileSize bounds what ReadPrevious reads: a textfile is a few KiB.
const maxTextfileSize = 1 << 20

// TextfileName is the name of store's textfile: chunkgc_<store>.prom.
func TextfileName(store string) string { return "chunkgc_" + store + ".prom" }

// WriteText writes what g gathers to w in the Prometheus text format.
func WriteText(w io.Writer, g prometheus.Gatherer) error {
	mfs, err := g.Gather()
	if err != nil {
		return fmt.Errorf("gather metrics: %w", err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
			return err
		}
	}
	return nil
}

// WriteTextfile replaces dir/chunkgc_<store>.prom atomically with what g
// gathers (package doc "Textfile"), readable by all (node_exporter runs as
// its own user). It returns the file's path.
func WriteTextfile(dir, store string, g prometheus.Gatherer) (string, error) {
	path := filepath.Join(dir, TextfileName(store))
	err := atomicfile.Write(path, 0o644, fsys.Keep, func(f *os.File) error { return WriteText(f, g) })
	if err != nil {
		return path, fmt.Errorf("metrics textfile: %w", err)
	}
	return path, nil
}

// Previous is a textfile as the last run left it.
type Previous struct {
	families map[string]*dto.MetricFamily
}

// ReadPrevious reads and parses dir/chunkgc_<store>.prom. It returns nil
// and no error when the file does not exist. The file is opened without
// following a symlink and with O_NONBLOCK, and must be a regular file.
func ReadPrevious(dir, store string) (*Previous, error) {
	name := TextfileName(store)
	path := filepath.Join(dir, name)
	b, err := nofollow.ReadFileIn(dir, name, maxTextfileSize)
	var pe *fs.PathError
	if errors.Is(err, fs.ErrNotExist) && errors.As(err, &pe) && pe.Path != dir {
		return nil, nil // the file is missing, not the dir
	}
	if err != nil {
		return nil, fmt.Errorf("read metrics textfile %s: %w", path, err)
	}
	return ParsePrevious(b, path)
}

// ParsePrevious parses a textfile's content; path names it in errors.
func ParsePrevious(b []byte, path string) (*Previous, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parse metrics textfile %s: %w", path, err)
	}
	return &Previous{families: mfs}, nil
}

// gauge is the value of the series of family name with label store, and,
// when result is not "", label result=result. A nil Previous has none.
func (p *Previous) gauge(name, store, result string) (float64, bool) {
	if p == nil {
		return 0, false
	}
	mf := p.families[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if label(m, labelStore) != store || result != "" && label(m, labelResult) != result {
			continue
		}
		return SampleValue(m)
	}
	return 0, false
}

// SampleValue is the value of a gauge, counter or untyped sample; ok is
// false for any other type.
func SampleValue(m *dto.Metric) (v float64, ok bool) {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue(), true
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue(), true
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// RunGroup gathers the run group's families of p, with store's series
// only, their help and type as [Defs] has them; nothing for a nil p. It is
// how `chunkgc metrics` shows the last run beside .gc-status.
func (p *Previous) RunGroup(store string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		if p == nil {
			return nil, nil
		}
		var out []*dto.MetricFamily
		for _, d := range Defs() {
			mf := p.families[d.Name]
			if !d.Run || mf == nil {
				continue
			}
			typ := dto.MetricType_GAUGE
			if d.Type == typeCounter {
				typ = dto.MetricType_COUNTER
			}
			if mf.GetType() != typ {
				continue
			}
			c := &dto.MetricFamily{Name: mf.Name, Help: &d.Help, Type: &typ}
			for _, m := range mf.GetMetric() {
				if label(m, labelStore) == store {
					c.Metric = append(c.Metric, m)
				}
			}
			if len(c.Metric) > 0 {
				out = append(out, c)
			}
		}
		return out, nil
	})
}

// ReadStatus reads base/.gc-status (gc.ReadStatus) and its mtime, the end
// of the last successful run. A store never collected gives an error
// wrapping fs.ErrNotExist.
func ReadStatus(base string) (*gc.Status, time.Time, error) {
	st, err := gc.ReadStatus(base)
	if err != nil {
		return nil, time.Time{}, err
	}
	at, err := StatusTime(base)
	if err != nil {
		return nil, time.Time{}, err
	}
	return st, at, nil
}

// StatusTime is the mtime of base/.gc-status, not following a symlink.
func StatusTime(base string) (time.Time, error) {
	path := filepath.Join(base, gc.StatusFile)
	var sb unix.Stat_t
	if err := eintr.Retry(func() error { return unix.Fstatat(unix.AT_FDCWD, path, &sb, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
		return time.Time{}, fmt.Errorf("read gc status: %w", &fs.PathError{Op: "fstatat", Path: path, Err: err})
	}
	return time.Unix(sb.Mtim.Unix()), nil
}

// Current gathers what `chunkgc metrics` prints: the status group of st
// (the last successful run, ended at at; none when nil) and the run group
// that prev, the last textfile, holds for store (none when nil).
func Current(store string, st *gc.Status, at time.Time, prev *Previous) prometheus.Gatherer {
	return prometheus.Gatherers{Build(Input{Store: store, Status: st, StatusTime: at}), prev.RunGroup(store)}
}
