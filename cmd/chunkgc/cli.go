package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"chunkgc/config"
	"chunkgc/gc"
	"chunkgc/locking"
)

// Exit codes (SPEC §10).
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitBrake       = 65 // the mass-deletion brake stopped a GC (EX_DATAERR)
	exitBusy        = 75
	exitInterrupted = 130 // SIGINT; SIGTERM gives 143
)

// usageError marks a command line the user has to correct (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// env is what every subcommand gets: the parsed common flags, the streams
// and a logger built from --log-format/--log-level.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *zap.Logger

	cmd        string // the command's name
	configPath string
	s3Config   string // PBS's s3.cfg; "" for s3.cfg beside configPath
	lockDir    string
	logFormat  string
	logLevel   string
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

func commands() []command {
	return []command{
		{"create", "[--reuse] [--owner USER] [--tuning PROPS] [--comment C] [--backend type=s3,client=ID,bucket=B [--overwrite-in-use]] NAME PATH   create or adopt; probe; register", runCreate},
		{"gc", "[--tuning PROPS] [--dry-run] [--force] [--fresh] [--output text|json] [--metrics-dir DIR] STORE   run garbage collection; resumes an interrupted one unless --fresh", runGC},
		{"check-atime", "[--tuning PROPS] STORE                           run the atime probe only; print the clock skew", runCheckAtime},
		{"status", "[--output text|json] STORE                            print the last GC result", runStatus},
		{"metrics", "[--metrics-dir DIR] STORE                            print the last GC result as Prometheus metrics", runMetrics},
		{"journal", "[--run RUNID | --digest HEX] [--output text|json] STORE   what GC runs removed, and why", runJournalCmd},
		{"restore", "[--run RUNID] [--digest HEX]... [--output text|json] STORE   move quarantined chunks back", runRestore},
		{"usage", "[--snapshots] [--what-if-forget SNAP]... [--what-if-keep-last N] [--memory MIB] [--output text|json] STORE   who uses the space", runUsage},
		{"demo", "[DIR]                                                  build a sample store and collect it", runDemo},
		{"ingest", "[--ns NS] [--chunk-size N] [--no-cache] STORE TYPE/ID FILE...   back up files into a new snapshot", runIngest},
		{"forget", "[--ns NS] STORE TYPE/ID/TIME                          remove one snapshot", runForget},
		{"snapshots", "STORE                                            list snapshots", runSnapshots},
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: chunkgc COMMAND [flags] ARGS")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, `
common flags (after the command name):
  --config FILE        datastore config (default /etc/chunkgc/datastore.cfg, env CHUNKGC_CONFIG)
  --s3-config FILE     s3.cfg of the S3 datastores (default: s3.cfg beside the datastore config, env CHUNKGC_S3_CONFIG)
  --lock-dir DIR       root of the per-store lock dirs (default `+locking.DefaultRoot+`, env CHUNKGC_LOCK_DIR)
  --log-format F       console or json (default: console on a terminal, else json)
  --log-level L        debug, info, warn, error (default info)

gc and metrics also take:
  --metrics-dir DIR    node_exporter's textfile dir: gc replaces chunkgc_<store>.prom there at the end
                       of every run, metrics reads the last run from it (env CHUNKGC_METRICS_DIR)

STORE is a configured datastore name, or a path when it contains '/'.

exit codes: 0 ok, 1 error, 2 usage, 65 mass-deletion brake (nothing removed), 75 busy (lock held), 130/143 interrupted (SIGINT/SIGTERM)`)
}

// run is the whole program; main only adds the signal context and os.Exit.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == args[0] {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "chunkgc: unknown command %q\n", args[0])
		printUsage(stderr)
		return exitUsage
	}
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, cmd: cmd.name}
	err := cmd.run(ctx, e, args[1:])
	if e.log != nil {
		_ = e.log.Sync()
	}
	return exitCode(ctx, e, cmd.name, err)
}

// exitCode is the one place that maps errors to exit codes.
func exitCode(ctx context.Context, e *env, name string, err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if ue, ok := errors.AsType[*usageError](err); ok {
		fmt.Fprintf(e.stderr, "chunkgc %s: %s\n", name, ue.msg)
		return exitUsage
	}
	report := func(msg string, code int) int {
		if e.log != nil {
			e.log.Error(msg, zap.Error(err))
		} else {
			fmt.Fprintf(e.stderr, "chunkgc %s: %v\n", name, err)
		}
		return code
	}
	// After SIGINT/SIGTERM every error is the interruption's, whatever the
	// step that noticed it wrapped it in.
	if ctx.Err() != nil {
		code := exitInterrupted
		if sigTerm(ctx) {
			code = 128 + int(unix.SIGTERM)
		}
		if e.log != nil {
			e.log.Warn("interrupted", zap.String("cause", fmt.Sprint(context.Cause(ctx))), zap.Int("exit", code))
		}
		return code
	}
	if errors.Is(err, locking.ErrLocked) {
		return report("busy: lock held by another process", exitBusy)
	}
	if errors.Is(err, gc.ErrBrake) {
		return report("mass-deletion brake tripped: nothing removed", exitBrake)
	}
	return report(name+" failed", exitError)
}

// sigTerm reports whether ctx was cancelled by SIGTERM. signal.NotifyContext
// names the signal in its cause.
func sigTerm(ctx context.Context) bool {
	return strings.Contains(fmt.Sprint(context.Cause(ctx)), unix.SIGTERM.String())
}

// flags creates a flag set with the common flags registered on it.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("chunkgc "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&e.configPath, "config", envOr("CHUNKGC_CONFIG", config.DefaultPath), "datastore config file")
	fs.StringVar(&e.s3Config, "s3-config", os.Getenv("CHUNKGC_S3_CONFIG"), "PBS's s3.cfg of the S3 datastores (default: s3.cfg beside --config)")
	fs.StringVar(&e.lockDir, "lock-dir", os.Getenv("CHUNKGC_LOCK_DIR"), "root of the per-store lock directories (default "+locking.DefaultRoot+")")
	fs.StringVar(&e.logFormat, "log-format", "", "console or json (default: console on a terminal)")
	fs.StringVar(&e.logLevel, "log-level", "info", "debug, info, warn or error")
	return fs
}

// parse parses args and builds the logger. Flag errors are usage errors.
func (e *env) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{msg: err.Error()}
	}
	log, err := newLogger(e.stderr, e.logFormat, e.logLevel)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	e.log = log
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// newLogger writes console logs to a terminal and JSON otherwise (journald).
func newLogger(w io.Writer, format, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			format = "console"
		}
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(cfg)
	case "console":
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout("2006-01-02T15:04:05Z07:00")
		enc = zapcore.NewConsoleEncoder(cfg)
	default:
		return nil, fmt.Errorf("--log-format %q: want console or json", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// commandNames is used by tests to check the usage text lists every command.
func commandNames() []string {
	var n []string
	for _, c := range commands() {
		n = append(n, c.name)
	}
	sort.Strings(n)
	return n
}
