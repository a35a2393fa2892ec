package sparkplug

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"google.golang.org/protobuf/proto"

	"github.com/fieldgate/fieldgate/buffer"
	ibroker "github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/sparkplug/sproto"
)

// checkFor calls f every interval until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// msg is one PUBLISH the broker accepted from the gateway, in wire order.
type msg struct {
	topic   string
	qos     byte
	retain  bool
	payload []byte
	pl      *sproto.Payload
}

// recorder is a broker hook that keeps every PUBLISH from clientID.
type recorder struct {
	mqtt.HookBase
	clientID string
	mu       sync.Mutex
	msgs     []msg
	bad      []string
}

func (r *recorder) ID() string           { return "sparkplug-recorder" }
func (r *recorder) Provides(b byte) bool { return b == mqtt.OnPublish }
func (r *recorder) snapshot() []msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]msg(nil), r.msgs...)
}
func (r *recorder) count(kind string) int { return len(filter(r.snapshot(), kind)) }

func (r *recorder) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.ID != r.clientID {
		return pk, nil
	}
	m := msg{topic: pk.TopicName, qos: pk.FixedHeader.Qos, retain: pk.FixedHeader.Retain, payload: bytes.Clone(pk.Payload)}
	var pl sproto.Payload
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := proto.Unmarshal(m.payload, &pl); err != nil {
		r.bad = append(r.bad, fmt.Sprintf("%s: %v", m.topic, err))
	}
	m.pl = &pl
	r.msgs = append(r.msgs, m)
	return pk, nil
}

// filter returns the messages whose topic has the message type kind.
func filter(ms []msg, kind string) []msg {
	var out []msg
	for _, m := range ms {
		if msgType(m.topic) == kind {
			out = append(out, m)
		}
	}
	return out
}

// msgType is the third topic level: NBIRTH, DDATA, ...
func msgType(topic string) string {
	parts := strings.Split(topic, "/")
	if len(parts) < 3 {
		return ""
	}
	return parts[2]
}

func startBroker(t testing.TB, rec *recorder) string {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(rec, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ibroker.CloseServer(srv) })
	return l.Address()
}

// proxy forwards connections to the broker; Down refuses and cuts them.
type proxy struct{ *peers.Proxy }

func startProxy(t testing.TB, target string) *proxy { return &proxy{peers.StartProxy(t, target)} }

func (p *proxy) url() string { return "tcp://" + p.Addr() }

// Down(true) cuts every connection without DISCONNECT and refuses new ones.
func (p *proxy) Down(on bool) {
	p.Hold(on)
	if on {
		p.Cut()
	}
}

// subscriber is a plain client; it records what it receives.
type subscriber struct {
	c    paho.Client
	mu   sync.Mutex
	msgs []msg
}

func subscribe(t testing.TB, addr, filter string) *subscriber {
	t.Helper()
	s := &subscriber{}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("host-app").SetAutoReconnect(false)
	s.c = paho.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := s.c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		var pl sproto.Payload
		_ = proto.Unmarshal(m.Payload(), &pl)
		s.mu.Lock()
		s.msgs = append(s.msgs, msg{topic: m.Topic(), qos: m.Qos(), payload: bytes.Clone(m.Payload()), pl: &pl})
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(0) })
	return s
}

func (s *subscriber) snapshot() []msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]msg(nil), s.msgs...)
}

func (s *subscriber) publish(t testing.TB, topic string, retain bool, payload []byte) {
	t.Helper()
	if tok := s.c.Publish(topic, 1, retain, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// openBuffer opens a bbolt buffer in a temp folder.
func openBuffer(t testing.TB) (*buffer.Queue, string) {
	t.Helper()
	dir := t.TempDir()
	q, err := buffer.Open(filepath.Join(dir, "buffer.db"), buffer.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q, dir
}

var t0 = time.UnixMilli(1764100000123)

func batch(device string, i int) *telemetry.Batch {
	return &telemetry.Batch{Device: device, Points: []telemetry.Point{
		{Tag: "oil_temp", Time: t0.Add(time.Duration(i) * time.Second), Value: telemetry.Float(float64(i) / 4), Unit: "degC"},
		{Tag: "count", Time: t0.Add(time.Duration(i) * time.Second), Value: telemetry.Int(int64(i))},
	}}
}

func appendN(t testing.TB, q *buffer.Queue, from, n int, devices ...string) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := q.Append(context.Background(), batch(devices[i%len(devices)], i)); err != nil {
			t.Fatal(err)
		}
	}
}

func uplinkConfig(url string) uplink.Config {
	return uplink.Config{
		URL: url, Gateway: "gw1", ConnectTimeout: 2 * time.Second, PublishTimeout: 2 * time.Second,
		Window: 16, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
	}
}

// run starts an uplink with f; stop cancels it and waits for Run.
func run(t testing.TB, cfg uplink.Config, src uplink.Source, f *Format) (*uplink.Uplink, func()) {
	t.Helper()
	u, err := uplink.New(cfg, src, f, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return u, peers.Run(t, 15*time.Second, u.Run)
}
