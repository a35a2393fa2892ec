package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/gateway"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/telemetry"
)

const (
	devicesN   = 3
	tagsPerDev = 20
	window     = 100
)

// writeConfig writes a gateway config for the given device addresses and
// returns its path. Each device has 20 tags: 10 uint16 and 5 float32 holding
// registers, and 5 coils, polled every 100 ms.
func writeConfig(t *testing.T, dir, brokerAddr string, devAddrs []string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: { id: e2e-gw }\n")
	fmt.Fprintf(&b, "buffer: { path: %s/buffer.db }\n", dir)
	fmt.Fprintf(&b, "mqtt:\n  url: tcp://%s\n  window: %d\n  keepalive: 5s\n  publish_timeout: 3s\n  connect_timeout: 2s\n", brokerAddr, window)
	fmt.Fprintf(&b, "devices:\n")
	for i, a := range devAddrs {
		fmt.Fprintf(&b, "  - name: dev-%d\n    modbus: { url: tcp://%s, unit: 1, timeout: 500ms }\n    poll: 100ms\n    tags:\n", i+1, a)
		for j := range 10 {
			fmt.Fprintf(&b, "      - { name: r%02d, address: %d, type: uint16 }\n", j, 40001+j)
		}
		for j := range 5 {
			fmt.Fprintf(&b, "      - { name: f%02d, address: %d, type: float32, order: CDAB, unit: bar }\n", j, 40011+2*j)
		}
		for j := range 5 {
			fmt.Fprintf(&b, "      - { name: c%02d, table: coil, offset: %d, type: bool }\n", j, j)
		}
	}
	path := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// recorder keeps every reading the collector committed to the buffer.
type recorder struct {
	mu       sync.Mutex
	readings map[reading]struct{}
	frozen   bool
}

func (r *recorder) observe(b *telemetry.Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frozen {
		return
	}
	for _, p := range b.Points {
		r.readings[reading{b.Device, p.Tag, p.Time.UnixMilli()}] = struct{}{}
	}
}

// freeze stops recording and returns what was recorded.
func (r *recorder) freeze() map[reading]struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frozen = true
	return r.readings
}

// TestUplinkLostTwiceNothingMissing runs 3 devices × 20 tags every 100 ms
// against a real Mosquitto, cuts the gateway's connection twice (the proxy
// resets it and refuses reconnects for a while), and checks that every
// reading the collector committed reached the checking subscriber, with
// duplicates only within the in-flight window.
func TestUplinkLostTwiceNothingMissing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{})
	sub := subscribe(t, broker.Addr(), "fieldgate/e2e-gw/#")
	px := peers.StartProxy(t, broker.Addr())

	var addrs []string
	for range devicesN {
		addrs = append(addrs, startDevice(t))
	}
	dir := t.TempDir()
	cfg, err := config.Load(writeConfig(t, dir, px.Addr(), addrs))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{readings: map[reading]struct{}{}}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	g, err := gateway.New(cfg, gateway.Options{Observe: rec.observe}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gateway Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("gateway did not stop within 15 s")
		}
	}()

	// Let data flow, cut the uplink for 1.5 s, twice, then let it recover.
	published := func(n uint64) func() error {
		return func() error {
			if got := g.Status().Uplink.Acked; got < n {
				return fmt.Errorf("%d batches acknowledged, want %d", got, n)
			}
			return nil
		}
	}
	peers.CheckFor(t, 10*time.Second, "first batches delivered", published(30))
	const outages = 2
	for i := range outages {
		px.Hold(true) // refuse reconnects until restored
		px.Cut()
		before := g.Status().Buffer.Records
		peers.CheckFor(t, 10*time.Second, "backlog grows while the uplink is cut", func() error {
			if n := g.Status().Buffer.Records; n < before+30 {
				return fmt.Errorf("buffer holds %d records", n)
			}
			return nil
		})
		px.Hold(false)
		acked := g.Status().Uplink.Acked
		peers.CheckFor(t, 20*time.Second, fmt.Sprintf("delivery resumes after outage %d", i+1), published(acked+60))
	}
	want := rec.freeze()
	if len(want) < devicesN*tagsPerDev*30 {
		t.Fatalf("only %d readings produced; the collector is not polling at 100 ms", len(want))
	}
	peers.CheckFor(t, 30*time.Second, "every committed reading received", func() error {
		if n, ex := sub.missing(want); n > 0 {
			return fmt.Errorf("%d of %d readings missing, e.g. %+v", n, len(want), ex)
		}
		return nil
	})
	dups := sub.duplicateMessages()
	sub.mu.Lock() // the subscriber's client still runs: status messages may arrive
	msgs, badJSON := sub.msgs, sub.badJSON
	sub.mu.Unlock()
	t.Logf("%d readings produced and received; %d messages, %d duplicate messages over %d outages (window %d)",
		len(want), msgs, dups, outages, window)
	if dups > window*outages {
		t.Errorf("%d duplicate messages; at most %d (window × outages) allowed", dups, window*outages)
	}
	if badJSON > 0 {
		t.Errorf("%d payloads were not valid JSON", badJSON)
	}
}

