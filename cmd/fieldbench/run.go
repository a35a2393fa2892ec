package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/telemetry"
)

// result is one run's measurements. Rates and costs are over the steady
// window; the replay fields are zero without -outage.
type result struct {
	ReadingsPerSec   float64 `json:"readings_per_s"`
	OfferedPerSec    float64 `json:"offered_readings_per_s"` // devices × tags / poll
	CPUSecPerMillion float64 `json:"cpu_s_per_million_readings"`
	CPUCores         float64 `json:"gateway_cpu_cores"`         // CPU-seconds per second
	KernelShare      float64 `json:"gateway_kernel_share"`      // stime / (utime + stime) over the steady window
	PeakRSSMiB       float64 `json:"peak_rss_mib"`              // VmHWM at the end of the steady window
	RSSAnonMiB       float64 `json:"rss_anon_mib"`              // RssAnon then: heap, stacks
	RSSFileMiB       float64 `json:"rss_file_mib"`              // RssFile then: the binary and the bbolt mmap
	ReadCallsPerRec  float64 `json:"read_syscalls_per_record"`  // syscr of /proc/<pid>/io over the steady window
	WriteCallsPerRec float64 `json:"write_syscalls_per_record"` // syscw
	// The buffer's group commit over the steady window: commits from the
	// gateway's /metrics, fdatasync calls from perf (-1 without perf), and
	// the bytes the gateway sent to the storage layer (/proc/<pid>/io
	// write_bytes: bbolt's pages and meta pages).
	CommitsPerSec      float64 `json:"buffer_commits_per_s"`
	BatchesPerCommit   float64 `json:"buffer_batches_per_commit"`
	ReadingsPerCommit  float64 `json:"buffer_readings_per_commit"`
	FdatasyncPerSec    float64 `json:"fdatasync_per_s"`
	DiskBytesPerRecord float64 `json:"disk_write_bytes_per_record"`
	LatencyP50Ms       float64 `json:"latency_p50_ms"`
	LatencyP99Ms       float64 `json:"latency_p99_ms"`
	RequestsPerCycle   float64 `json:"modbus_requests_per_cycle"` // per device
	OptimumPerCycle    float64 `json:"modbus_optimum_per_cycle"`
	WireBytesPerRead   float64 `json:"wire_bytes_per_reading"`  // MQTT payload
	CodecBytesPerRead  float64 `json:"codec_bytes_per_reading"` // telemetry codec value, one batch of this layout
	ProducedRecords    int64   `json:"produced_records"`
	DeliveredRecords   int64   `json:"delivered_records"`
	DeliveredReadings  int64   `json:"delivered_readings"`
	LeftInBuffer       int64   `json:"left_in_buffer_records"` // not yet acked when the gateway stopped
	LostRecords        int64   `json:"lost_records"`           // neither delivered nor in the buffer
	DupRecords         int64   `json:"duplicate_records"`
	Reordered          int64   `json:"reordered_records"` // older than the previous record of their device and stream (live, historical)
	BadPayloads        int64   `json:"bad_payloads"`
	// With -outage.
	BufferBytesPerRead float64 `json:"buffer_file_bytes_per_reading,omitempty"`
	BacklogReadings    int64   `json:"backlog_readings,omitempty"` // delivered as historical after the restore
	ReconnectSec       float64 `json:"reconnect_s,omitempty"`      // restore to the first replayed record
	ReplayPerSec       float64 `json:"replay_readings_per_s,omitempty"`
	ReplaySec          float64 `json:"replay_s,omitempty"` // first to last historical record
	// Live records (not historical) that reached the broker while the
	// backlog was replaying, and their poll-to-broker latency.
	ReplayLiveReadings int64   `json:"replay_live_readings,omitempty"`
	ReplayLiveP50Ms    float64 `json:"replay_live_latency_p50_ms,omitempty"`
	ReplayLiveP99Ms    float64 `json:"replay_live_latency_p99_ms,omitempty"`
	// ReplayP99Ratio is ReplayLiveP99Ms over the same run's steady
	// LatencyP99Ms (the "live p99 at most doubled").
	ReplayP99Ratio   float64 `json:"replay_live_p99_ratio,omitempty"`
	ReplayPeakRSSMiB float64 `json:"replay_peak_rss_mib,omitempty"`
	// CPU while the backlog was replaying: the gateway's cores and
	// CPU-seconds per million readings delivered (backlog and live), and
	// the busy cores of the whole machine (harness, broker and farm too).
	ReplayGatewayCores float64 `json:"replay_gateway_cpu_cores,omitempty"`
	ReplayCPUSecPerM   float64 `json:"replay_cpu_s_per_million_readings,omitempty"`
	ReplayMachineCores float64 `json:"replay_machine_busy_cores,omitempty"`
	ReplayHarnessCores float64 `json:"replay_harness_cpu_cores,omitempty"` // broker and subscriber (and mosquitto's client side)
	ReplayFarmCores    float64 `json:"replay_farm_cpu_cores,omitempty"`
}

