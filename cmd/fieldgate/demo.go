package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
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
)

// demoConfig is the built-in config of `fieldgate demo`; %s are the buffer
// path, the broker address and the two simulated devices' addresses.
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
  - name: boiler-2
    modbus: { url: tcp://%s, unit: 1, timeout: 500ms }
    poll: 2s
    tags:
      - { name: water_temp, address: 30001, type: int16, scale: 0.1, unit: degC }
      - { name: flow,       address: 30002, type: uint16, scale: 0.01, unit: m3/h }
      - { name: burner_on,  address: 10001, type: bool }
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
	if err := runDemo(ctx, stdout, log); err != nil {
		fmt.Fprintln(stderr, "fieldgate demo:", err)
		return exitFail
	}
	return exitOK
}

func runDemo(ctx context.Context, out io.Writer, log *slog.Logger) error {
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
	boiler, err := startBoiler(ctx)
	if err != nil {
		return err
	}
	defer boiler.Close()

	brk, err := broker.Start("127.0.0.1:0", log.With("component", "broker"))
	if err != nil {
		return err
	}
	defer brk.Close()

	text := fmt.Sprintf(demoConfig, filepath.Join(dir, "buffer.db"), brk.Addr(), press.Addr(), boiler.Addr())
	cfg, err := config.Parse("demo.yaml", []byte(text))
	if err != nil {
		return fmt.Errorf("built-in config: %w", err)
	}
	fmt.Fprintf(out, "fieldgate demo: two simulated Modbus TCP devices, an MQTT broker on %s, and this config:\n\n%s\n", brk.Addr(), text)
	fmt.Fprintf(out, "Telemetry as it arrives at the broker (subscribe yourself: mosquitto_sub -h 127.0.0.1 -p %s -t 'fieldgate/#' -v). Ctrl-C stops.\n\n", portOf(brk.Addr()))

	var mu sync.Mutex // serialises console lines
	err = brk.Subscribe("fieldgate/#", 1, func(topic string, payload []byte, retained bool) {
		line := formatMessage(topic, payload)
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(out, line)
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

// demoDevice is a simulated device whose registers a goroutine animates.
type demoDevice struct {
	srv    *sim.ModbusServer
	cancel context.CancelFunc
	done   chan struct{}
}

func (d *demoDevice) Addr() string { return d.srv.Addr() }

func (d *demoDevice) Close() {
	d.cancel()
	<-d.done
	_ = d.srv.Close()
}

// startAnimated starts a simulated device and calls step every 100 ms with
// the time since start, until Close.
func startAnimated(ctx context.Context, step func(srv *sim.ModbusServer, t time.Duration)) (*demoDevice, error) {
	srv := sim.NewModbus(sim.ModbusOptions{})
	if err := srv.Listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	d := &demoDevice{srv: srv, cancel: cancel, done: make(chan struct{})}
	start := time.Now()
	step(srv, 0)
	go func() {
		defer close(d.done)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tk.C:
				step(srv, now.Sub(start))
			}
		}
	}()
	return d, nil
}

// startPress simulates a press: oil temperature and pressure waves, a stroke
// counter, a speed, a running coil and an alarm bit.
func startPress(ctx context.Context) (*demoDevice, error) {
	return startAnimated(ctx, func(s *sim.ModbusServer, t time.Duration) {
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
	})
}

// startBoiler simulates a boiler: water temperature, flow and a burner.
func startBoiler(ctx context.Context) (*demoDevice, error) {
	return startAnimated(ctx, func(s *sim.ModbusServer, t time.Duration) {
		sec := t.Seconds()
		s.SetInput(0, uint16(int16(785+20*math.Sin(sec/20))))
		s.SetInput(1, uint16(1200+300*math.Sin(sec/5)))
		s.SetDiscrete(0, math.Sin(sec/20) < 0)
	})
}
