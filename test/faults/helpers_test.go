package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/sim"
)

// long reports whether the long versions of the scenarios run.
func long() bool { return os.Getenv("FIELDGATE_FAULTS_LONG") == "1" }

// reading identifies one reading.
type reading struct {
	device, tag string
	ts          int64
}

type message struct {
	Device     string `json:"device"`
	Seq        uint64 `json:"seq"`
	Historical bool   `json:"historical"`
	Points     []struct {
		Tag string `json:"tag"`
		TS  int64  `json:"ts"`
	} `json:"points"`
}

// subscriber is the checking client, connected straight to the broker. It
// tracks every reading and every (device, seq), and counts messages that
// arrive out of order within their stream (live or historical) per device.
type subscriber struct {
	t      testing.TB
	addr   string
	topic  string
	mu     sync.Mutex
	got    map[reading]int
	seqs   map[string]int // device/seq
	high   map[string]uint64
	order  int // first copies older than a seq already seen in the same stream and device
	msgs   int
	hist   int
	bad    int
	log    []msgRef // every message in arrival order
	client mqtt.Client
}

func newSubscriber(t testing.TB, addr, topic string) *subscriber {
	s := &subscriber{t: t, addr: addr, topic: topic, got: map[reading]int{}, seqs: map[string]int{}, high: map[string]uint64{}}
	s.connect()
	t.Cleanup(func() {
		if s.client != nil {
			s.client.Disconnect(50)
		}
	})
	return s
}

// connect (re)connects and subscribes; the test calls it after a broker
// restart, before it lets the gateway in.
func (s *subscriber) connect() {
	s.t.Helper()
	if s.client != nil {
		s.client.Disconnect(0)
	}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + s.addr).SetClientID("faults-checker-" + strconv.Itoa(os.Getpid())).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(true).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.t.Fatalf("checking subscriber: connect %s: %v", s.addr, tok.Error())
	}
	if tok := c.Subscribe(s.topic, 1, func(_ mqtt.Client, m mqtt.Message) { s.add(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		s.t.Fatalf("checking subscriber: subscribe: %v", tok.Error())
	}
	s.client = c
}

func (s *subscriber) add(payload []byte) {
	var m message
	if err := json.Unmarshal(payload, &m); err != nil || m.Device == "" {
		if !bytes.Contains(payload, []byte(`"status"`)) {
			s.mu.Lock()
			s.bad++
			s.mu.Unlock()
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs++
	s.log = append(s.log, msgRef{m.Device, m.Seq, m.Historical})
	if m.Historical {
		s.hist++
	}
	key := m.Device + "/" + strconv.FormatUint(m.Seq, 10)
	s.seqs[key]++
	if s.seqs[key] == 1 {
		stream := m.Device + "/" + strconv.FormatBool(m.Historical)
		if m.Seq < s.high[stream] {
			s.order++
		}
		s.high[stream] = max(s.high[stream], m.Seq)
	}
	for _, p := range m.Points {
		s.got[reading{m.Device, p.Tag, p.TS}]++
	}
}

type msgRef struct {
	device string
	seq    uint64
	hist   bool
}

// messages returns the arrival log from index from on.
func (s *subscriber) messages(from int) []msgRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]msgRef(nil), s.log[min(from, len(s.log)):]...)
}

func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.log)
}

// tally compares want with what arrived.
type tally struct {
	readings, lost, dupMsgs, outOfOrder int
	example                             reading
}

func (s *subscriber) tally(want map[reading]struct{}) tally {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := tally{readings: len(want), outOfOrder: s.order}
	for w := range want {
		if s.got[w] == 0 {
			if r.lost == 0 {
				r.example = w
			}
			r.lost++
		}
	}
	for _, n := range s.seqs {
		r.dupMsgs += n - 1
	}
	return r
}

// notIn counts the readings received that are not in want.
func (s *subscriber) notIn(want map[reading]struct{}) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for r := range s.got {
		if _, ok := want[r]; !ok {
			n++
		}
	}
	return n
}

// snapshot returns the readings of want not received yet.
func (s *subscriber) notYet(want map[reading]struct{}) map[reading]struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[reading]struct{}{}
	for w := range want {
		if s.got[w] == 0 {
			out[w] = struct{}{}
		}
	}
	return out
}

