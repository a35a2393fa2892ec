package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/sim"
)

// long reports whether the long versions of the scenarios run.
func long() bool { return os.Getenv("FIELDGATE_FAULTS_LONG") == "1" }

// checkFor polls cond every 20 ms until it returns nil or d passes.
func checkFor(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// mosquittoPath returns the mosquitto binary, or skips naming the Debian
// package; under CI a missing broker fails.
func mosquittoPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	msg := "mosquitto not found: install the Debian package mosquitto (apt-get install -y mosquitto)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// mosquitto is a real broker process on 127.0.0.1 that the test can SIGKILL
// and start again on the same port.
type mosquitto struct {
	t    testing.TB
	bin  string
	port int
	conf string
	cmd  *exec.Cmd
}

func startMosquitto(t testing.TB, port int) *mosquitto {
	t.Helper()
	m := &mosquitto{t: t, bin: mosquittoPath(t), port: port}
	m.conf = filepath.Join(t.TempDir(), "mosquitto.conf")
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n", port)
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start()
	t.Cleanup(m.kill)
	return m
}

func (m *mosquitto) addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

func (m *mosquitto) start() {
	m.t.Helper()
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	checkFor(m.t, 10*time.Second, "mosquitto accepts connections", func() error {
		c, err := net.DialTimeout("tcp", m.addr(), 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func (m *mosquitto) kill() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	_ = m.cmd.Wait()
	m.cmd = nil
}

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
	checkFor(t, d, "every committed reading received", func() error {
		if tl := s.tally(want); tl.lost > 0 {
			return fmt.Errorf("%d of %d readings missing, e.g. %+v", tl.lost, tl.readings, tl.example)
		}
		return nil
	})
}

// proxy sits between the gateway and the broker. hold refuses new
// connections (open ones keep working), cut resets every connection,
// blackhole stops forwarding on open connections without closing them.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	hole   chan struct{} // closed while forwarding; open while black-holed
	conns  map[net.Conn]struct{}
	rate   int // bytes per second towards the broker; 0 unlimited
	wg     sync.WaitGroup
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, hole: make(chan struct{})}
	close(p.hole)
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.blackhole(false)
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			reset(c)
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			reset(c)
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		hole := p.hole
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, c, hole, true)
		go p.pipe(c, up, hole, false)
	}
}

// pipe copies src to dst. hole is the black-hole gate at the time the
// connection was made: a black hole swallows the connections open when it
// starts, later ones work.
func (p *proxy) pipe(dst, src net.Conn, _ chan struct{}, toBroker bool) {
	defer p.wg.Done()
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hole, rate := p.hole, p.rate
			_, mine := p.conns[src]
			p.mu.Unlock()
			if mine {
				<-hole
			}
			if toBroker && rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
	reset(dst)
	reset(src)
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *proxy) hold(on bool) {
	p.mu.Lock()
	p.down = on
	p.mu.Unlock()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		reset(c)
	}
}

// blackhole starts (or ends) swallowing everything on the connections that
// are open now. While on, new connections are refused, as a dead route
// would.
func (p *proxy) blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = on
	if on {
		p.hole = make(chan struct{})
		return
	}
	select {
	case <-p.hole:
	default:
		close(p.hole)
	}
}

func (p *proxy) setRate(bytesPerSec int) {
	p.mu.Lock()
	p.rate = bytesPerSec
	p.mu.Unlock()
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

// fieldgate binary, built once per test binary.
var buildOnce struct {
	sync.Once
	path string
	err  error
	out  []byte
}

func fieldgateBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fieldgate-faults-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "fieldgate")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", buildOnce.path, "../../cmd/fieldgate")
		buildOnce.out, buildOnce.err = cmd.CombinedOutput()
	})
	if buildOnce.err != nil {
		t.Fatalf("build fieldgate: %v\n%s", buildOnce.err, buildOnce.out)
	}
	return buildOnce.path
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is fieldgate running as a child process.
type process struct {
	cmd *exec.Cmd
	out *syncBuffer
}

func startFieldgate(t testing.TB, args ...string) *process {
	t.Helper()
	p := &process{out: new(syncBuffer)}
	p.cmd = exec.Command(fieldgateBinary(t), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start fieldgate: %v", err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("fieldgate output:\n%s", p.out.String())
		}
	})
	return p
}

// stop sends sig and waits up to d for the process to exit.
func (p *process) stop(t testing.TB, sig syscall.Signal, d time.Duration) *os.ProcessState {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
		return p.cmd.ProcessState
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-done
		t.Fatalf("fieldgate did not exit within %v of %v", d, sig)
		return nil
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
	checkFor(t, 30*time.Second, fmt.Sprintf("%d more polls per device", n), func() error {
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
