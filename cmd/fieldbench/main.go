// Command fieldbench is fieldgate's load harness. On one machine it starts a
// farm of simulated Modbus TCP devices in a separate process, an MQTT broker
// (embedded mochi, or Mosquitto), the gateway as its own process with a
// generated config, and a subscriber that counts and checks what arrives;
// then it reports delivered readings/s, the gateway's CPU-seconds per
// million readings and peak RSS (from /proc), poll-to-broker latency,
// Modbus requests per cycle against the optimum, bytes per reading on the
// wire and in the buffer, and, with -outage, the backlog replay rate after
// the uplink is cut while polling continues.
//
//	fieldbench                                  # 10 devices × 50 registers every 100 ms for 15 s
//	fieldbench -n 100 -m 120 -poll 50ms -d 30s -outage 10s -runs 3
//
// Everything listens on 127.0.0.1 and everything stops by itself.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// params is one workload.
type params struct {
	Devices    int           `json:"devices"`
	Registers  int           `json:"registers"`
	FloatEvery int           `json:"float_every"` // every k-th tag is a float32 (2 registers); 0: all uint16
	Poll       time.Duration `json:"poll_ns"`
	Duration   time.Duration `json:"duration_ns"`
	Warmup     time.Duration `json:"warmup_ns"`
	Outage     time.Duration `json:"outage_ns"`
	Broker     string        `json:"broker"`
	Sync       string        `json:"sync"`
	Window     int           `json:"window,omitempty"`  // mqtt.window; 0: the gateway's default
	Profile    bool          `json:"profile,omitempty"` // the tags in one device profile that every device names, instead of inline per device
	Gateway    string        `json:"-"`
	KeepDir    bool          `json:"-"`
	CPUProfile string        `json:"-"` // FIELDGATE_CPUPROFILE for the gateway
	MemProfile string        `json:"-"` // FIELDGATE_MEMPROFILE for the gateway
}

func main() {
	if os.Getenv(farmEnv) == "1" || (len(os.Args) > 1 && os.Args[1] == "farm") {
		os.Exit(farmMain(os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(benchMain(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func farmMain(args []string) int {
	if len(args) > 0 && args[0] == "farm" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("fieldbench farm", flag.ContinueOnError)
	n := fs.Int("n", 10, "devices")
	m := fs.Int("m", 50, "holding registers per device")
	life := fs.Duration("max-life", 30*time.Minute, "exit after this long whatever happens")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := runFarm(*n, *m, *life, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fieldbench farm:", err)
		return 1
	}
	return 0
}

func benchMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fieldbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var p params
	fs.IntVar(&p.Devices, "n", 10, "simulated Modbus TCP devices, each on its own loopback port")
	fs.IntVar(&p.Registers, "m", 50, "holding registers per device, all read every poll")
	fs.IntVar(&p.FloatEvery, "float-every", 0, "make every k-th tag a float32 over 2 registers (0: all uint16)")
	fs.DurationVar(&p.Poll, "poll", 100*time.Millisecond, "poll interval of every device")
	fs.DurationVar(&p.Duration, "d", 15*time.Second, "steady-state measurement time (after -warmup)")
	fs.DurationVar(&p.Warmup, "warmup", 2*time.Second, "time before the measurement starts")
	fs.DurationVar(&p.Outage, "outage", 0, "after the steady phase, cut the uplink this long and measure the replay (0: no outage)")
	fs.StringVar(&p.Broker, "broker", "embedded", "broker: embedded (mochi, in the harness) or mosquitto")
	fs.StringVar(&p.Sync, "sync", "always", "the gateway's buffer.sync: always or interval")
	fs.IntVar(&p.Window, "window", 0, "the gateway's mqtt.window, in-flight PUBLISHes (0: its default)")
	fs.BoolVar(&p.Profile, "profile", false, "write the tags once, in a device profile every device names (as an integrator would for identical machines), instead of inline in every device")
	fs.StringVar(&p.Gateway, "gateway", "", "fieldgate binary to run (default: go build ./cmd/fieldgate once)")
	fs.BoolVar(&p.KeepDir, "keep", false, "keep the work directory (config, buffer, gateway log)")
	fs.StringVar(&p.CPUProfile, "cpuprofile", "", "write the gateway's CPU profile to this file (run N > 1 appends .N)")
	fs.StringVar(&p.MemProfile, "memprofile", "", "write the gateway's heap profile at its stop to this file (run N > 1 appends .N)")
	runs := fs.Int("runs", 1, "repeat the workload this many times and report medians")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file (- for stdout)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if p.Devices < 1 || p.Registers < 1 || p.Registers > 10000 || p.Poll <= 0 || p.Duration <= 0 || *runs < 1 || p.Window < 0 || p.Window > 65535 {
		fmt.Fprintln(stderr, "fieldbench: -n, -m (1..10000), -poll, -d and -runs must be positive, -window 0..65535")
		return 2
	}
	if p.Broker != "embedded" && p.Broker != "mosquitto" {
		fmt.Fprintln(stderr, "fieldbench: -broker is embedded or mosquitto")
		return 2
	}
	dir, err := os.MkdirTemp("", "fieldbench-")
	if err != nil {
		fmt.Fprintln(stderr, "fieldbench:", err)
		return 1
	}
	if !p.KeepDir {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(stderr, "fieldbench: work directory", dir)
	}
	if p.Gateway == "" {
		fmt.Fprintln(stderr, "fieldbench: building the gateway")
		p.Gateway, err = buildGateway(ctx, dir)
		if err != nil {
			fmt.Fprintln(stderr, "fieldbench:", err)
			return 1
		}
	}
	var results []result
	for i := range *runs {
		r, err := runOnce(ctx, p, dir, i, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "fieldbench: run %d: %v\n", i+1, err)
			return 1
		}
		results = append(results, r)
		if *runs > 1 {
			replay := ""
			if p.Outage > 0 && r.ReplayLiveReadings > 0 {
				replay = fmt.Sprintf(", replay %.0f readings/s with live p99 %.1f ms (%.2f×)", r.ReplayPerSec, r.ReplayLiveP99Ms, r.ReplayP99Ratio)
			}
			fmt.Fprintf(stderr, "run %d: %.0f readings/s, %.3f CPU-s/M, %.1f MiB peak RSS, p99 %.1f ms, lost %d%s\n",
				i+1, r.ReadingsPerSec, r.CPUSecPerMillion, r.PeakRSSMiB, r.LatencyP99Ms, r.LostRecords, replay)
		}
	}
	med := median(results)
	report := struct {
		Params  params   `json:"params"`
		Median  result   `json:"median"`
		Runs    []result `json:"runs"`
		Machine string   `json:"machine"`
	}{p, med, results, machine()}
	printTable(stdout, p, med, len(results))
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(report, "", "  ")
		b = append(b, '\n')
		if *jsonOut == "-" {
			_, _ = stdout.Write(b)
		} else if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "fieldbench:", err)
			return 1
		}
	}
	if med.LostRecords > 0 || med.BadPayloads > 0 {
		return 1
	}
	return 0
}
