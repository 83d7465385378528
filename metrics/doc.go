// Package metrics turns a GC run's outcome and the store's .gc-status into
// Prometheus metrics, and writes them as a textfile for node_exporter's
// textfile collector (chunkgc_<store>.prom). It is pure apart from the
// textfile's read and atomic write: [Build] takes values, never a store.
//
// # Two groups
//
// The status group describes the last successful run: every .gc-status
// figure ([gc.Status]) and chunkgc_last_success_timestamp_seconds, the end
// of that run (the mtime of .gc-status, which a successful, non-dry run
// writes last). It is built from the run's own Status when the run ended
// ok, and from .gc-status otherwise, so a failed, busy or braked run keeps
// showing the last good figures and their age instead of dropping them.
//
// The run group describes the last run whatever its end: its result
// (ok, error, busy, brake, canceled as a 1/0 state set), end time,
// duration, the atime probe's verdict and the clock skew it measured, the
// last failure's time and the run counters. Only a GC run produces it;
// the last failure's time and the counters are carried over from the
// previous textfile ([ReadPrevious]), since .gc-status records successful
// runs only. `chunkgc metrics STORE` prints the status group from
// .gc-status and copies the run group from the textfile when it has one.
//
// # Naming
//
// Prometheus conventions: base units (seconds, bytes, ratios rather than
// percentages), _timestamp_seconds for Unix times, _total only for the
// counters that grow across runs (a run's figures are gauges: each run
// replaces them), and the label store on every series. [Defs] lists every
// metric; README "Metrics" is checked against it.
//
// # Textfile
//
// [WriteTextfile] encodes the registry with expfmt.MetricFamilyToText, as
// prometheus.WriteToTextfile does, but replaces the file through
// internal/atomicfile (temporary file in the same directory with O_EXCL and
// O_NOFOLLOW, fsync, rename, fsync of the directory) rather than through
// WriteToTextfile, which neither fsyncs the file nor the directory: after a
// power loss node_exporter could find an empty chunkgc_<store>.prom. The
// temporary name ends in .tmp_<random>, which the textfile collector, reading
// only *.prom, ignores.
package metrics