// cpuSample is the gateway's and the machine's CPU time at one moment.
type cpuSample struct {
	at                  int64 // Unix ns
	gw, all, self, farm time.Duration
}

func sampleCPU(pid, farm int) cpuSample {
	s := cpuSample{at: time.Now().UnixNano()}
	s.gw, _ = cpuTime(pid)
	s.all, _ = machineBusy()
	s.self, _ = cpuTime(os.Getpid())
	s.farm, _ = cpuTime(farm)
	return s
}

// cpuBetween returns the CPU used between the last sample at or before
// from and the first at or after to (wall: the time between them).
func cpuBetween(ss []cpuSample, from, to int64) (used cpuSample, wall time.Duration) {
	i, j := -1, -1
	for k, s := range ss {
		if s.at <= from {
			i = k
		}
		if s.at >= to && j < 0 {
			j = k
		}
	}
	if i < 0 || j < 0 || j <= i {
		return used, 0
	}
	a, b := ss[i], ss[j]
	return cpuSample{gw: b.gw - a.gw, all: b.all - a.all, self: b.self - a.self, farm: b.farm - a.farm}, time.Duration(b.at - a.at)
}

// buildGateway builds cmd/fieldgate into dir once, as the Makefile builds
// what ships: CGO_ENABLED=0, a static binary (no libc pages in its RSS).
func buildGateway(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "fieldgate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/fieldgate/fieldgate/cmd/fieldgate")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/fieldgate (run fieldbench inside the module, or pass -gateway): %w", err)
	}
	return out, nil
}

// tagsOf returns the layout's tags: name, offset, type.
type tagDef struct {
	name   string
	offset int
	typ    string
}

func tagsOf(p params) []tagDef {
	var tags []tagDef
	for off, i := 0, 0; off < p.Registers; i++ {
		t := tagDef{name: fmt.Sprintf("r%03d", off), offset: off, typ: "uint16"}
		if p.FloatEvery > 0 && i%p.FloatEvery == p.FloatEvery-1 && off+1 < p.Registers {
			t.typ = "float32"
			off++
		}
		off++
		tags = append(tags, t)
	}
	return tags
}

