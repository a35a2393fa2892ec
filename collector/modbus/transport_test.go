package modbus_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/telemetry"
)

// startBus starts an RTU bus reachable over TCP (a simulated serial
// server) with one simulator per unit id.
func startBus(t testing.TB, units ...uint8) (*sim.RTUBus, map[uint8]*sim.ModbusServer) {
	t.Helper()
	b := sim.NewRTUBus()
	ss := map[uint8]*sim.ModbusServer{}
	for _, u := range units {
		ss[u] = sim.NewModbus(sim.ModbusOptions{})
		b.Add(u, ss[u])
	}
	if err := b.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, ss
}

// socatPair starts socat with a pseudo-terminal pair, a serial line
// between two programs, and returns the paths of its ends.
func socatPair(t *testing.T) (a, b string) {
	t.Helper()
	path, err := exec.LookPath("socat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("socat is not installed (Debian package socat: apt-get install -y socat); the RTU serial tests need it")
		}
		t.Skip("socat is not installed; apt-get install -y socat (Debian package socat) to run the RTU serial tests")
	}
	dir := t.TempDir()
	a, b = filepath.Join(dir, "a"), filepath.Join(dir, "b")
	var stderr bytes.Buffer
	cmd := exec.Command(path, "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, ea := os.Stat(a)
		_, eb := os.Stat(b)
		if ea == nil && eb == nil {
			return a, b
		}
		select {
		case <-done:
			t.Fatalf("socat exited: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("socat made no pty links in 5s: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling for the links
	}
}

// serveSerial serves bus on the serial line at path until the test ends.
func serveSerial(t *testing.T, bus *sim.RTUBus, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = bus.Serve(f); close(done) }()
	t.Cleanup(func() {
		_ = f.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("RTU bus did not stop")
		}
	})
}

