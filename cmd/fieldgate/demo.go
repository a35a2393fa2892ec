package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/gateway"
	"github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/sim/opcuasim"
)

// demoConfig is the built-in config of `fieldgate demo`; %s are the buffer
// path, the broker address, the press's address, the serial server's
// address (two RTU slaves share it) and the OPC UA server's URL.
const demoConfig = `gateway: { id: demo-gw }
buffer: { path: %s, max_bytes: 64MiB }
mqtt:
  url: tcp://%s
  topic: "fieldgate/{gateway}/{device}"
devices:
  - name: press-1
    modbus: { url: tcp://%s, unit: 1, timeout: 500ms }
    poll: 1s
    tags:
      - { name: oil_temp, address: 40001, type: float32, order: CDAB, unit: degC }
      - { name: pressure, address: 40003, type: float32, unit: bar }
      - { name: strokes,  address: 40005, type: uint32, unit: pcs }
      - { name: speed,    table: holding, offset: 6, type: uint16, scale: 0.1, unit: rpm }
      - { name: running,  address: 1, type: bool }
      - { name: alarm,    address: 40008, type: bool, bit: 3 }
      - { name: setpoint, address: 40009, type: uint16, scale: 0.1, unit: bar, writable: true, min: 0, max: 10, rate_limit: 10/min }
  - name: boiler-2            # an RTU slave behind a serial server ...
    modbus: { url: rtuovertcp://%[4]s, unit: 1, timeout: 500ms }
    poll: 2s
    tags:
      - { name: water_temp, address: 30001, type: int16, scale: 0.1, unit: degC }
      - { name: flow,       address: 30002, type: uint16, scale: 0.01, unit: m3/h, deadband: 0.5 }
      - { name: burner_on,  address: 10001, type: bool }
  - name: meter-3             # ... and a second one on the same RS-485 bus
    modbus: { url: rtuovertcp://%[4]s, unit: 7, timeout: 500ms }
    poll: 2s
    tags:
      - { name: voltage_l1, address: 30001, type: float32, unit: V }
      - { name: power,      address: 30053, type: float32, unit: W }
      - { name: energy,     address: 30073, type: float32, unit: kWh }
  - name: cnc-4               # an OPC UA server: subscribed values arrive as they change
    opcua: { url: "%[5]s" }
    poll: 500ms
    tags:
      - { name: spindle_temp, node: "nsu=urn:fieldgate:sim;s=Temperature", mode: subscribe, unit: degC }
      - { name: coolant,      node: "nsu=urn:fieldgate:sim;s=Pressure", mode: subscribe, unit: bar }
      - { name: parts,        node: "nsu=urn:fieldgate:sim;s=Counter", mode: subscribe, unit: pcs }
      - { name: running,      node: "nsu=urn:fieldgate:sim;s=Running", mode: subscribe }
`

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fieldgate demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	lf := logFlags{}
	lf.register(fs)
	fs.Lookup("log-level").DefValue = "warn"
	lf.level = "warn"
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	log, err := lf.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate demo:", err)
		return exitConfig
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	// The embedded broker is part of the show, not the product: only its errors.
	brokerLog := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if err := runDemo(ctx, stdout, log, brokerLog); err != nil {
		fmt.Fprintln(stderr, "fieldgate demo:", err)
		return exitFail
	}
	return exitOK
}

