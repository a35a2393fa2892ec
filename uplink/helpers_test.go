package uplink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	ibroker "github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
)

// checkFor calls f every interval until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout, interval time.Duration, f func() error) {
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
		time.Sleep(interval)
	}
}

// testLogger writes to the test log at debug level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// recorder is a broker hook that records every PUBLISH the broker accepts.
// OnPublish runs before the broker writes the PUBACK, so by the time the
// uplink sees a PUBACK its message is in the recorder.
type recorder struct {
	mqtt.HookBase
	mu     sync.Mutex
	seqs   []uint64          // data messages, arrival order
	hist   []bool            // per message in seqs: "historical":true
	count  map[uint64]int    // per seq
	topics map[uint64]string // per seq
	status []string          // status payloads' "status" values
	bad    []string
	quiet  bool // benchmarks: do not parse or keep anything
}

func newRecorder() *recorder {
	return &recorder{count: map[uint64]int{}, topics: map[uint64]string{}}
}

func (r *recorder) ID() string { return "test-recorder" }

func (r *recorder) Provides(b byte) bool { return b == mqtt.OnPublish }

func (r *recorder) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if r.quiet {
		return pk, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.HasSuffix(pk.TopicName, "/status") {
		var st struct{ Status string }
		_ = json.Unmarshal(pk.Payload, &st)
		r.status = append(r.status, st.Status)
		return pk, nil
	}
	var m struct {
		Seq        uint64
		Device     string
		Historical bool
	}
	if err := json.Unmarshal(pk.Payload, &m); err != nil {
		r.bad = append(r.bad, fmt.Sprintf("%s: %v", pk.TopicName, err))
		return pk, nil
	}
	r.seqs = append(r.seqs, m.Seq)
	r.hist = append(r.hist, m.Historical)
	r.count[m.Seq]++
	r.topics[m.Seq] = pk.TopicName
	return pk, nil
}

func (r *recorder) has(seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[seq] > 0
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

// missing returns how many of 1..n have not arrived.
func (r *recorder) missing(n uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := 0
	for s := uint64(1); s <= n; s++ {
		if r.count[s] == 0 {
			m++
		}
	}
	return m
}

func (r *recorder) statuses() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.status...)
}

// broker is an embedded mochi broker on a loopback TCP listener.
type broker struct {
	srv   *mqtt.Server
	addr  string
	close sync.Once
}

// Close stops the broker; it may be called more than once.
func (b *broker) Close() { b.close.Do(func() { _ = ibroker.CloseServer(b.srv) }) }

// startBroker starts a broker on addr ("127.0.0.1:0" for any port).
func startBroker(t testing.TB, addr string, rec *recorder) *broker {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(rec, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: addr})
	var err error
	for range 50 { // the old broker's port may take a moment to free
		if err = srv.AddListener(l); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("broker listen %s: %v", addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &broker{srv: srv, addr: l.Address()}
	t.Cleanup(b.Close)
	t.Logf("broker listening on %s", b.addr)
	return b
}

func (b *broker) url() string { return "tcp://" + b.addr }

// proxy forwards TCP connections to a target; tests use it to cut
// connections (Cut), hold back what the broker sends (Stall) and stop
// forwarding without closing (Blackhole).
type proxy struct{ *peers.Proxy }

func startProxy(t testing.TB, target string) *proxy { return &proxy{peers.StartProxy(t, target)} }

func (p *proxy) url() string { return "tcp://" + p.Addr() }

// memSource is an in-memory Source. Ack checks, through onAck, what the
// test wants to hold at every acknowledgement.
type memSource struct {
	mu     sync.Mutex
	recs   []telemetry.Record
	last   uint64
	acked  uint64
	notify chan struct{}
	onAck  func(upTo uint64, unacked []telemetry.Record) // called with mu held
	// onAckSeqs is called with mu held for every AckSeqs.
	onAckSeqs func(seqs []uint64)
	acks      int
	errs      []string
}

func newMemSource() *memSource { return &memSource{notify: make(chan struct{})} }

func (s *memSource) Append(b telemetry.Batch) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last++
	s.recs = append(s.recs, telemetry.Record{Seq: s.last, Batch: b})
	close(s.notify)
	s.notify = make(chan struct{})
	return s.last
}

