package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/api"
	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/sim"
)

// TestMetricsEndpoint runs a gateway with one live and one silent device
// and scrapes /metrics: device health, Bad readings by reason, buffer and
// uplink counters are there, and every name passes the naming lint.
func TestMetricsEndpoint(t *testing.T) {
	live := sim.NewModbus(sim.ModbusOptions{})
	if err := live.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	dead := sim.NewModbus(sim.ModbusOptions{})
	if err := dead.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	dead.SetSilent(true)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	brk, err := broker.Start("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	defer brk.Close()
	cfg, err := config.Parse("gw.yaml", []byte(fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
api: { listen: "127.0.0.1:0" }
mqtt: { url: "%s" }
devices:
  - name: live
    modbus: { url: "tcp://%s" }
    poll: 50ms
    tags: [ { name: v, address: 40001, type: uint16 } ]
  - name: dead
    modbus: { url: "tcp://%s", timeout: 200ms }
    poll: 50ms
    tags: [ { name: v, address: 40001, type: uint16 } ]
`, t.TempDir(), brk.URL(), live.Addr(), dead.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if g.api == nil {
		t.Fatal("management API not started")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	url := "http://" + g.api.Addr() + "/metrics"
	var body string
	checkFor(t, 10*time.Second, "metrics show both devices, bad readings and acks", func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		for _, want := range []string{
			`fieldgate_device_up{device="live"} 1`,
			`fieldgate_device_up{device="dead"} 0`,
			`fieldgate_points_not_good_total{device="dead",quality="bad",reason="timeout"}`,
			`fieldgate_uplink_connected 1`,
			`fieldgate_buffer_appended_total`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("no %s in\n%s", want, body)
			}
		}
		if strings.Contains(body, "fieldgate_uplink_acked_total 0\n") {
			return fmt.Errorf("nothing acked yet")
		}
		return nil
	})
	var m api.Metrics
	g.Metrics(&m)
	for _, err := range api.LintNames(&m) {
		t.Error(err)
	}
	if err := g.Ready(); err != nil {
		t.Errorf("Ready with one live device and the broker up: %v", err)
	}
}
