package opcua

import (
	"bytes"
	"context"
	"crypto/x509"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/sim/opcuasim"
	"github.com/fieldgate/fieldgate/telemetry"
)

// TestTypes reads every scalar type the gopcua server can serve and checks
// its telemetry form, by polling and by subscription.
func TestTypes(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	guid := ua.NewGUID("72962B91-FA75-4AE6-8D28-B404DC7DAF63")
	cases := []struct {
		name string
		in   any
		want telemetry.Value
		bad  bool
	}{
		{"Boolean", true, telemetry.Bool(true), false},
		{"SByte", int8(-8), telemetry.Int(-8), false},
		{"Byte", uint8(200), telemetry.Uint(200), false},
		{"Int16", int16(-1600), telemetry.Int(-1600), false},
		{"UInt16", uint16(60000), telemetry.Uint(60000), false},
		{"Int32", int32(math.MinInt32), telemetry.Int(math.MinInt32), false},
		{"UInt32", uint32(math.MaxUint32), telemetry.Uint(math.MaxUint32), false},
		{"Int64", int64(math.MinInt64), telemetry.Int(math.MinInt64), false},
		{"UInt64", uint64(math.MaxUint64), telemetry.Uint(math.MaxUint64), false},
		{"Float", float32(1.5), telemetry.Float32(1.5), false},
		{"Double", 2.25, telemetry.Float(2.25), false},
		{"String", "héllo", telemetry.String("héllo"), false},
		{"DateTime", ts, telemetry.String("2024-05-06T07:08:09.1234567Z"), false}, // OPC UA DateTime has 100 ns ticks
		{"Guid", guid, telemetry.String(guid.String()), false},
		{"ByteString", []byte{0xde, 0xad, 0x01}, telemetry.String("dead01"), false},
		{"LocalizedText", ua.NewLocalizedTextWithLocale("Störung", "de"), telemetry.String("Störung"), false},
		{"QualifiedName", &ua.QualifiedName{NamespaceIndex: 2, Name: "Axis"}, telemetry.String("2:Axis"), false},
		{"NodeId", ua.NewStringNodeID(3, "X"), telemetry.String("ns=3;s=X"), false},
		{"StatusCode", ua.StatusBadTimeout, telemetry.Uint(uint64(ua.StatusBadTimeout)), false},
		{"XmlElement", ua.XMLElement("<a/>"), telemetry.String("<a/>"), false},
		{"ArrayDouble", []float64{1, 2}, telemetry.Value{}, true},
		{"ArrayInt32", []int32{1, 2, 3}, telemetry.Value{}, true},
	}
	s := opcuasim.New(opcuasim.Options{})
	var tags []Tag
	for _, c := range cases {
		s.Add(c.name, c.in)
		tags = append(tags, Tag{Name: c.name, Node: s.NodeID(c.name)})
	}
	for _, c := range cases {
		tags = append(tags, Tag{Name: "sub" + c.name, Node: s.NodeID(c.name), Mode: ModeSubscribe})
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	d := newDriver(t, Config{URL: s.URL(), Tags: tags})
	connect(t, d)
	pts, err := read(t, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	sub := waitPoints(t, d, 1, func(m map[string]telemetry.Point) bool { return len(m) == len(cases) })
	for i, c := range cases {
		for _, p := range []telemetry.Point{pts[i], sub["sub"+c.name]} {
			switch {
			case c.bad && p.Quality != telemetry.Bad|telemetry.ReasonDecode:
				t.Errorf("%s: %+v, want bad:decode", p.Tag, p)
			case !c.bad && (p.Value != c.want || !p.Quality.IsGood()):
				t.Errorf("%s: got %v (%v, %v), want %v", p.Tag, p.Value, p.Value.Kind(), p.Quality, c.want)
			}
		}
	}
}

// TestRestartResolvesNamespaceAgain restarts the server with its namespace
// at another index: Read fails, and after Connect the nsu= tags read the
// right variables again, by polling and by subscription.
func TestRestartResolvesNamespaceAgain(t *testing.T) {
	s := opcuasim.New(opcuasim.Options{Pad: 1})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	d := newDriver(t, Config{URL: s.URL(), Tags: []Tag{
		{Name: "counter", Node: s.NodeID("Counter")},
		{Name: "subcounter", Node: s.NodeID("Counter"), Mode: ModeSubscribe},
	}})
	connect(t, d)
	if pts, err := read(t, d, 0); err != nil || pts[0].Value != telemetry.Uint(0) {
		t.Fatalf("before restart: %v %v", pts, err)
	}
	waitPoints(t, d, 1, func(m map[string]telemetry.Point) bool { return m["subcounter"].Value == telemetry.Uint(0) })

	// The same URL, a new server process: different namespace index.
	_ = s.Close()
	s2 := opcuasim.New(opcuasim.Options{Pad: 3, Port: portOf(t, s.URL())})
	s2.Set("Counter", uint32(7))
	if err := s2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	if s2.NamespaceIndex() == 2 {
		t.Fatal("index did not move")
	}
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = read(t, d, 1)
		if err == nil {
			_, err = read(t, d, 0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("reads kept succeeding across a server restart")
	}
	_ = d.Close()
	connect(t, d)
	if pts, err := read(t, d, 0); err != nil || pts[0].Value != telemetry.Uint(7) {
		t.Fatalf("after restart: %v %v", pts, err)
	}
	waitPoints(t, d, 1, func(m map[string]telemetry.Point) bool { return m["subcounter"].Value == telemetry.Uint(7) })
	s2.Set("Counter", uint32(8))
	waitPoints(t, d, 1, func(m map[string]telemetry.Point) bool { return m["subcounter"].Value == telemetry.Uint(8) })
}

func portOf(t testing.TB, u string) int {
	t.Helper()
	i := strings.LastIndexByte(u, ':')
	p, err := strconv.Atoi(u[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sink collects the batches the collector sends.
type sink struct {
	mu  sync.Mutex
	pts []telemetry.Point
}

func (s *sink) put(_ context.Context, b *telemetry.Batch) error {
	s.mu.Lock()
	s.pts = append(s.pts, b.Points...)
	s.mu.Unlock()
	return nil
}

func (s *sink) waitFor(t testing.TB, what string, f func(p telemetry.Point) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for len(s.pts) > 0 {
			p := s.pts[0]
			s.pts = s.pts[1:]
			if f(p) {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestCollectorRecovers runs the driver under the collector: while the
// server is down its tags are Bad, and after it is back they are Good
// again, subscribed tags included.
func TestCollectorRecovers(t *testing.T) {
	s := startSim(t, opcuasim.Options{})
	d := newDriver(t, Config{URL: s.URL(), Timeout: 500 * time.Millisecond, Tags: []Tag{
		{Name: "temp", Node: s.NodeID("Temperature")},
		{Name: "counter", Node: s.NodeID("Counter"), Mode: ModeSubscribe},
	}})
	var out sink
	c := collector.New([]collector.Device{{Name: "dev", Driver: d, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}}, out.put, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	good := func(tag string, v telemetry.Value) func(telemetry.Point) bool {
		return func(p telemetry.Point) bool { return p.Tag == tag && p.Quality.IsGood() && p.Value == v }
	}
	out.waitFor(t, "counter 0", good("counter", telemetry.Uint(0)))
	s.Set("Counter", uint32(1))
	out.waitFor(t, "counter 1", good("counter", telemetry.Uint(1)))

	_ = s.Close()
	bad := func(tag string) func(telemetry.Point) bool {
		return func(p telemetry.Point) bool { return p.Tag == tag && p.Quality.Class() == telemetry.Bad }
	}
	out.waitFor(t, "temp bad", bad("temp"))
	out.waitFor(t, "counter bad", bad("counter"))
	if st := c.Status()[0]; st.Up {
		t.Errorf("status up while the server is down: %+v", st)
	}

	s.Set("Counter", uint32(2))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "counter 2 after restart", good("counter", telemetry.Uint(2)))
	out.waitFor(t, "temp good after restart", good("temp", telemetry.Float(21.5)))
	s.Set("Counter", uint32(3))
	out.waitFor(t, "counter 3", good("counter", telemetry.Uint(3)))
}

// TestSecurity: the gopcua v0.8.0 server cannot open a secure channel
// (its server channel never takes the security mode from the client's
// OpenSecureChannel request and fails with "invalid node id type";
// gopcua/opcua#815, fixed upstream after v0.8.0 by #817), so against the
// in-process server only policy None is tested here; Sign and
// SignAndEncrypt are tested against node-opcua in secure_peer_test.go. What is
// tested: None with anonymous access, a policy the server lacks (the error
// names what it offers), and the gateway certificate generated on first
// use with its key at mode 0600.
func TestSecurity(t *testing.T) {
	s := startSim(t, opcuasim.Options{})
	d := newDriver(t, Config{URL: s.URL(), SecurityPolicy: "None", SecurityMode: "None", Auth: Auth{Mode: "anonymous"},
		Tags: []Tag{{Name: "temp", Node: s.NodeID("Temperature")}}})
	connect(t, d)
	if pts, err := read(t, d, 0); err != nil || len(pts) != 1 || pts[0].Value != telemetry.Float(21.5) {
		t.Fatalf("read: %v %v", pts, err)
	}

	dir := t.TempDir()
	cert, key := filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	d = newDriver(t, Config{URL: s.URL(), SecurityPolicy: "Basic256Sha256", CertFile: cert, KeyFile: key, Tags: []Tag{{Name: "x", Node: "i=2259"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := d.Connect(ctx)
	if err == nil || !strings.Contains(err.Error(), "no endpoint with security_policy Basic256Sha256 and security_mode MessageSecurityModeSignAndEncrypt (it offers None/MessageSecurityModeNone)") {
		t.Errorf("connect = %v", err)
	}
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("generated key: %v %v", fi, err)
	}
	c1, err := LoadOrCreateCert(cert, key, "urn:x")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := LoadOrCreateCert(cert, key, "urn:x")
	if err != nil || !bytes.Equal(c1.Certificate[0], c2.Certificate[0]) {
		t.Errorf("certificate not kept: %v", err)
	}
	if x, _ := x509.ParseCertificate(c1.Certificate[0]); x == nil || len(x.URIs) != 1 || x.URIs[0].String() != "urn:fieldgate:gateway" {
		t.Errorf("certificate URIs: %v", x)
	}
}

// TestDeadbandInTheDriver: the simulator ignores deadband filters, so the
// driver's own deadband decides: a change within it is not reported, a
// larger one is, and a percentage is relative to the last reported value.
func TestDeadbandInTheDriver(t *testing.T) {
	s := startSim(t, opcuasim.Options{})
	d := newDriver(t, Config{URL: s.URL(), Tags: []Tag{
		{Name: "temp", Node: s.NodeID("Temperature"), Mode: ModeSubscribe, Deadband: Deadband{Value: 1}},
		{Name: "pressure", Node: s.NodeID("Pressure"), Mode: ModeSubscribe, Deadband: Deadband{Value: 10, Percent: true}},
	}})
	connect(t, d)
	waitPoints(t, d, 0, func(m map[string]telemetry.Point) bool { return len(m) == 2 })
	s.Set("Temperature", 22.0)      // +0.5: within
	s.Set("Pressure", float32(1.3)) // +4%: within
	s.Set("Temperature", 22.75)     // +1.25 from 21.5: reported
	s.Set("Pressure", float32(1.5)) // +20%: reported
	got := waitPoints(t, d, 0, func(m map[string]telemetry.Point) bool { return len(m) == 2 })
	if got["temp"].Value != telemetry.Float(22.75) || got["pressure"].Value != telemetry.Float32(1.5) {
		t.Fatalf("got %v", got)
	}
	s.Set("Temperature", 23.5) // +0.75 from 22.75: within
	time.Sleep(300 * time.Millisecond)
	if pts, err := read(t, d, 0); err != nil || len(pts) != 0 {
		t.Fatalf("within the deadband: %v %v", pts, err)
	}
}