// TestKilledWhileBrokerDownLosesNothing SIGKILLs the gateway process while
// its broker is down, then starts the broker and the gateway again, and
// checks that everything committed before the kill arrives.
func TestKilledWhileBrokerDownLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	peers.FieldgateBinary(t) // built before the clock starts
	port := peers.FreePort(t)
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", port)
	var addrs []string
	for range devicesN {
		addrs = append(addrs, startDevice(t))
	}
	dir := t.TempDir()
	cfgPath := writeConfig(t, dir, brokerAddr, addrs)

	gw := peers.StartFieldgate(t, "run", "-c", cfgPath)
	// The broker is down: the gateway must keep collecting into the buffer.
	peers.CheckFor(t, 20*time.Second, "gateway reports the broker unreachable", func() error {
		if !strings.Contains(gw.Out.String(), "cannot connect to the broker") {
			return fmt.Errorf("no broker error logged yet")
		}
		return nil
	})
	waitForPolls(t, addrs, 30) // two requests per poll: about 15 polls per device
	gw.Stop(t, syscall.SIGKILL, 5*time.Second)

	// What the killed gateway committed is exactly what its buffer file holds.
	committed := bufferContents(t, filepath.Join(dir, "buffer.db"))
	if len(committed) < devicesN*tagsPerDev*10 { // at least 10 of the ~15 polls committed
		t.Fatalf("only %d readings in the buffer after the kill", len(committed))
	}

	broker := peers.StartMosquitto(t, peers.MosquittoOptions{Port: port})
	sub := subscribe(t, broker.Addr(), "fieldgate/e2e-gw/#")
	gw2 := peers.StartFieldgate(t, "run", "-c", cfgPath)
	peers.CheckFor(t, 30*time.Second, "everything committed before the kill received", func() error {
		if n, ex := sub.missing(committed); n > 0 {
			return fmt.Errorf("%d of %d readings missing, e.g. %+v", n, len(committed), ex)
		}
		return nil
	})
	st := gw2.Stop(t, syscall.SIGTERM, 15*time.Second)
	if code := st.ExitCode(); code != 0 {
		t.Errorf("fieldgate exited with %d after SIGTERM, want 0:\n%s", code, gw2.Out.String())
	}
	t.Logf("%d readings committed before SIGKILL, all received after restart", len(committed))
}

// bufferContents opens a buffer file and returns every reading it holds.
func bufferContents(t *testing.T, path string) map[reading]struct{} {
	t.Helper()
	q, err := buffer.Open(path, buffer.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("open buffer after kill: %v", err)
	}
	defer q.Close()
	out := map[reading]struct{}{}
	var after uint64
	for {
		recs, err := q.Peek(after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			for _, p := range r.Batch.Points {
				out[reading{r.Batch.Device, p.Tag, p.Time.UnixMilli()}] = struct{}{}
			}
			after = r.Seq
		}
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