// waitAll waits until every reading of want arrived.
func (s *subscriber) waitAll(t testing.TB, d time.Duration, want map[reading]struct{}) {
	t.Helper()
	peers.CheckFor(t, d, "every committed reading received", func() error {
		if tl := s.tally(want); tl.lost > 0 {
			return fmt.Errorf("%d of %d readings missing, e.g. %+v", tl.lost, tl.readings, tl.example)
		}
		return nil
	})
}

// devices runs n simulated Modbus devices whose registers change every
// 20 ms and returns their addresses.
func devices(t testing.TB, n int) ([]string, []*sim.ModbusServer) {
	t.Helper()
	var addrs []string
	var sims []*sim.ModbusServer
	for range n {
		s := sim.NewModbus(sim.ModbusOptions{})
		if err := s.Listen("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			tk := time.NewTicker(20 * time.Millisecond)
			defer tk.Stop()
			for k := 0; ; k++ {
				for j := range tagsPerDev / 2 {
					s.SetHolding(uint16(j), uint16(k+j))
				}
				_ = s.PutFloat32(modbus.HoldingRegister, 100, modbus.CDAB, float32(math.Sin(float64(k)/10)))
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
				}
			}
		}()
		t.Cleanup(func() { cancel(); <-done; _ = s.Close() })
		addrs = append(addrs, s.Addr())
		sims = append(sims, s)
	}
	return addrs, sims
}

const tagsPerDev = 20

// gatewayYAML is a config for the given broker and devices: each device has
// 20 tags (18 uint16, one float32, one coil), polled every poll.
func gatewayYAML(dir, broker string, addrs []string, poll time.Duration, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: { id: faults-gw }\n")
	fmt.Fprintf(&b, "buffer: { path: %s }\n", filepath.Join(dir, "buffer.db"))
	fmt.Fprintf(&b, "mqtt:\n  url: tcp://%s\n  window: 100\n  keepalive: 2s\n  publish_timeout: 3s\n  connect_timeout: 2s\n%s", broker, extra)
	fmt.Fprintf(&b, "devices:\n")
	for i, a := range addrs {
		fmt.Fprintf(&b, "  - name: dev-%d\n    modbus: { url: tcp://%s, unit: 1, timeout: 500ms }\n    poll: %s\n    tags:\n", i+1, a, poll)
		for j := range tagsPerDev - 2 {
			fmt.Fprintf(&b, "      - { name: r%02d, address: %d, type: uint16 }\n", j, 40001+j)
		}
		fmt.Fprintf(&b, "      - { name: f00, address: 40101, type: float32, order: CDAB, unit: bar }\n")
		fmt.Fprintf(&b, "      - { name: c00, table: coil, offset: 0, type: bool }\n")
	}
	return b.String()
}

func writeFile(t testing.TB, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// bufferContents opens a buffer file and returns every reading it holds and
// the sequence numbers.
func bufferContents(t testing.TB, path string) (map[reading]struct{}, []uint64) {
	t.Helper()
	q, err := buffer.Open(path, buffer.Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("open buffer %s: %v", path, err)
	}
	defer q.Close()
	out := map[reading]struct{}{}
	var seqs []uint64
	var after uint64
	for {
		recs, err := q.Peek(after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out, seqs
		}
		for _, r := range recs {
			for _, p := range r.Batch.Points {
				out[reading{r.Batch.Device, p.Tag, p.Time.UnixMilli()}] = struct{}{}
			}
			seqs = append(seqs, r.Seq)
			after = r.Seq
		}
	}
}

// waitRequests waits until every simulator served at least n more requests
// than it had when called.
func waitRequests(t testing.TB, sims []*sim.ModbusServer, n uint64) {
	t.Helper()
	base := make([]uint64, len(sims))
	for i, s := range sims {
		base[i] = s.Requests()
	}
	peers.CheckFor(t, 30*time.Second, fmt.Sprintf("%d more polls per device", n), func() error {
		for i, s := range sims {
			if got := s.Requests() - base[i]; got < n {
				return fmt.Errorf("device %d served %d requests", i, got)
			}
		}
		return nil
	})
}

// logWriter sends log lines to t.Log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