// typeOrderTags puts every type in every order into holding and input
// registers of s and returns the tags that read them and what they read.
func typeOrderTags(t *testing.T, s *sim.ModbusServer) ([]modbus.Tag, []want) {
	t.Helper()
	var tags []modbus.Tag
	var wants []want
	for _, table := range []modbus.Table{modbus.HoldingRegister, modbus.InputRegister} {
		next := uint16(0)
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
	if err := s.PutString(modbus.HoldingRegister, 500, modbus.BADC, 3, "AbCde"); err != nil {
		t.Fatal(err)
	}
	s.SetHolding(510, 0b0010_0000_0000_0001)
	s.SetCoil(7, true, false, true)
	s.SetDiscrete(12, false, true)
	tags = append(tags,
		modbus.Tag{Name: "str", Address: 40501, Type: modbus.TypeString, Length: 3, Order: modbus.BADC},
		modbus.Tag{Name: "bit13", Address: 40511, Type: modbus.TypeBool, Bit: bit(13)},
		modbus.Tag{Name: "coil7", Address: 8, Type: modbus.TypeBool},
		modbus.Tag{Name: "coil8", Address: 9, Type: modbus.TypeBool},
		modbus.Tag{Name: "di13", Address: 10014, Type: modbus.TypeBool},
	)
	wants = append(wants,
		want{"str", telemetry.String("AbCde"), telemetry.Good},
		want{"bit13", telemetry.Bool(true), telemetry.Good},
		want{"coil7", telemetry.Bool(true), telemetry.Good},
		want{"coil8", telemetry.Bool(false), telemetry.Good},
		want{"di13", telemetry.Bool(true), telemetry.Good},
	)
	return tags, wants
}

func TestRTUOverTCPReadsEveryTypeAndOrder(t *testing.T) {
	bus, ss := startBus(t, 7)
	tags, wants := typeOrderTags(t, ss[7])
	d := newDriver(t, modbus.Config{URL: bus.URL(), Unit: 7, Tags: tags})
	connect(t, d)
	for range 2 {
		from := time.Now()
		pts, err := read(t, d, 0)
		if err != nil {
			t.Fatal(err)
		}
		check(t, pts, wants, from, time.Now())
	}
	if got, want := ss[7].Requests(), uint64(2*d.Plan().Requests()); got != want {
		t.Errorf("%d requests, want %d", got, want)
	}
}

func TestRTUSerialReadsEveryTypeAndOrder(t *testing.T) {
	a, b := socatPair(t)
	bus := sim.NewRTUBus()
	s := sim.NewModbus(sim.ModbusOptions{})
	bus.Add(17, s)
	serveSerial(t, bus, b)
	tags, wants := typeOrderTags(t, s)
	d := newDriver(t, modbus.Config{URL: "rtu://" + a + "?baud=38400&parity=N", Unit: 17, Tags: tags})
	connect(t, d)
	from := time.Now()
	pts, err := read(t, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	check(t, pts, wants, from, time.Now())
}

// TestRTUSerialBusDeadSlaveDoesNotDelayOthers runs three devices on one
// serial line through the collector; one of them never answers. The live
// ones keep their poll period; the dead one's tags are Bad|timeout.
func TestRTUSerialBusDeadSlaveDoesNotDelayOthers(t *testing.T) {
	a, b := socatPair(t)
	bus := sim.NewRTUBus()
	live := map[string]*sim.ModbusServer{"m1": sim.NewModbus(sim.ModbusOptions{}), "m2": sim.NewModbus(sim.ModbusOptions{})}
	live["m1"].SetHolding(0, 11, 12)
	live["m2"].SetHolding(0, 21, 22)
	bus.Add(1, live["m1"])
	bus.Add(2, live["m2"])
	serveSerial(t, bus, b) // unit 3 is not on the bus: a dead slave
	const (
		poll    = 100 * time.Millisecond
		timeout = 150 * time.Millisecond
	)
	links := modbus.NewLinks(discard())
	url := "rtu://" + a + "?baud=19200&parity=E"
	var devs []collector.Device
	for i, name := range []string{"m1", "m2", "dead"} {
		cfg := modbus.Config{URL: url, Unit: uint8(i + 1), Timeout: timeout, Poll: poll, Tags: []modbus.Tag{
			{Name: "a", Address: 40001}, {Name: "b", Address: 40002},
			{Name: "far", Address: 40101}, // a second request per poll
		}}
		d, err := modbus.New(name, cfg, discard(), modbus.WithLinks(links))
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, collector.Device{Name: name, Driver: d, BackoffMin: 500 * time.Millisecond, BackoffMax: time.Second})
	}
	type batch struct {
		at time.Time
		q  telemetry.Quality
		v  telemetry.Value
	}
	var (
		mu   sync.Mutex
		seen = map[string][]batch{}
	)
	sink := func(_ context.Context, bt *telemetry.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		seen[bt.Device] = append(seen[bt.Device], batch{time.Now(), bt.Points[0].Quality, bt.Points[0].Value})
		return nil
	}
	c := collector.New(devs, sink, discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	const run = 3 * time.Second
	time.Sleep(run) // let the collector poll for a while
	st := c.Status()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, name := range []string{"m1", "m2"} {
		bs := seen[name]
		// One poll per period, less the first (jittered) period; allow
		// half to be lost to the dead slave's retries (each holds the line
		// for its timeout) and a slow machine.
		if min := int(run/poll) / 2; len(bs) < min {
			t.Errorf("%s: %d batches in %v, want at least %d", name, len(bs), run, min)
		}
		var worst time.Duration
		for j := 1; j < len(bs); j++ {
			worst = max(worst, bs[j].at.Sub(bs[j-1].at))
		}
		t.Logf("%s: %d batches in %v, longest gap %v; dead slave: %d batches", name, len(bs), run, worst, len(seen["dead"]))
		for j, x := range bs {
			if x.q != telemetry.Good || !x.v.Equal(telemetry.Uint(uint64(11+10*i))) {
				t.Errorf("%s batch %d: %v %v", name, j, x.v, x.q)
			}
			// The period stretches by at most one turn of the dead slave
			// (its timeout), plus generous slack.
			if j > 0 {
				if gap := x.at.Sub(bs[j-1].at); gap > poll+timeout+400*time.Millisecond {
					t.Errorf("%s: %v between batches %d and %d", name, gap, j-1, j)
				}
			}
		}
		if !st[i].Up {
			t.Errorf("%s is not up: %+v", name, st[i])
		}
	}
	dead := seen["dead"]
	if len(dead) == 0 {
		t.Fatal("no batch for the dead slave")
	}
	for _, x := range dead {
		if x.q != telemetry.Bad|telemetry.ReasonTimeout {
			t.Errorf("dead slave's quality %v, want bad:timeout", x.q)
		}
	}
	if st[2].Up {
		t.Errorf("dead slave is up: %+v", st[2])
	}
}

func TestRTUCRCErrorMakesRequestBadCRC(t *testing.T) {
	bus, ss := startBus(t, 1)
	ss[1].SetHolding(0, 5)
	ss[1].SetHolding(200, 6)
	d := newDriver(t, modbus.Config{URL: bus.URL(), Unit: 1, Tags: []modbus.Tag{
		{Name: "x", Address: 40001}, {Name: "y", Address: 40201},
	}})
	connect(t, d)
	bus.CorruptCRC(1) // the first request's answer
	from := time.Now()
	pts, err := read(t, d, 0)
	if err != nil {
		t.Fatalf("Read = %v, want no error for a CRC error", err)
	}
	check(t, pts, []want{
		{"x", telemetry.Value{}, telemetry.Bad | telemetry.ReasonCRC},
		{"y", telemetry.Uint(6), telemetry.Good},
	}, from, time.Now())
	pts, err = read(t, d, 0)
	if err != nil || !pts[0].Value.Equal(telemetry.Uint(5)) || pts[0].Quality != telemetry.Good {
		t.Fatalf("after the CRC error: %v, %v", pts, err)
	}
}

func TestRTUOverTCPExceptionAndSilentSlave(t *testing.T) {
	bus, ss := startBus(t, 1)
	ss[1].SetHolding(0, 5)
	tags := []modbus.Tag{{Name: "x", Address: 40001}, {Name: "past", Address: 420001}}
	d := newDriver(t, modbus.Config{URL: bus.URL(), Unit: 1, Timeout: 150 * time.Millisecond, Tags: tags})
	connect(t, d)
	from := time.Now()
	pts, err := read(t, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	check(t, pts, []want{{"x", telemetry.Uint(5), telemetry.Good}, {"past", telemetry.Value{}, telemetry.Bad | telemetry.ReasonException}}, from, time.Now())
	// A slave that is silent from the start: Read fails with a timeout,
	// after one timeout, not one per request.
	ss[1].SetSilent(true)
	start := time.Now()
	_, err = read(t, d, 0)
	var te interface{ Timeout() bool }
	if !errors.As(err, &te) || !te.Timeout() {
		t.Fatalf("Read = %v, want a timeout", err)
	}
	if took := time.Since(start); took > 150*time.Millisecond+time.Second {
		t.Errorf("silent slave took %v", took)
	}
	// The link survives: the slave answers again.
	ss[1].SetSilent(false)
	if pts, err := read(t, d, 0); err != nil || !pts[0].Value.Equal(telemetry.Uint(5)) {
		t.Fatalf("after silence: %v, %v", pts, err)
	}
	if n := bus.Conns(); n != 1 {
		t.Errorf("%d connections to the serial server, want 1", n)
	}
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func TestTCPStaleAnswerIsDiscarded(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	s.SetHolding(0, 1)
	const timeout = 200 * time.Millisecond
	d := newDriver(t, modbus.Config{URL: s.URL(), Timeout: timeout, Tags: []modbus.Tag{{Name: "x", Address: 40001}}})
	connect(t, d)
	// Answers "1" after the driver gave up, and before the next answer is
	// due.
	s.DelayNextAnswer(timeout * 3 / 2)
	if _, err := read(t, d, 0); err == nil {
		t.Fatal("Read succeeded, want a timeout")
	}
	s.SetHolding(0, 2)
	// No reconnect: the late answer arrives on this connection first and
	// must be skipped by its transaction id.
	for i := range 3 {
		pts, err := read(t, d, 0)
		if err != nil || !pts[0].Value.Equal(telemetry.Uint(2)) {
			t.Fatalf("read %d after the late answer: %v, %v", i, pts, err)
		}
	}
}

func TestSharedTCPLinkTwoUnits(t *testing.T) {
	s := sim.NewModbus(sim.ModbusOptions{Units: []uint8{1, 2}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	go func() { _ = s.Serve(cl) }()
	url := "tcp://" + ln.Addr().String()
	t.Cleanup(func() { _ = s.Close() })
	s.SetHolding(0, 42)
	links := modbus.NewLinks(discard())
	const timeout = 200 * time.Millisecond
	var ds []*modbus.Driver
	for _, u := range []uint8{1, 2, 3} {
		d, err := modbus.New("u", modbus.Config{URL: url, Unit: u, Timeout: timeout, Poll: time.Second,
			Tags: []modbus.Tag{{Name: "x", Address: 40001}}}, discard(), modbus.WithLinks(links))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		connect(t, d)
		ds = append(ds, d)
	}
	// Two devices read at once on the shared connection.
	var wg sync.WaitGroup
	for _, d := range ds[:2] {
		wg.Go(func() {
			for range 20 {
				pts, err := read(t, d, 0)
				if err != nil || !pts[0].Value.Equal(telemetry.Uint(42)) {
					t.Errorf("read: %v, %v", pts, err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Unit 3 is not behind the gateway: exception 0B for its tags only.
	pts, err := read(t, ds[2], 0)
	if err != nil || pts[0].Quality != telemetry.Bad|telemetry.ReasonException {
		t.Fatalf("unit 3: %v, %v", pts, err)
	}
	if n := cl.n.Load(); n != 1 {
		t.Errorf("%d TCP connections, want 1 shared", n)
	}
	// A late answer to unit 1 does not confuse unit 2.
	s.DelayNextAnswer(timeout * 3 / 2)
	if _, err := read(t, ds[0], 0); err == nil {
		t.Fatal("delayed read succeeded")
	}
	_ = ds[0].Close() // the collector closes a device after a failed read
	s.SetHolding(0, 43)
	pts, err = read(t, ds[1], 0)
	if err != nil || !pts[0].Value.Equal(telemetry.Uint(43)) {
		t.Fatalf("unit 2 after unit 1's late answer: %v, %v", pts, err)
	}
	if n := cl.n.Load(); n != 1 {
		t.Errorf("%d TCP connections, want 1: closing one device must not close the shared link", n)
	}
	// When the last device leaves, the link closes; the next use redials.
	_ = ds[1].Close()
	_ = ds[2].Close()
	connect(t, ds[1])
	if _, err := read(t, ds[1], 0); err != nil {
		t.Fatal(err)
	}
	if n := cl.n.Load(); n != 2 {
		t.Errorf("%d TCP connections, want 2 after the link was closed and reopened", n)
	}
}

func TestSharedLinkReopensAfterBreak(t *testing.T) {
	bus, ss := startBus(t, 1, 2)
	ss[1].SetHolding(0, 1)
	ss[2].SetHolding(0, 2)
	links := modbus.NewLinks(discard())
	var ds []*modbus.Driver
	for _, u := range []uint8{1, 2} {
		d, err := modbus.New("u", modbus.Config{URL: bus.URL(), Unit: u, Poll: time.Second,
			Tags: []modbus.Tag{{Name: "x", Address: 40001}}}, discard(), modbus.WithLinks(links))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		connect(t, d)
		ds = append(ds, d)
	}
	addr := bus.Addr()
	_ = bus.Close() // the serial server drops the connection
	if _, err := read(t, ds[0], 0); err == nil {
		t.Fatal("read through a closed serial server succeeded")
	}
	if err := bus.Listen(addr); err != nil {
		t.Fatal(err)
	}
	// Device 2 never reconnected: its next request reopens the link.
	pts, err := read(t, ds[1], 0)
	if err != nil || !pts[0].Value.Equal(telemetry.Uint(2)) {
		t.Fatalf("device 2 after the break: %v, %v", pts, err)
	}
}

func TestLinksRejectDifferentSerialSettings(t *testing.T) {
	links := modbus.NewLinks(nil)
	cfg := modbus.Config{URL: "rtu:///dev/ttyS9?baud=9600", Poll: time.Second, Tags: []modbus.Tag{{Name: "x", Address: 40001}}}
	if _, err := modbus.New("a", cfg, nil, modbus.WithLinks(links)); err != nil {
		t.Fatal(err)
	}
	cfg.URL = "rtu:///dev/ttyS9?baud=19200"
	if _, err := modbus.New("b", cfg, nil, modbus.WithLinks(links)); err == nil {
		t.Fatal("two baud rates on one port accepted")
	}
}

func TestPauseBetweenRequests(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	const pause = 40 * time.Millisecond
	var tags []modbus.Tag
	for i := range uint32(5) {
		tags = append(tags, modbus.Tag{Name: string(rune('a' + i)), Address: 40001 + 100*i})
	}
	d := newDriver(t, modbus.Config{URL: s.URL(), Pause: pause, Tags: tags})
	if n := d.Plan().Requests(); n != 5 {
		t.Fatalf("%d requests, want 5", n)
	}
	connect(t, d)
	start := time.Now()
	for range 2 {
		if _, err := read(t, d, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Ten requests, nine pauses between them (the pause also separates
	// the last request of one poll from the first of the next).
	if took := time.Since(start); took < 9*pause {
		t.Errorf("10 requests took %v, want at least 9 pauses of %v", took, pause)
	}
	d2 := newDriver(t, modbus.Config{URL: s.URL(), Tags: tags})
	connect(t, d2)
	start = time.Now()
	if _, err := read(t, d2, 0); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 4*pause {
		t.Errorf("without pause 5 requests took %v", took)
	}
}
