package opcua

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/telemetry"
)

// runPeerCollector runs d under the collector and returns its output.
func runPeerCollector(t *testing.T, d *Driver) *sink {
	t.Helper()
	var out sink
	c := collector.New([]collector.Device{{Name: "dev", Driver: d, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}}, out.put, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return &out
}

// peerRecoveryDriver: a polled tag and two subscribed ones, one of them
// with a deadband the server applies.
func peerRecoveryDriver(t *testing.T, url string) *Driver {
	const nsu = "nsu=urn:fieldgate:peer;s="
	return newDriver(t, Config{URL: url, Timeout: 2 * time.Second, Poll: 100 * time.Millisecond, Tags: []Tag{
		{Name: "double", Node: nsu + "Double"},
		{Name: "counter", Node: nsu + "Counter", Mode: ModeSubscribe},
		{Name: "wave", Node: nsu + "Wave", Mode: ModeSubscribe, Deadband: Deadband{Value: 1}},
	}})
}

func good(tag string) func(telemetry.Point) bool {
	return func(p telemetry.Point) bool { return p.Tag == tag && p.Quality.IsGood() }
}

func bad(tag string) func(telemetry.Point) bool {
	return func(p telemetry.Point) bool { return p.Tag == tag && p.Quality.Class() == telemetry.Bad }
}

// waitStats polls the peer's stats until want holds.
func waitStats(t *testing.T, p *peer, want map[string]int) {
	t.Helper()
	var got map[string]int
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got = p.stats(t)
		ok := true
		for k, v := range want {
			ok = ok && got[k] == v
		}
		if ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("server stats %v, want %v", got, want)
}

// TestNodeOPCUASessionKilled: node-opcua closes the gateway's session
// while the TCP connection stays open. The driver notices (its Reads
// fail with BadSessionIdInvalid), the collector reports the tags Bad and
// reconnects, and the server has one session again with the monitored
// items re-created.
func TestNodeOPCUASessionKilled(t *testing.T) {
	p := startPeer(t, "")
	out := runPeerCollector(t, peerRecoveryDriver(t, p.url))
	out.waitFor(t, "counter good", good("counter"))
	out.waitFor(t, "double good", good("double"))
	waitStats(t, p, map[string]int{"sessions": 1, "subscriptions": 1, "items": 2, "filtered": 1})

	if got := p.command(t, "kill-sessions"); got != "OK kill-sessions 1" {
		t.Fatalf("kill-sessions: %s", got)
	}
	out.waitFor(t, "counter bad", bad("counter"))
	out.waitFor(t, "counter good again", good("counter"))
	out.waitFor(t, "double good again", good("double"))
	waitStats(t, p, map[string]int{"sessions": 1, "subscriptions": 1, "items": 2, "filtered": 1})
}

// TestNodeOPCUASubscriptionDeleted: node-opcua deletes the gateway's
// subscription while the session lives on. The driver's check of its
// subscriptions fails, the tags go Bad, and after the reconnect the
// subscription and its monitored items exist again.
func TestNodeOPCUASubscriptionDeleted(t *testing.T) {
	p := startPeer(t, "")
	out := runPeerCollector(t, peerRecoveryDriver(t, p.url))
	out.waitFor(t, "counter good", good("counter"))
	waitStats(t, p, map[string]int{"sessions": 1, "subscriptions": 1, "items": 2})

	if got := p.command(t, "delete-subscriptions"); got != "OK delete-subscriptions 1" {
		t.Fatalf("delete-subscriptions: %s", got)
	}
	out.waitFor(t, "counter bad", bad("counter"))
	out.waitFor(t, "counter good again", good("counter"))
	waitStats(t, p, map[string]int{"sessions": 1, "subscriptions": 1, "items": 2, "filtered": 1})
	c0 := -1
	out.waitFor(t, "counter moving", func(pt telemetry.Point) bool {
		if pt.Tag != "counter" || !pt.Quality.IsGood() {
			return false
		}
		if c0 < 0 {
			c0 = int(pt.Value.AsUint())
		}
		return int(pt.Value.AsUint()) > c0
	})
}

// TestNodeOPCUADeadband: an absolute deadband becomes a DataChangeFilter
// on the monitored item (node-opcua then sends only moves larger than
// it); on a String variable node-opcua refuses the filter, and the item
// is created without one. A queue_size makes the server keep every
// change between publishes.
func TestNodeOPCUADeadband(t *testing.T) {
	p := startPeer(t, "")
	const nsu = "nsu=urn:fieldgate:peer;s="
	logs := &lockedBuf{}
	d := newDriver(t, Config{URL: p.url, Poll: 500 * time.Millisecond, Tags: []Tag{
		{Name: "wave", Node: nsu + "Wave", Mode: ModeSubscribe, Deadband: Deadband{Value: 1}},
		{Name: "text", Node: nsu + "String", Mode: ModeSubscribe, Deadband: Deadband{Value: 1}},
		{Name: "queued", Node: nsu + "Counter", Mode: ModeSubscribe, QueueSize: 5},
		{Name: "latest", Node: nsu + "Counter", Mode: ModeSubscribe},
	}})
	d.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	connect(t, d)
	waitStats(t, p, map[string]int{"items": 4, "filtered": 1})
	if n := strings.Count(logs.String(), "refused the deadband filter"); n != 1 {
		t.Errorf("%d log lines about the refused filter, want 1:\n%s", n, logs.String())
	}
	var waves []float64
	var queued, latest int
	deadline := time.Now().Add(20 * time.Second)
	text := false
	for time.Now().Before(deadline) && (len(waves) < 6 || !text || queued < 12) {
		time.Sleep(600 * time.Millisecond)
		pts, err := read(t, d, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, pt := range pts {
			switch pt.Tag {
			case "wave":
				waves = append(waves, pt.Value.AsFloat())
			case "text":
				text = text || pt.Value == telemetry.String("peer")
			case "queued":
				queued++
			case "latest":
				latest++
			}
		}
	}
	if !text {
		t.Error("the tag whose filter was refused reported nothing")
	}
	for i := 1; i < len(waves); i++ {
		if d := waves[i] - waves[i-1]; d > -1 && d < 1 && d != 0 {
			t.Errorf("wave moved by %v (from %v to %v), within the deadband", d, waves[i-1], waves[i])
		}
	}
	if len(waves) < 6 {
		t.Errorf("wave: %v", waves)
	}
	// The counter moves every 50 ms; queued (5 per 500 ms publish) must
	// report several times as often as latest (one per Read).
	if queued < 2*latest || queued < 12 {
		t.Errorf("queued reported %d values, latest %d\n%s", queued, latest, logs)
	}

	// On reconnect the refused filter is not asked for again.
	_ = d.Close()
	connect(t, d)
	waitStats(t, p, map[string]int{"items": 4, "filtered": 1})
	if n := strings.Count(logs.String(), "refused the deadband filter"); n != 1 {
		t.Errorf("%d log lines about the refused filter after a reconnect, want 1", n)
	}
}

// lockedBuf is a log destination a test can read while the driver writes.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
