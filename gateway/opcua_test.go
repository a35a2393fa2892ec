package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/sim/opcuasim"
)

// TestOPCUADeviceToMQTT runs an OPC UA device (the in-process simulator)
// through the gateway to the embedded broker: a subscribed tag's changes
// and a polled tag's readings arrive as JSON values.
func TestOPCUADeviceToMQTT(t *testing.T) {
	srv := opcuasim.New(opcuasim.Options{Pad: 2})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	brk, err := broker.Start("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	defer brk.Close()
	var mu sync.Mutex
	seen := map[string][]string{} // tag → the values that arrived, as JSON
	err = brk.Subscribe("fieldgate/gw/cnc", 1, func(_ string, payload []byte, _ bool) {
		var m struct {
			Device string `json:"device"`
			Points []struct {
				Tag     string          `json:"tag"`
				Value   json.RawMessage `json:"value"`
				Quality string          `json:"quality"`
			} `json:"points"`
		}
		if json.Unmarshal(payload, &m) != nil || m.Device != "cnc" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range m.Points {
			if p.Quality == "" {
				seen[p.Tag] = append(seen[p.Tag], string(p.Value))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := config.Parse("gw.yaml", []byte(fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
mqtt: { url: "%s" }
devices:
  - name: cnc
    opcua: { url: "%s", timeout: 2s }
    poll: 50ms
    tags:
      - { name: temp, node: "%s", mode: subscribe, unit: degC }
      - { name: counter, node: "ns=%d;s=Counter", mode: poll }
`, t.TempDir(), brk.URL(), srv.URL(), srv.NodeID("Temperature"), srv.NamespaceIndex())))
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

	has := func(tag, value string) error {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range seen[tag] {
			if v == value {
				return nil
			}
		}
		return fmt.Errorf("%s: no %s among %v", tag, value, seen[tag])
	}
	checkFor(t, 15*time.Second, "the initial values", func() error {
		if err := has("temp", "21.5"); err != nil {
			return err
		}
		return has("counter", "0")
	})
	srv.Set("Temperature", 30.25)
	srv.Set("Counter", uint32(42))
	checkFor(t, 15*time.Second, "the changed values", func() error {
		if err := has("temp", "30.25"); err != nil {
			return err
		}
		return has("counter", "42")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, d := range g.Status().Devices {
		if d.Name == "cnc" && d.LastError != "" {
			t.Errorf("device cnc: last error %s", d.LastError)
		}
	}
}