func (s *memSource) Peek(after uint64, max int) ([]telemetry.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []telemetry.Record
	for _, r := range s.recs {
		if len(out) == max {
			break
		}
		if r.Seq > after {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *memSource) PeekInto(dst []telemetry.Record, after uint64, max int) ([]telemetry.Record, error) {
	recs, err := s.Peek(after, max)
	return append(dst[:0], recs...), err
}

func (s *memSource) Wait(ctx context.Context, after uint64) error {
	for {
		s.mu.Lock()
		if s.last > after {
			s.mu.Unlock()
			return nil
		}
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *memSource) Ack(upTo uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks++
	if upTo < s.acked {
		s.errs = append(s.errs, fmt.Sprintf("Ack(%d) after Ack(%d)", upTo, s.acked))
	}
	if upTo > s.last {
		s.errs = append(s.errs, fmt.Sprintf("Ack(%d) beyond last seq %d", upTo, s.last))
	}
	if s.onAck != nil {
		s.onAck(upTo, s.recs)
	}
	s.acked = max(s.acked, upTo)
	i := 0
	for i < len(s.recs) && s.recs[i].Seq <= upTo {
		i++
	}
	s.recs = s.recs[i:]
	return nil
}

// AckSeqs deletes exactly seqs; onAck sees them one at a time as Ack(seq).
func (s *memSource) AckSeqs(seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks++
	del := map[uint64]bool{}
	for i, q := range seqs {
		if i > 0 && q <= seqs[i-1] {
			s.errs = append(s.errs, fmt.Sprintf("AckSeqs(%v) not ascending", seqs))
		}
		if q > s.last {
			s.errs = append(s.errs, fmt.Sprintf("AckSeqs: seq %d beyond last seq %d", q, s.last))
		}
		del[q] = true
	}
	if s.onAckSeqs != nil {
		s.onAckSeqs(seqs)
	}
	kept := s.recs[:0]
	for _, r := range s.recs {
		if !del[r.Seq] {
			kept = append(kept, r)
		}
	}
	clear(s.recs[len(kept):])
	s.recs = kept
	return nil
}

func (s *memSource) Depth() (int64, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.recs)), s.last
}

func (s *memSource) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

func (s *memSource) check(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.errs {
		t.Error(e)
	}
}

// ackOnlyPubacked makes src report an Ack that covers a record the broker has
// not received (and so cannot have PUBACKed).
func ackOnlyPubacked(src *memSource, rec *recorder) {
	src.onAckSeqs = func(seqs []uint64) {
		for _, q := range seqs {
			if !rec.has(q) {
				src.errs = append(src.errs, fmt.Sprintf("AckSeqs covers seq %d, which the broker never received", q))
			}
		}
	}
	src.onAck = func(upTo uint64, unacked []telemetry.Record) {
		for _, r := range unacked {
			if r.Seq > upTo {
				break
			}
			if !rec.has(r.Seq) {
				src.errs = append(src.errs, fmt.Sprintf("Ack(%d) covers seq %d, which the broker never received", upTo, r.Seq))
			}
		}
	}
}

var testT0 = time.UnixMilli(1764100000123)

func testBatch(device string, i int) telemetry.Batch {
	return telemetry.Batch{Device: device, Points: []telemetry.Point{
		{Tag: "oil_temp", Time: testT0, Value: telemetry.Float(float64(i) / 4), Unit: "degC"},
		{Tag: "count", Time: testT0, Value: telemetry.Int(int64(i))},
	}}
}

// fill appends n records; record seq is for device dev-<(seq-1)%3>.
func fill(src *memSource, n int) {
	for range n {
		src.mu.Lock()
		i := int(src.last)
		src.mu.Unlock()
		src.Append(testBatch(fmt.Sprintf("dev-%d", i%3), i))
	}
}

func testConfig(url string) Config {
	return Config{
		URL:            url,
		Gateway:        "gw1",
		ConnectTimeout: 2 * time.Second,
		PublishTimeout: 2 * time.Second, // also bounds a Publish stuck on a dead connection
		Window:         16,
		ReconnectMin:   10 * time.Millisecond,
		ReconnectMax:   200 * time.Millisecond,
	}
}

// runUplink runs an Uplink until the returned stop is called (or the test
// ends); stop checks that Run returned nil within a bound.
func runUplink(t testing.TB, cfg Config, src Source) (*Uplink, func()) {
	t.Helper()
	u, err := New(cfg, src, jsonenc.Encoder{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return u, peers.Run(t, 15*time.Second, u.Run)
}

// subscriber is a plain MQTT client that records the messages of one filter.
type subscriber struct {
	c    paho.Client
	mu   sync.Mutex
	msgs []subMsg
}

type subMsg struct {
	topic    string
	payload  []byte
	retained bool
}

func subscribe(t testing.TB, url, id, filter string) *subscriber {
	t.Helper()
	s := &subscriber{}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).SetCleanSession(true)
	s.c = paho.NewClient(o)
	if tok := s.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := s.c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, subMsg{m.Topic(), bytes.Clone(m.Payload()), m.Retained()})
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.c.Disconnect(0) })
	return s
}

// statuses returns the "status" field of every message received so far.
func (s *subscriber) statuses() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.msgs {
		var st struct{ Status string }
		_ = json.Unmarshal(m.payload, &st)
		out = append(out, st.Status)
	}
	return out
}

func (s *subscriber) last() (subMsg, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.msgs) == 0 {
		return subMsg{}, false
	}
	return s.msgs[len(s.msgs)-1], true
}

// freePort returns a loopback address nobody listens on (yet).
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

var errNotYet = errors.New("not yet")

func contextWithCancel(t testing.TB) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, cancel
}