func writeConfig(path string, p params, bufPath, mqttAddr string, apiPort int, ports []int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: { id: fb }\n")
	fmt.Fprintf(&b, "api: { listen: 127.0.0.1:%d }\n", apiPort)
	fmt.Fprintf(&b, "buffer: { path: %s, max_bytes: 4GiB, sync: %s }\n", bufPath, p.Sync)
	fmt.Fprintf(&b, "mqtt:\n  url: tcp://%s\n  qos: 1\n  format: json\n  topic: \"fb/data/{device}\"\n  status_topic: \"fb/status\"\n", mqttAddr)
	if p.Window > 0 {
		fmt.Fprintf(&b, "  window: %d\n", p.Window)
	}
	tags := tagsOf(p)
	if p.Profile {
		var pf strings.Builder
		pf.WriteString("description: fieldbench device\ntags:\n")
		for _, t := range tags {
			fmt.Fprintf(&pf, "  - { name: %s, table: holding, offset: %d, type: %s }\n", t.name, t.offset, t.typ)
		}
		dir := filepath.Join(filepath.Dir(path), "profiles")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "fieldbench.yaml"), []byte(pf.String()), 0o644); err != nil {
			return err
		}
	}
	b.WriteString("devices:\n")
	for i, port := range ports {
		fmt.Fprintf(&b, "  - name: d%03d\n    modbus: { url: tcp://127.0.0.1:%d, unit: 1, timeout: 2s }\n    poll: %s\n", i, port, p.Poll)
		if p.Profile {
			b.WriteString("    profile: fieldbench\n")
			continue
		}
		b.WriteString("    tags:\n")
		for _, t := range tags {
			fmt.Fprintf(&b, "      - { name: %s, table: holding, offset: %d, type: %s }\n", t.name, t.offset, t.typ)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// startBroker starts the broker and subscribes sub to the data topics. It
// returns the broker's address and a stop function.
func startBroker(ctx context.Context, p params, dir string, sub *subscriber) (string, func(), error) {
	if p.Broker == "embedded" {
		b, err := broker.Start("127.0.0.1:0", slog.New(slog.DiscardHandler))
		if err != nil {
			return "", nil, err
		}
		if err := b.Subscribe("fb/data/+", 1, func(_ string, payload []byte, _ bool) { sub.handle(payload) }); err != nil {
			_ = b.Close()
			return "", nil, err
		}
		return b.Addr(), func() { _ = b.Close() }, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n", port)), 0o644); err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, "mosquitto", "-c", conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start mosquitto: %w", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	stopMosq := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("fieldbench-sub").
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).SetAutoReconnect(true)
	c := paho.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		stopMosq()
		return "", nil, fmt.Errorf("subscriber: connect to mosquitto: %v", t.Error())
	}
	if t := c.Subscribe("fb/data/+", 1, func(_ paho.Client, m paho.Message) { sub.handle(m.Payload()) }); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		c.Disconnect(0)
		stopMosq()
		return "", nil, fmt.Errorf("subscriber: subscribe: %v", t.Error())
	}
	return addr, func() { c.Disconnect(100); stopMosq() }, nil
}