func runDemo(ctx context.Context, out io.Writer, log, brokerLog *slog.Logger) error {
	dir, err := os.MkdirTemp("", "fieldgate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	press, err := startPress(ctx)
	if err != nil {
		return err
	}
	defer press.Close()
	bridge, err := startSerialServer(ctx)
	if err != nil {
		return err
	}
	defer bridge.Close()

	cnc, err := startCNC(ctx)
	if err != nil {
		return err
	}
	defer cnc.Close()

	brk, err := broker.Start("127.0.0.1:0", brokerLog)
	if err != nil {
		return err
	}
	defer brk.Close()

	text := fmt.Sprintf(demoConfig, filepath.Join(dir, "buffer.db"), brk.Addr(), press.Addr(), bridge.Addr(), cnc.Addr())
	cfg, err := config.Parse("demo.yaml", []byte(text))
	if err != nil {
		return fmt.Errorf("built-in config: %w", err)
	}
	fmt.Fprintf(out, "fieldgate demo: a simulated Modbus TCP press, a simulated serial server with two RTU slaves,\na simulated OPC UA server, an MQTT broker on %s, and this config:\n\n%s\n", brk.Addr(), text)
	fmt.Fprintf(out, "Telemetry as it arrives at the broker (subscribe yourself: mosquitto_sub -h 127.0.0.1 -p %s -t 'fieldgate/#' -v).\n", portOf(brk.Addr()))
	fmt.Fprintf(out, "Write the press's setpoint (0..10 bar; the answer shows below):\n  mosquitto_pub -h 127.0.0.1 -p %s -t fieldgate/demo-gw/press-1/set -m '{\"id\":\"1\",\"tag\":\"setpoint\",\"value\":6.5}'\nCtrl-C stops.\n\n", portOf(brk.Addr()))

	var mu sync.Mutex // serialises console lines
	stopped := false  // no lines after the summary
	err = brk.Subscribe("fieldgate/#", 1, func(topic string, payload []byte, retained bool) {
		line := formatMessage(topic, payload)
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			fmt.Fprintln(out, line)
		}
	})
	if err != nil {
		return err
	}

	g, err := gateway.New(cfg, gateway.Options{}, log)
	if err != nil {
		return err
	}
	err = g.Run(ctx)
	st := g.Status()
	mu.Lock()
	fmt.Fprintf(out, "\nstopped: %d messages published, %d acknowledged, %d records left in the buffer\n",
		st.Uplink.Published, st.Uplink.Acked, st.Buffer.Records)
	stopped = true
	mu.Unlock()
	return err
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

// formatMessage renders one MQTT message for the console: a status line, or
// one line per device batch with every tag's value, unit and quality.
func formatMessage(topic string, payload []byte) string {
	if strings.HasSuffix(topic, "/set") || strings.HasSuffix(topic, "/set/result") {
		return fmt.Sprintf("%s  %s  %s", time.Now().Format("15:04:05.000"), topic, payload)
	}
	var m struct {
		Device string `json:"device"`
		Seq    uint64 `json:"seq"`
		Status string `json:"status"`
		Points []struct {
			Tag     string          `json:"tag"`
			TS      int64           `json:"ts"`
			Value   json.RawMessage `json:"value"`
			Unit    string          `json:"unit"`
			Quality string          `json:"quality"`
			Reason  string          `json:"reason"`
		} `json:"points"`
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		return fmt.Sprintf("%s  %s", topic, payload)
	}
	if m.Status != "" {
		return fmt.Sprintf("%s  %s  status=%s", time.Now().Format("15:04:05.000"), topic, m.Status)
	}
	var b bytes.Buffer
	ts := time.Now()
	if len(m.Points) > 0 {
		ts = time.UnixMilli(m.Points[0].TS)
	}
	fmt.Fprintf(&b, "%s  %-9s seq=%-5d", ts.Format("15:04:05.000"), m.Device, m.Seq)
	for _, p := range m.Points {
		v := string(p.Value)
		if f, err := parseFloat(p.Value); err == nil && strings.ContainsAny(v, ".eE") {
			v = fmt.Sprintf("%.2f", f)
		}
		fmt.Fprintf(&b, "  %s=%s", p.Tag, v)
		if p.Unit != "" {
			fmt.Fprintf(&b, " %s", p.Unit)
		}
		if p.Quality != "" {
			fmt.Fprintf(&b, " [%s", p.Quality)
			if p.Reason != "" {
				fmt.Fprintf(&b, ":%s", p.Reason)
			}
			b.WriteString("]")
		}
	}
	return b.String()
}

func parseFloat(raw json.RawMessage) (float64, error) {
	var f float64
	err := json.Unmarshal(raw, &f)
	return f, err
}

// demoDevice is a simulated device (or serial server) whose registers a
// goroutine animates.
type demoDevice struct {
	addr   string
	close  func() error
	cancel context.CancelFunc
	done   chan struct{}
}

func (d *demoDevice) Addr() string { return d.addr }

func (d *demoDevice) Close() {
	d.cancel()
	<-d.done
	_ = d.close()
}

// animate calls step every 100 ms with the time since start, until Close.
func animate(ctx context.Context, addr string, closeFn func() error, step func(t time.Duration)) *demoDevice {
	ctx, cancel := context.WithCancel(ctx)
	d := &demoDevice{addr: addr, close: closeFn, cancel: cancel, done: make(chan struct{})}
	start := time.Now()
	step(0)
	go func() {
		defer close(d.done)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tk.C:
				step(now.Sub(start))
			}
		}
	}()
	return d
}

