package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/sim"
)

// checkFor polls cond until it holds or d passes (internal/peers).
var checkFor = peers.CheckFor

type quality struct{ good, bad int }

// TestDeadDeviceIsBadAndDoesNotStallOthers runs one live and one silent
// device through the embedded broker: the live device keeps its 100 ms
// period with Good readings while the dead one's tags arrive Bad.
func TestDeadDeviceIsBadAndDoesNotStallOthers(t *testing.T) {
	live := sim.NewModbus(sim.ModbusOptions{})
	if err := live.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	live.SetHolding(0, 1234)
	// The dead device accepts connections but never answers, so every
	// request to it waits out its timeout.
	dead := sim.NewModbus(sim.ModbusOptions{})
	if err := dead.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	dead.SetSilent(true)
	deadAddr := dead.Addr()

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	brk, err := broker.Start("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	defer brk.Close()
	var mu sync.Mutex
	seen := map[string]*quality{"live": {}, "dead": {}}
	var firstLive, lastLive time.Time
	err = brk.Subscribe("fieldgate/gw/+", 1, func(topic string, payload []byte, _ bool) {
		var m struct {
			Device string `json:"device"`
			Points []struct {
				Value   json.RawMessage `json:"value"`
				Quality string          `json:"quality"`
				Reason  string          `json:"reason"`
			} `json:"points"`
		}
		if json.Unmarshal(payload, &m) != nil || m.Device == "" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		q := seen[m.Device]
		for _, p := range m.Points {
			switch {
			case p.Quality == "" && string(p.Value) == "1234":
				q.good++
			case p.Quality == "bad" && p.Reason != "" && string(p.Value) == "null":
				q.bad++
			}
		}
		if m.Device == "live" {
			if firstLive.IsZero() {
				firstLive = time.Now()
			}
			lastLive = time.Now()
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	yaml := fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
mqtt: { url: "%s" }
devices:
  - name: live
    modbus: { url: "tcp://%s", timeout: 300ms }
    poll: 100ms
    tags: [ { name: v, address: 40001, type: uint16 } ]
  - name: dead
    modbus: { url: "tcp://%s", timeout: 300ms }
    poll: 100ms
    tags: [ { name: v, address: 40001, type: uint16 } ]
`, t.TempDir(), brk.URL(), live.Addr(), deadAddr)
	cfg, err := config.Parse("gw.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	checkFor(t, 15*time.Second, "20 good live readings and a bad dead one", func() error {
		mu.Lock()
		defer mu.Unlock()
		if seen["live"].good < 20 || seen["dead"].bad < 1 {
			return fmt.Errorf("live good %d, dead bad %d", seen["live"].good, seen["dead"].bad)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["live"].bad != 0 || seen["dead"].good != 0 {
		t.Errorf("live had %d bad readings, dead had %d good ones", seen["live"].bad, seen["dead"].good)
	}
	// 20 polls at 100 ms take about 2 s; waiting on the dead device's 300 ms
	// timeouts would take far longer. The bound is loose for noisy machines.
	if span := lastLive.Sub(firstLive); span > 3*time.Duration(seen["live"].good)*100*time.Millisecond {
		t.Errorf("%d live readings took %v: the dead device slowed the live one", seen["live"].good, span)
	}
	st := g.Status()
	for _, d := range st.Devices {
		if want := d.Name == "live"; d.Up != want {
			t.Errorf("device %s: Up = %v, want %v", d.Name, d.Up, want)
		}
	}
}

// TestRunLeavesNoGoroutine starts and stops a gateway (device and broker up)
// and checks that every goroutine it started has exited.
func TestRunLeavesNoGoroutine(t *testing.T) {
	dev := sim.NewModbus(sim.ModbusOptions{})
	if err := dev.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	brk, err := broker.Start("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	defer brk.Close()
	cfg, err := config.Parse("gw.yaml", []byte(fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
mqtt: { url: "%s" }
devices:
  - name: d
    modbus: { url: "tcp://%s" }
    poll: 50ms
    tags: [ { name: v, address: 40001, type: uint16 } ]
`, t.TempDir(), brk.URL(), dev.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	g, err := New(cfg, Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	checkFor(t, 10*time.Second, "batches acknowledged", func() error {
		if n := g.Status().Uplink.Acked; n < 5 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, "goroutines back to where they were", func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, %d before Run:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}