func runOnce(ctx context.Context, p params, dir string, run int, stderr io.Writer) (r result, err error) {
	rdir := filepath.Join(dir, fmt.Sprintf("run%d", run))
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return r, err
	}
	sub := newSubscriber()
	brokerAddr, stopBroker, err := startBroker(ctx, p, rdir, sub)
	if err != nil {
		return r, err
	}
	defer stopBroker()
	maxLife := p.Warmup + p.Duration + 30*p.Outage + 5*time.Minute
	fm, err := startFarm(ctx, p.Devices, p.Registers, maxLife)
	if err != nil {
		return r, err
	}
	defer fm.stop()
	px, err := startProxy(brokerAddr)
	if err != nil {
		return r, err
	}
	defer px.close()

	bufPath := filepath.Join(rdir, "buffer.db")
	cfgPath := filepath.Join(rdir, "fieldgate.yaml")
	apiPort, err := freePort()
	if err != nil {
		return r, err
	}
	if err := writeConfig(cfgPath, p, bufPath, px.addr(), apiPort, fm.ports); err != nil {
		return r, err
	}
	logf, err := os.Create(filepath.Join(rdir, "gateway.log"))
	if err != nil {
		return r, err
	}
	defer logf.Close()
	gw := exec.Command(p.Gateway, "run", "-c", cfgPath, "-log-level", "warn")
	gw.Stdout, gw.Stderr = logf, logf
	gw.Env = os.Environ()
	for _, pe := range []struct{ env, path string }{{"FIELDGATE_CPUPROFILE", p.CPUProfile}, {"FIELDGATE_MEMPROFILE", p.MemProfile}} {
		if pe.path != "" {
			if run > 0 {
				pe.path += "." + strconv.Itoa(run+1)
			}
			gw.Env = append(gw.Env, pe.env+"="+pe.path)
		}
	}
	gw.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := gw.Start(); err != nil {
		return r, fmt.Errorf("start gateway: %w", err)
	}
	pid := gw.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- gw.Wait() }()
	stopped := false
	stopGateway := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = gw.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = gw.Process.Kill()
			<-exited
			return errors.New("gateway did not stop within 30 s of SIGTERM; killed")
		}
	}
	defer func() { _ = stopGateway() }()

	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			exited <- err
			return fmt.Errorf("gateway exited early (%v); see its log", err)
		case <-time.After(d):
			return nil
		}
	}
	if err := sleep(p.Warmup); err != nil {
		return r, err
	}
	user0, kern0, err := cpuTimes(pid)
	if err != nil {
		return r, err
	}
	cpu0 := user0 + kern0
	io0, _ := procIO(pid)
	commits0, appended0, scrapeErr := scrapeBuffer(ctx, apiPort)
	syncs := startSyscallCounter(pid, rdir)
	t0 := time.Now()
	if err := sleep(p.Duration); err != nil {
		syncs.stop()
		return r, err
	}
	user1, kern1, err := cpuTimes(pid)
	if err != nil {
		syncs.stop()
		return r, err
	}
	cpu1 := user1 + kern1
	io1, _ := procIO(pid)
	t1 := time.Now()
	fdatasyncs := syncs.stop()
	commits1, appended1, err := scrapeBuffer(ctx, apiPort)
	if scrapeErr == nil {
		scrapeErr = err
	}
	if scrapeErr != nil {
		fmt.Fprintf(stderr, "fieldbench: buffer commits not measured: %v\n", scrapeErr)
	}
	rss, err := peakRSS(pid)
	if err != nil {
		return r, err
	}
	r.PeakRSSMiB = float64(rss) / (1 << 20)
	if st, err := procStatus(pid); err == nil {
		r.RSSAnonMiB, r.RSSFileMiB = float64(st["RssAnon"])/(1<<20), float64(st["RssFile"])/(1<<20)
	}

	var restore time.Time
	var fileSize int64
	var samples []cpuSample
	if p.Outage > 0 {
		px.setCut(true)
		if err := sleep(p.Outage); err != nil {
			return r, err
		}
		if fi, err := os.Stat(bufPath); err == nil {
			fileSize = fi.Size()
		}
		restore = time.Now()
		samples = append(samples, sampleCPU(pid, fm.cmd.Process.Pid))
		px.setCut(false)
		// Wait for the backlog to drain: a live record has arrived and no
		// historical record for a while.
		limit := time.Now().Add(30*p.Outage + time.Minute)
		for time.Now().Before(limit) {
			if err := sleep(200 * time.Millisecond); err != nil {
				return r, err
			}
			samples = append(samples, sampleCPU(pid, fm.cmd.Process.Pid))
			msgs := sub.snapshot()
			var lastBacklog int64
			live := false
			for i := len(msgs) - 1; i >= 0 && msgs[i].at > restore.UnixNano(); i-- {
				if msgs[i].hist && lastBacklog == 0 {
					lastBacklog = msgs[i].at
				}
				if !msgs[i].hist {
					live = true
				}
			}
			if live && lastBacklog > 0 && time.Since(time.Unix(0, lastBacklog)) > time.Second+2*p.Poll {
				break
			}
		}
		if rss, err := peakRSS(pid); err == nil {
			r.ReplayPeakRSSMiB = float64(rss) / (1 << 20)
		}
	}

	// Stop from the source: the gateway (collectors first, then the
	// uplink's drain), then give the broker a moment to deliver.
	if err := stopGateway(); err != nil {
		fmt.Fprintf(stderr, "fieldbench: gateway stop: %v\n", err)
	}
	time.Sleep(300 * time.Millisecond)
	totalReq, err := fm.requests()
	if err != nil {
		return r, fmt.Errorf("farm counters: %w", err)
	}

	// What the gateway left in its buffer.
	left := map[uint64]bool{}
	var lastSeq uint64
	q, err := buffer.Open(bufPath, buffer.Options{MaxBytes: 4 << 30}, slog.New(slog.DiscardHandler))
	if err != nil {
		return r, fmt.Errorf("open the gateway's buffer: %w", err)
	}
	_, lastSeq = q.Depth()
	for after, i := uint64(0), 0; i < 1_000_000; i++ {
		recs, err := q.Peek(after, 1000)
		if err != nil || len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			left[rec.Seq] = true
			after = rec.Seq
		}
	}
	_ = q.Close()

	sub.mu.Lock()
	msgs := sub.msgs
	r.DupRecords, r.Reordered, r.BadPayloads = sub.dups, sub.reorder, sub.bad
	wire := sub.bytes
	for s := uint64(1); s <= lastSeq; s++ {
		if !sub.has(s) && !left[s] {
			r.LostRecords++
		}
	}
	sub.mu.Unlock()

	tags := tagsOf(p)
	r.ProducedRecords = int64(lastSeq)
	r.LeftInBuffer = int64(len(left))
	r.DeliveredRecords = int64(len(msgs))
	r.OfferedPerSec = float64(p.Devices*len(tags)) / p.Poll.Seconds()
	var steady int64
	for _, a := range msgs {
		r.DeliveredReadings += int64(a.points)
		if a.at >= t0.UnixNano() && a.at < t1.UnixNano() {
			steady += int64(a.points)
		}
	}
	win := t1.Sub(t0).Seconds()
	r.ReadingsPerSec = float64(steady) / win
	if steady > 0 {
		r.CPUSecPerMillion = (cpu1 - cpu0).Seconds() / (float64(steady) / 1e6)
	}
	r.CPUCores = (cpu1 - cpu0).Seconds() / win
	if cpu1 > cpu0 {
		r.KernelShare = float64(kern1-kern0) / float64(cpu1-cpu0)
	}
	var steadyRecs int64
	for _, a := range msgs {
		if a.at >= t0.UnixNano() && a.at < t1.UnixNano() {
			steadyRecs++
		}
	}
	if steadyRecs > 0 && io0 != nil && io1 != nil {
		r.ReadCallsPerRec = float64(io1["syscr"]-io0["syscr"]) / float64(steadyRecs)
		r.WriteCallsPerRec = float64(io1["syscw"]-io0["syscw"]) / float64(steadyRecs)
		r.DiskBytesPerRecord = float64(io1["write_bytes"]-io0["write_bytes"]) / float64(steadyRecs)
	}
	if scrapeErr == nil && commits1 > commits0 {
		n := commits1 - commits0
		r.CommitsPerSec = n / win
		r.BatchesPerCommit = (appended1 - appended0) / n
		r.ReadingsPerCommit = r.BatchesPerCommit * float64(len(tags))
	}
	r.FdatasyncPerSec = -1
	if fdatasyncs >= 0 {
		r.FdatasyncPerSec = float64(fdatasyncs) / win
	}
	lat := latencies(msgs, func(a arrival) bool { return a.at >= t0.UnixNano() && a.at < t1.UnixNano() })
	r.LatencyP50Ms, r.LatencyP99Ms = quantile(lat, 0.50), quantile(lat, 0.99)
	if lastSeq > 0 {
		r.RequestsPerCycle = float64(totalReq) / float64(lastSeq)
	}
	r.OptimumPerCycle = math.Ceil(float64(p.Registers) / 125)
	if r.DeliveredReadings > 0 {
		r.WireBytesPerRead = float64(wire) / float64(r.DeliveredReadings)
	}
	r.CodecBytesPerRead = codecBytesPerReading(tags)

	if p.Outage > 0 {
		// The backlog is what the gateway sent as historical after the
		// restore: the records committed before its new connection, which
		// includes those polled while it waited to reconnect.
		restoreNs := restore.UnixNano()
		var first, last int64
		for _, a := range msgs {
			if a.at > restoreNs && a.hist {
				r.BacklogReadings += int64(a.points)
				if first == 0 {
					first = a.at
				}
				last = a.at
			}
		}
		if first > 0 {
			r.ReconnectSec = float64(first-restoreNs) / 1e9
			r.ReplaySec = float64(last-first) / 1e9
			if last > first {
				r.ReplayPerSec = float64(r.BacklogReadings) / r.ReplaySec
			}
			// Live records: committed on the new connection, delivered
			// while the backlog was replaying.
			during := func(a arrival) bool { return !a.hist && a.at >= first && a.at <= last }
			for _, a := range msgs {
				if during(a) {
					r.ReplayLiveReadings += int64(a.points)
				}
			}
			live := latencies(msgs, during)
			r.ReplayLiveP50Ms, r.ReplayLiveP99Ms = quantile(live, 0.50), quantile(live, 0.99)
			if r.LatencyP99Ms > 0 {
				r.ReplayP99Ratio = r.ReplayLiveP99Ms / r.LatencyP99Ms
			}
			if used, wall := cpuBetween(samples, first, last); wall > 0 {
				r.ReplayGatewayCores = used.gw.Seconds() / wall.Seconds()
				r.ReplayMachineCores = used.all.Seconds() / wall.Seconds()
				r.ReplayHarnessCores = used.self.Seconds() / wall.Seconds()
				r.ReplayFarmCores = used.farm.Seconds() / wall.Seconds()
				if n := r.BacklogReadings + r.ReplayLiveReadings; n > 0 {
					// The samples span a little more than the replay.
					r.ReplayCPUSecPerM = r.ReplayGatewayCores * r.ReplaySec / (float64(n) / 1e6)
				}
			}
		}
		if r.BacklogReadings > 0 {
			r.BufferBytesPerRead = float64(fileSize) / float64(r.BacklogReadings)
		}
	}
	return r, nil
}