// startPress simulates a press on Modbus TCP: oil temperature and pressure
// waves, a stroke counter, a speed, a running coil, an alarm bit, and a
// setpoint register that only writes change.
func startPress(ctx context.Context) (*demoDevice, error) {
	s := sim.NewModbus(sim.ModbusOptions{})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	s.SetHolding(8, 50) // setpoint 5.0 bar: writable from the broker, not animated
	return animate(ctx, s.Addr(), s.Close, func(t time.Duration) {
		sec := t.Seconds()
		_ = s.PutFloat32(modbus.HoldingRegister, 0, modbus.CDAB, float32(60+5*math.Sin(sec/10)))
		_ = s.PutFloat32(modbus.HoldingRegister, 2, modbus.ABCD, float32(4+0.5*math.Sin(sec/3)))
		_ = s.PutUint(modbus.HoldingRegister, 4, modbus.TypeUint32, modbus.ABCD, uint64(sec*2))
		s.SetHolding(6, uint16(14500+500*math.Sin(sec/7)))
		alarm := uint16(0)
		if int(sec)%30 >= 25 {
			alarm = 1 << 3
		}
		s.SetHolding(7, alarm)
		s.SetCoil(0, int(sec)%30 < 25)
	}), nil
}

// startSerialServer simulates a TCP-to-RTU serial server with two slaves on
// its RS-485 bus: a boiler (unit 1: water temperature, flow, burner) and an
// energy meter (unit 7: voltage, power, energy as float32 input registers).
func startSerialServer(ctx context.Context) (*demoDevice, error) {
	boiler, meter := sim.NewModbus(sim.ModbusOptions{}), sim.NewModbus(sim.ModbusOptions{})
	bus := sim.NewRTUBus()
	bus.Add(1, boiler)
	bus.Add(7, meter)
	if err := bus.Listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return animate(ctx, bus.Addr(), bus.Close, func(t time.Duration) {
		sec := t.Seconds()
		boiler.SetInput(0, uint16(int16(785+20*math.Sin(sec/20))))
		boiler.SetInput(1, uint16(1200+300*math.Sin(sec/5)))
		boiler.SetDiscrete(0, math.Sin(sec/20) < 0)
		power := 7400 + 600*math.Sin(sec/4)
		_ = meter.PutFloat32(modbus.InputRegister, 0, modbus.ABCD, float32(230+2*math.Sin(sec/6)))
		_ = meter.PutFloat32(modbus.InputRegister, 52, modbus.ABCD, float32(power))
		_ = meter.PutFloat32(modbus.InputRegister, 72, modbus.ABCD, float32(1520.5+sec*power/3.6e6))
	}), nil
}

// startCNC simulates an OPC UA server (a CNC's controller): opcuasim's
// default variables, with temperature, pressure, counter and running
// changing every second. The gopcua server writes its start-up lines to
// the standard logger, which is silenced while the demo runs.
func startCNC(ctx context.Context) (*demoDevice, error) {
	prev := stdlog.Writer()
	stdlog.SetOutput(io.Discard)
	s := opcuasim.New(opcuasim.Options{})
	// The server outlives ctx until Close, so the gateway's session ends
	// cleanly on the way out.
	if err := s.Start(context.WithoutCancel(ctx)); err != nil {
		stdlog.SetOutput(prev)
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &demoDevice{addr: s.URL(), cancel: cancel, done: make(chan struct{})}
	d.close = func() error {
		defer stdlog.SetOutput(prev)
		return s.Close()
	}
	go func() {
		defer close(d.done)
		s.Animate(ctx, time.Second)
	}()
	return d, nil
}
