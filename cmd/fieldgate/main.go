// Command fieldgate is the industrial edge gateway: it polls Modbus devices,
// keeps every reading in a durable on-disk queue, and publishes it to an
// MQTT broker.
//
// Usage:
//
//	fieldgate run -c FILE          run the gateway
//	fieldgate validate -c FILE     check a config file (--plan prints the read plan)
//	fieldgate read -c FILE DEV     read a device once, raw registers beside values
//	fieldgate scan --url URL       find the unit ids that answer on a link
//	fieldgate browse --url URL     list an OPC UA server's nodes (--emit yaml: as tags)
//	fieldgate demo                 simulated devices + embedded broker, live telemetry
//	fieldgate version              print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/gateway"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1 // the gateway stopped on an error
	exitConfig = 2 // bad usage or bad configuration
)

const usage = `fieldgate — industrial edge gateway: Modbus and OPC UA devices to MQTT, nothing lost.

Usage:
  fieldgate run -c FILE        run the gateway with the config FILE
  fieldgate validate -c FILE   check FILE and exit non-zero on any problem
                               (--plan also prints each device's read plan)
  fieldgate read -c FILE DEVICE[/TAG]
                               read a device (or one tag) once: raw registers
                               beside decoded values, for commissioning
  fieldgate read --url URL --address N [--type T --order O --count N]
                               the same with no config file
  fieldgate scan --url URL     find the unit ids that answer on a link
  fieldgate browse --url opc.tcp://HOST:PORT [--node ID] [--depth N] [--emit yaml]
                               list an OPC UA server's nodes with their ids, data
                               types and values, or print them as a tags: list
  fieldgate demo               simulated devices, an embedded broker and live
                               telemetry on the console, until Ctrl-C
  fieldgate version            print the version

Run "fieldgate COMMAND -h" for a command's flags.
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run" {
		settleMemory = limitMemory()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: tests call it with their own writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitConfig
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "read":
		return cmdRead(ctx, rest, stdout, stderr)
	case "scan":
		return cmdScan(ctx, rest, stdout, stderr)
	case "browse":
		return cmdBrowse(ctx, rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "fieldgate", versionString())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "fieldgate: unknown command %q\n\n%s", cmd, usage)
		return exitConfig
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		if v != "" {
			return v
		}
	}
	return "(devel)"
}

// logFlags are the logging flags every long-running command takes.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not a level; use debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch l.format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format: %q is not a format; use text or json", l.format)
	}
	log := slog.New(h)
	routePahoLogs(log)
	return log, nil
}

// pahoLog is where paho's package-level loggers write; routePahoLogs sets
// those loggers once per process and then only swaps this pointer.
var (
	pahoLog     atomic.Pointer[slog.Logger]
	pahoLogOnce sync.Once
)

// routePahoLogs sends paho's own log lines to log. paho's errors repeat
// what the uplink already reports once per state change, so they are logged
// at debug level; only its critical messages stay errors.
func routePahoLogs(log *slog.Logger) {
	pahoLog.Store(log.With("component", "paho"))
	pahoLogOnce.Do(func() {
		mqtt.CRITICAL = pahoLogger{slog.LevelError}
		mqtt.ERROR = pahoLogger{slog.LevelDebug}
		mqtt.WARN = pahoLogger{slog.LevelDebug}
	})
}

type pahoLogger struct{ level slog.Level }

func (p pahoLogger) Println(v ...any) {
	if l := pahoLog.Load(); l.Enabled(context.Background(), p.level) {
		l.Log(context.Background(), p.level, strings.TrimSpace(fmt.Sprintln(v...)))
	}
}

func (p pahoLogger) Printf(format string, v ...any) {
	if l := pahoLog.Load(); l.Enabled(context.Background(), p.level) {
		l.Log(context.Background(), p.level, strings.TrimSpace(fmt.Sprintf(format, v...)))
	}
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fieldgate run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (required)")
	var lf logFlags
	lf.register(fs)
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if *path == "" {
		fmt.Fprintln(stderr, "fieldgate run: -c FILE is required")
		return exitConfig
	}
	defer startProfile(stderr)()
	log, err := lf.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate run:", err)
		return exitConfig
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate: %s is not valid:\n%s\n", *path, indent(err))
		return exitConfig
	}
	g, err := gateway.New(cfg, gateway.Options{}, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return exitFail
	}
	settleMemory()
	if err := g.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("fieldgate stopped", "err", err)
		return exitFail
	}
	log.Info("fieldgate stopped")
	return exitOK
}

// startupMemoryLimit is the soft memory limit (runtime/debug.SetMemoryLimit)
// of `fieldgate run` while it loads its config and builds the gateway,
// when neither GOMEMLIMIT nor GOGC is set. Parsing a config of thousands of
// tags makes a large short-lived heap, which GOGC=100 alone lets grow to
// twice its size: on the issue-8 workload (12 000 tags) the limit cuts the
// process's peak RSS from about 62 MiB to 48. Once the gateway is built the
// limit is lifted and the start-up garbage returned to the system: a limit
// low enough to matter in the steady state costs CPU there (at 240 k
// readings/s, GOMEMLIMIT=32MiB keeps about 10 MiB less resident but
// collects three times as often, about a fifth more CPU; see
// docs/benchmarks.md), so that is left to GOMEMLIMIT.
const startupMemoryLimit = 40 << 20

// steadyGCPercent is the GC target (GOGC) of `fieldgate run` once the
// gateway is built, when neither GOMEMLIMIT nor GOGC is set: Go's default,
// set again after the start-up limit is lifted. It was 50 while every
// device kept its own copy of its compiled tags (12 MiB of live data at
// 12 000 tags); with devices of one profile sharing them the live heap is
// about 6 MiB, and 100 costs 9 % less CPU than 50 at the issue-8 workload
// for 4 MiB more RSS (33.9 against 29.6 MiB peak; docs/benchmarks.md,
// "Acknowledgements join the next poll's commit").
const steadyGCPercent = 100

// settleMemory is called by `fieldgate run` once the gateway is built;
// main sets it for the process (run called from tests changes no runtime
// setting).
var settleMemory = func() {}

// limitMemory sets startupMemoryLimit unless GOMEMLIMIT or GOGC is set, and
// returns the function that lifts it, sets steadyGCPercent and returns the
// heap's free pages to the system.
func limitMemory() (settle func()) {
	if os.Getenv("GOMEMLIMIT") != "" || os.Getenv("GOGC") != "" {
		return func() {}
	}
	prev := debug.SetMemoryLimit(startupMemoryLimit)
	return func() {
		debug.SetMemoryLimit(prev)
		debug.SetGCPercent(steadyGCPercent)
		debug.FreeOSMemory()
	}
}

// indent puts each line of a (possibly joined) error on its own indented line.
func indent(err error) string {
	lines := strings.Split(strings.TrimRight(err.Error(), "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