// codecBytesPerReading encodes one batch of this layout as the buffer
// stores it and divides by its points.
func codecBytesPerReading(tags []tagDef) float64 {
	b := telemetry.Batch{Device: "d000"}
	now := time.Now()
	for i, t := range tags {
		v := telemetry.Uint(uint64(i * 37))
		if t.typ == "float32" {
			v = telemetry.Float32(float32(i) * 1.5)
		}
		b.Points = append(b.Points, telemetry.Point{Tag: t.name, Value: v, Time: now})
	}
	return float64(len(telemetry.AppendBatch(nil, &b))) / float64(len(tags))
}

// median takes the median of every numeric field across runs.
func median(rs []result) result {
	var out result
	ov := reflect.ValueOf(&out).Elem()
	for f := range ov.NumField() {
		xs := make([]float64, len(rs))
		for i := range rs {
			v := reflect.ValueOf(rs[i]).Field(f)
			if v.CanFloat() {
				xs[i] = v.Float()
			} else {
				xs[i] = float64(v.Int())
			}
		}
		slices.Sort(xs)
		m := xs[len(xs)/2]
		if len(xs)%2 == 0 {
			m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
		}
		if ov.Field(f).CanFloat() {
			ov.Field(f).SetFloat(m)
		} else {
			ov.Field(f).SetInt(int64(m))
		}
	}
	return out
}

