package modbus_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/telemetry"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func off(o uint16) *uint16 { return &o }
func bit(b uint8) *uint8   { return &b }

// startSim starts a simulator on a free loopback port and closes it at the
// end of the test.
func startSim(t testing.TB, opts sim.ModbusOptions) *sim.ModbusServer {
	t.Helper()
	s := sim.NewModbus(opts)
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newDriver(t testing.TB, cfg modbus.Config) *modbus.Driver {
	t.Helper()
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	d, err := modbus.New("dev", cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func connect(t testing.TB, d *modbus.Driver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		t.Fatal(err)
	}
}

func read(t testing.TB, d *modbus.Driver, group int) ([]telemetry.Point, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout())
	defer cancel()
	return d.Read(ctx, group, nil)
}

type want struct {
	tag string
	v   telemetry.Value
	q   telemetry.Quality
}

func check(t *testing.T, pts []telemetry.Point, wants []want, from, to time.Time) {
	t.Helper()
	if len(pts) != len(wants) {
		t.Fatalf("%d points, want %d", len(pts), len(wants))
	}
	for i, w := range wants {
		p := pts[i]
		if p.Tag != w.tag || p.Quality != w.q || (w.q.IsGood() && !p.Value.Equal(w.v)) {
			t.Errorf("point %d = %s %v %v, want %s %v %v", i, p.Tag, p.Value, p.Quality, w.tag, w.v, w.q)
		}
		if p.Time.Before(from) || p.Time.After(to) {
			t.Errorf("point %s time %v outside the read %v..%v", p.Tag, p.Time, from, to)
		}
	}
}

var types = []struct {
	typ modbus.Type
	v   telemetry.Value
}{
	{modbus.TypeInt16, telemetry.Int(-12345)},
	{modbus.TypeUint16, telemetry.Uint(54321)},
	{modbus.TypeInt32, telemetry.Int(-123456789)},
	{modbus.TypeUint32, telemetry.Uint(3000000000)},
	{modbus.TypeInt64, telemetry.Int(-1234567890123456789)},
	{modbus.TypeUint64, telemetry.Uint(18000000000000000000)},
	{modbus.TypeFloat32, telemetry.Float32(123.456)},
	{modbus.TypeFloat64, telemetry.Float(-98765.4321)},
}

var orders = []modbus.Order{modbus.ABCD, modbus.CDAB, modbus.BADC, modbus.DCBA}

func TestDriverReadsEveryTypeAndOrderFromSim(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	var tags []modbus.Tag
	var wants []want
	next := uint16(0)
	for _, table := range []modbus.Table{modbus.HoldingRegister, modbus.InputRegister} {
		next = 0
		for _, ty := range types {
			for _, o := range orders {
				name := table.String() + "_" + ty.typ.String() + "_" + o.String()
				if err := s.PutValue(table, next, ty.typ, o, 0, ty.v); err != nil {
					t.Fatal(err)
				}
				tags = append(tags, modbus.Tag{Name: name, Table: table, Offset: off(next), Type: ty.typ, Order: o})
				wants = append(wants, want{name, ty.v, telemetry.Good})
				next += ty.typ.Registers()
			}
		}
	}
	if err := s.PutString(modbus.HoldingRegister, 500, modbus.ABCD, 5, "PN-4711"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutString(modbus.HoldingRegister, 505, modbus.BADC, 2, "AbC"); err != nil {
		t.Fatal(err)
	}
	s.SetHolding(510, 0b1010_0000_0000_0001)
	s.SetCoil(7, true, false, true)
	s.SetDiscrete(12, false, true)
	scale, add := 0.1, -40.0
	s.SetHolding(511, 650)
	tags = append(tags,
		modbus.Tag{Name: "recipe", Address: 40501, Type: modbus.TypeString, Length: 5},
		modbus.Tag{Name: "swapped", Address: 40506, Type: modbus.TypeString, Length: 2, Order: modbus.BADC},
		modbus.Tag{Name: "bit0", Address: 40511, Type: modbus.TypeBool, Bit: bit(0)},
		modbus.Tag{Name: "bit13", Address: 40511, Type: modbus.TypeBool, Bit: bit(13)},
		modbus.Tag{Name: "bit14", Address: 40511, Type: modbus.TypeBool, Bit: bit(14)},
		modbus.Tag{Name: "coil7", Address: 8, Type: modbus.TypeBool},
		modbus.Tag{Name: "coil8", Address: 9, Type: modbus.TypeBool},
		modbus.Tag{Name: "coil9", Address: 10, Type: modbus.TypeBool},
		modbus.Tag{Name: "di12", Address: 10013, Type: modbus.TypeBool},
		modbus.Tag{Name: "di13", Address: 10014, Type: modbus.TypeBool},
		modbus.Tag{Name: "scaled", Address: 40512, Type: modbus.TypeUint16, Scale: &scale, ValueOffset: &add},
	)
	wants = append(wants,
		want{"recipe", telemetry.String("PN-4711"), telemetry.Good},
		want{"swapped", telemetry.String("AbC"), telemetry.Good},
		want{"bit0", telemetry.Bool(true), telemetry.Good},
		want{"bit13", telemetry.Bool(true), telemetry.Good},
		want{"bit14", telemetry.Bool(false), telemetry.Good},
		want{"coil7", telemetry.Bool(true), telemetry.Good},
		want{"coil8", telemetry.Bool(false), telemetry.Good},
		want{"coil9", telemetry.Bool(true), telemetry.Good},
		want{"di12", telemetry.Bool(false), telemetry.Good},
		want{"di13", telemetry.Bool(true), telemetry.Good},
		want{"scaled", telemetry.Float(650*0.1 - 40), telemetry.Good},
	)
	d := newDriver(t, modbus.Config{URL: s.URL(), Unit: 1, Tags: tags})
	connect(t, d)
	before := s.Requests()
	from := time.Now()
	pts, err := read(t, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	check(t, pts, wants, from, time.Now())
	if got, want := s.Requests()-before, uint64(d.Plan().Requests()); got != want {
		t.Errorf("one poll cycle made %d requests, the plan says %d", got, want)
	}
}

func TestDriverExceptionMakesOnlyThatRequestBad(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{Holding: 100})
	s.SetHolding(0, 42)
	s.SetCoil(0, true)
	d := newDriver(t, modbus.Config{URL: s.URL(), Tags: []modbus.Tag{
		{Name: "ok", Address: 40001, Type: modbus.TypeUint16},
		{Name: "missing", Address: 40201, Type: modbus.TypeUint16}, // past the 100 registers
		{Name: "missing2", Address: 40202, Type: modbus.TypeUint16},
		{Name: "coil", Address: 1, Type: modbus.TypeBool},
	}})
	connect(t, d)
	for range 2 { // the connection survives the exception
		from := time.Now()
		pts, err := read(t, d, 0)
		if err != nil {
			t.Fatalf("Read = %v, want no error for an exception", err)
		}
		check(t, pts, []want{
			{"ok", telemetry.Uint(42), telemetry.Good},
			{"missing", telemetry.Value{}, telemetry.Bad | telemetry.ReasonException},
			{"missing2", telemetry.Value{}, telemetry.Bad | telemetry.ReasonException},
			{"coil", telemetry.Bool(true), telemetry.Good},
		}, from, time.Now())
	}
}

func TestDriverReadFailsWhenDeviceDiesAndReconnects(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	s.SetHolding(3, 7)
	d := newDriver(t, modbus.Config{URL: s.URL(), Tags: []modbus.Tag{{Name: "x", Address: 40004, Type: modbus.TypeUint16}}})
	connect(t, d)
	if _, err := read(t, d, 0); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := read(t, d, 0); err == nil {
		t.Fatal("Read succeeded against a closed device")
	}
	_ = d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err == nil {
		t.Fatal("Connect succeeded against a closed device")
	}
	if err := s.Listen(addr); err != nil {
		t.Fatal(err)
	}
	connect(t, d)
	pts, err := read(t, d, 0)
	if err != nil || !pts[0].Value.Equal(telemetry.Uint(7)) {
		t.Fatalf("after restart: %v, %v", pts, err)
	}
}

func TestDriverTimesOutOnSilentDevice(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	const timeout = 200 * time.Millisecond
	d := newDriver(t, modbus.Config{URL: s.URL(), Timeout: timeout, Tags: []modbus.Tag{{Name: "x", Address: 40001}}})
	connect(t, d)
	s.SetSilent(true)
	start := time.Now()
	_, err := read(t, d, 0)
	took := time.Since(start)
	var te interface{ Timeout() bool }
	if !errors.As(err, &te) || !te.Timeout() {
		t.Fatalf("Read = %v, want a timeout error", err)
	}
	if took < timeout || took > timeout+time.Second {
		t.Errorf("timed out after %v, want about %v", took, timeout)
	}
	// A shorter ctx deadline wins over the configured timeout.
	d2 := newDriver(t, modbus.Config{URL: s.URL(), Timeout: 10 * time.Second, Tags: []modbus.Tag{{Name: "x", Address: 40001}}})
	connect(t, d2)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	if _, err := d2.Read(ctx, 0, nil); err == nil {
		t.Fatal("Read succeeded against a silent device")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Read ignored the ctx deadline: took %v", took)
	}
}

func TestDriverConnectRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	d := newDriver(t, modbus.Config{URL: "tcp://" + addr, Tags: []modbus.Tag{{Name: "x", Address: 40001}}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err == nil {
		t.Fatal("Connect succeeded to a closed port")
	}
	if _, err := d.Read(ctx, 0, nil); err == nil {
		t.Fatal("Read succeeded without a connection")
	}
}

// TestCollectorWithDriverAndSim runs the whole collector path on loopback:
// Good batches, Bad no_connection batches while the device is dead, Good
// again after it comes back on the same address.
func TestCollectorWithDriverAndSim(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	s.Tick()
	cfg := modbus.Config{URL: s.URL(), Timeout: 500 * time.Millisecond, Poll: 20 * time.Millisecond, Tags: sim.DemoTags()}
	d, err := modbus.New("demo", cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		seen []telemetry.Quality // the first point's quality, per batch
	)
	sink := func(_ context.Context, b *telemetry.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		if len(b.Points) != len(sim.DemoTags()) || b.Device != "demo" {
			t.Errorf("batch of %d points for %q", len(b.Points), b.Device)
		}
		seen = append(seen, b.Points[0].Quality)
		return nil
	}
	c := collector.New([]collector.Device{{Name: "demo", Driver: d, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}}, sink, discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; status %+v", what, c.Status())
			}
			time.Sleep(5 * time.Millisecond) // polling a condition
		}
	}
	last := func(q telemetry.Quality) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(seen) > 0 && seen[len(seen)-1] == q
		}
	}
	waitFor("good data", last(telemetry.Good))
	addr := s.Addr()
	_ = s.Close()
	waitFor("bad data", last(telemetry.Bad|telemetry.ReasonNoConnection))
	if st := c.Status()[0]; st.Up {
		t.Errorf("device still up: %+v", st)
	}
	if err := s.Listen(addr); err != nil {
		t.Fatal(err)
	}
	waitFor("good data again", last(telemetry.Good))
	waitFor("status up", func() bool { return c.Status()[0].Up })
}

// BenchmarkReadAgainstSim is one poll of 120 holding registers (one
// request) over loopback.
func BenchmarkReadAgainstSim(b *testing.B) {
	s := startSim(b, sim.ModbusOptions{})
	s.Tick()
	var tags []modbus.Tag
	for i := range uint16(60) {
		tags = append(tags, modbus.Tag{Name: "r" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Table: modbus.HoldingRegister, Offset: off(2 * i), Type: modbus.TypeFloat32})
	}
	d := newDriver(b, modbus.Config{URL: s.URL(), Tags: tags})
	if n := d.Plan().Requests(); n != 1 {
		b.Fatalf("%d requests, want 1", n)
	}
	connect(b, d)
	ctx := context.Background()
	pts := make([]telemetry.Point, 0, len(tags))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if pts, err = d.Read(ctx, 0, pts[:0]); err != nil {
			b.Fatal(err)
		}
	}
}
