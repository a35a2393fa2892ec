package opcua

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/sim/opcuasim"
	"github.com/fieldgate/fieldgate/telemetry"
)

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

func startSim(t testing.TB, opts opcuasim.Options) *opcuasim.Server {
	t.Helper()
	s := opcuasim.New(opts)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newDriver(t testing.TB, cfg Config) *Driver {
	t.Helper()
	if cfg.Poll == 0 {
		cfg.Poll = 50 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	d, err := New("dev", cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func connect(t testing.TB, d *Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout())
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
}

func read(t testing.TB, d *Driver, group int) ([]telemetry.Point, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout())
	defer cancel()
	return d.Read(ctx, group, nil)
}

// waitPoints reads a subscribe group until want(points so far) is true.
func waitPoints(t testing.TB, d *Driver, group int, want func(map[string]telemetry.Point) bool) map[string]telemetry.Point {
	t.Helper()
	got := map[string]telemetry.Point{}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		pts, err := read(t, d, group)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pts {
			got[p.Tag] = p
		}
		if want(got) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out; got %v", got)
	return nil
}

func TestPoll(t *testing.T) {
	s := startSim(t, opcuasim.Options{Pad: 2})
	idx := s.NamespaceIndex()
	d := newDriver(t, Config{URL: s.URL(), Tags: []Tag{
		{Name: "temp", Node: s.NodeID("Temperature"), Unit: "degC"},
		{Name: "counter", Node: "ns=" + itoa(idx) + ";s=Counter"},
		{Name: "missing", Node: "ns=" + itoa(idx) + ";s=Nope"},
		{Name: "state", Node: "i=2259"},
	}})
	connect(t, d)
	s.Set("Counter", uint32(42))
	before := time.Now()
	pts, err := read(t, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 4 {
		t.Fatalf("got %d points: %v", len(pts), pts)
	}
	if p := pts[0]; p.Tag != "temp" || p.Value != telemetry.Float(21.5) || !p.Quality.IsGood() || p.Unit != "degC" {
		t.Errorf("temp = %+v", p)
	}
	if p := pts[1]; p.Value != telemetry.Uint(42) || !p.Quality.IsGood() || p.Time.After(time.Now()) || p.Time.Before(before.Add(-time.Second)) {
		t.Errorf("counter = %+v", p)
	}
	if p := pts[2]; p.Quality != telemetry.Bad|telemetry.ReasonDevice {
		t.Errorf("missing node = %+v, want bad:device", p)
	}
	if p := pts[3]; p.Value != telemetry.Int(int64(ua.ServerStateRunning)) || !p.Quality.IsGood() {
		t.Errorf("server state = %+v (%v)", p, p.Value.Kind())
	}
}

func itoa(i uint16) string { return telemetry.Uint(uint64(i)).String() }

func TestSubscribe(t *testing.T) {
	s := startSim(t, opcuasim.Options{Pad: 1})
	d := newDriver(t, Config{URL: s.URL(), Tags: []Tag{
		{Name: "temp", Node: s.NodeID("Temperature"), Mode: ModeSubscribe},
		{Name: "running", Node: s.NodeID("Running"), Mode: ModeSubscribe},
		{Name: "mode", Node: s.NodeID("Mode")},
	}})
	if len(d.Groups()) != 2 || d.Mode(0) == d.Mode(1) {
		t.Fatalf("groups %v", d.Groups())
	}
	sg := 0
	if d.Mode(0) != ModeSubscribe {
		sg = 1
	}
	connect(t, d)
	// The initial values arrive first.
	waitPoints(t, d, sg, func(m map[string]telemetry.Point) bool {
		return m["temp"].Value == telemetry.Float(21.5) && m["running"].Value == telemetry.Bool(true)
	})
	// Nothing changed: nothing is reported.
	time.Sleep(100 * time.Millisecond)
	if pts, err := read(t, d, sg); err != nil || len(pts) != 0 {
		t.Fatalf("idle read = %v, %v", pts, err)
	}
	src := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	s.Set("Temperature", 30.25)
	got := waitPoints(t, d, sg, func(m map[string]telemetry.Point) bool { return m["temp"].Value == telemetry.Float(30.25) })
	if _, ok := got["running"]; ok {
		t.Errorf("unchanged tag reported: %v", got["running"])
	}
	_ = src
	// A Bad status from the server arrives as Bad|device.
	s.SetStatus("Running", nil, ua.StatusBadSensorFailure)
	waitPoints(t, d, sg, func(m map[string]telemetry.Point) bool {
		return m["running"].Quality == telemetry.Bad|telemetry.ReasonDevice
	})
	s.SetStatus("Running", false, ua.StatusUncertainLastUsableValue)
	waitPoints(t, d, sg, func(m map[string]telemetry.Point) bool {
		p := m["running"]
		return p.Quality == telemetry.Uncertain|telemetry.ReasonDevice && p.Value == telemetry.Bool(false)
	})
}