func printTable(w io.Writer, p params, r result, runs int) {
	what := "run"
	if runs > 1 {
		what = fmt.Sprintf("median of %d runs", runs)
	}
	fmt.Fprintf(w, "fieldbench: %d devices × %d registers (%d tags) every %s, JSON, QoS 1, sync %s, broker %s, %s of %s\n",
		p.Devices, p.Registers, len(tagsOf(p)), p.Poll, p.Sync, p.Broker, what, p.Duration)
	row := func(k, v string) { fmt.Fprintf(w, "  %-38s %s\n", k, v) }
	f := func(x float64, prec int) string { return strconv.FormatFloat(x, 'f', prec, 64) }
	row("readings/s delivered (offered)", fmt.Sprintf("%s (%s)", f(r.ReadingsPerSec, 0), f(r.OfferedPerSec, 0)))
	row("gateway CPU-s per million readings", f(r.CPUSecPerMillion, 3)+fmt.Sprintf("  (%s cores, %s %% in the kernel)", f(r.CPUCores, 2), f(100*r.KernelShare, 0)))
	row("gateway peak RSS", f(r.PeakRSSMiB, 1)+" MiB")
	row("gateway RSS at the end: anon / file", f(r.RSSAnonMiB, 1)+" / "+f(r.RSSFileMiB, 1)+" MiB")
	row("gateway read / write syscalls per record", f(r.ReadCallsPerRec, 2)+" / "+f(r.WriteCallsPerRec, 2))
	row("buffer commits/s (batches, readings per commit)", fmt.Sprintf("%s (%s, %s)", f(r.CommitsPerSec, 0), f(r.BatchesPerCommit, 2), f(r.ReadingsPerCommit, 0)))
	row("gateway fdatasync/s (-1: no perf)", f(r.FdatasyncPerSec, 0))
	row("gateway disk write bytes per record", f(r.DiskBytesPerRecord, 0))
	row("poll-to-broker latency p50 / p99", f(r.LatencyP50Ms, 1)+" / "+f(r.LatencyP99Ms, 1)+" ms")
	row("Modbus requests per cycle (optimum)", fmt.Sprintf("%s (%s)", f(r.RequestsPerCycle, 3), f(r.OptimumPerCycle, 0)))
	row("bytes per reading: wire / codec", f(r.WireBytesPerRead, 1)+" / "+f(r.CodecBytesPerRead, 1))
	row("records produced / delivered / left", fmt.Sprintf("%d / %d / %d", r.ProducedRecords, r.DeliveredRecords, r.LeftInBuffer))
	row("records lost / duplicate / reordered", fmt.Sprintf("%d / %d / %d", r.LostRecords, r.DupRecords, r.Reordered))
	if p.Outage > 0 {
		row("outage", p.Outage.String())
		row("backlog readings", strconv.FormatInt(r.BacklogReadings, 10))
		row("buffer file bytes per reading", f(r.BufferBytesPerRead, 1))
		row("reconnect after restore", f(r.ReconnectSec, 2)+" s")
		row("replay readings/s (replay time)", f(r.ReplayPerSec, 0)+" ("+f(r.ReplaySec, 1)+" s)")
		row("live readings/s during replay", f(float64(r.ReplayLiveReadings)/max(r.ReplaySec, 1e-9), 0))
		if r.ReplayLiveReadings > 0 {
			row("live latency during replay p50 / p99", f(r.ReplayLiveP50Ms, 1)+" / "+f(r.ReplayLiveP99Ms, 1)+" ms ("+
				f(r.ReplayP99Ratio, 2)+"× the steady p99)")
		} else {
			row("live latency during replay p50 / p99", "no live reading arrived during the replay")
		}
		row("CPU during replay: gateway / machine", f(r.ReplayGatewayCores, 2)+" / "+f(r.ReplayMachineCores, 2)+
			" cores ("+f(r.ReplayCPUSecPerM, 3)+" gateway CPU-s per M readings)")
		row("CPU during replay: harness+broker / farm", f(r.ReplayHarnessCores, 2)+" / "+f(r.ReplayFarmCores, 2)+" cores")
		row("peak RSS after replay", f(r.ReplayPeakRSSMiB, 1)+" MiB")
	}
}

func machine() string {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d CPUs, %s, %s", runtime.NumCPU(), model, runtime.Version())
}
