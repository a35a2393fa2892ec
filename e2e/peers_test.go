package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// checkFor polls cond every 20 ms until it returns nil or d passes, then fails
// the test with cond's last error.
func checkFor(t *testing.T, d time.Duration, what string, cond func() error) {
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

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// mosquittoPath returns the mosquitto binary, or skips the test with a
// message naming the package; under CI a missing broker fails instead.
func mosquittoPath(t *testing.T) string {
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

// mosquitto is a real Mosquitto broker process on 127.0.0.1.
type mosquitto struct {
	t    *testing.T
	bin  string
	port int
	cmd  *exec.Cmd
	out  *bytes.Buffer
}

func startMosquitto(t *testing.T, port int) *mosquitto {
	t.Helper()
	m := &mosquitto{t: t, bin: mosquittoPath(t), port: port}
	m.start()
	t.Cleanup(m.kill)
	return m
}

func (m *mosquitto) addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

func (m *mosquitto) start() {
	m.t.Helper()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n", m.port)
	path := m.t.TempDir() + "/mosquitto.conf"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		m.t.Fatal(err)
	}
	m.out = new(bytes.Buffer)
	m.cmd = exec.Command(m.bin, "-c", path)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
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

// kill SIGKILLs the broker and waits for it to exit.
func (m *mosquitto) kill() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	_ = m.cmd.Wait()
	m.cmd = nil
}

// message is one JSON payload as docs/payload-json.md documents it.
type message struct {
	Gateway    string  `json:"gateway"`
	Device     string  `json:"device"`
	Seq        uint64  `json:"seq"`
	Historical bool    `json:"historical"`
	Points     []point `json:"points"`
}

type point struct {
	Tag     string          `json:"tag"`
	TS      int64           `json:"ts"`
	Value   json.RawMessage `json:"value"`
	Unit    string          `json:"unit"`
	Quality string          `json:"quality"`
	Reason  string          `json:"reason"`
}

// reading identifies one reading: a tag's value at one instant.
type reading struct {
	device, tag string
	ts          int64 // Unix ms
}

// subscriber is a checking MQTT client connected straight to the broker (not
// through the proxy the gateway uses), so it cannot miss a message itself.
type subscriber struct {
	mu       sync.Mutex
	got      map[reading]int // reading -> times received
	seqs     map[string]int  // device/seq -> times received
	msgs     int
	badJSON  int
	points   map[reading]point
	client   mqtt.Client
	statuses []string
}

func subscribe(t *testing.T, brokerAddr, topic string) *subscriber {
	t.Helper()
	s := &subscriber{got: map[reading]int{}, seqs: map[string]int{}, points: map[reading]point{}}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("e2e-checker-" + strconv.Itoa(os.Getpid())).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(true).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("checking subscriber: connect to %s: %v", brokerAddr, tok.Error())
	}
	s.client = c
	handler := func(_ mqtt.Client, m mqtt.Message) { s.add(m.Topic(), m.Payload()) }
	if tok := c.Subscribe(topic, 1, handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("checking subscriber: subscribe %s: %v", topic, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return s
}

func (s *subscriber) add(topic string, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.HasSuffix([]byte(topic), []byte("/status")) {
		s.statuses = append(s.statuses, string(payload))
		return
	}
	var m message
	if err := json.Unmarshal(payload, &m); err != nil {
		s.badJSON++
		return
	}
	s.msgs++
	s.seqs[m.Device+"/"+strconv.FormatUint(m.Seq, 10)]++
	for _, p := range m.Points {
		r := reading{m.Device, p.Tag, p.TS}
		s.got[r]++
		s.points[r] = p
	}
}

// missing returns how many of want the subscriber has not received, and one example.
func (s *subscriber) missing(want map[reading]struct{}) (int, reading) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	var ex reading
	for r := range want {
		if s.got[r] == 0 {
			if n == 0 {
				ex = r
			}
			n++
		}
	}
	return n, ex
}

// duplicateMessages returns how many messages arrived more than once (by device and seq).
func (s *subscriber) duplicateMessages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := 0
	for _, n := range s.seqs {
		d += n - 1
	}
	return d
}

// proxy is a TCP proxy between the gateway and the broker that the test can
// cut: cut resets every open connection (RST, not FIN) and refuses new ones
// until restore.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	cuts  int
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
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
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
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

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	p.cuts++
	for c := range p.conns {
		reset(c)
	}
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// process is the fieldgate binary running as a child process.
type process struct {
	cmd *exec.Cmd
	out *syncBuffer
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

func (s *syncBuffer) lines() []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader([]byte(s.String())))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// buildFieldgate compiles cmd/fieldgate once per test binary.
var buildOnce struct {
	sync.Once
	path string
	err  error
	out  []byte
}

func fieldgateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fieldgate-e2e-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = dir + "/fieldgate"
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", buildOnce.path, "../cmd/fieldgate")
		buildOnce.out, buildOnce.err = cmd.CombinedOutput()
	})
	if buildOnce.err != nil {
		t.Fatalf("build fieldgate: %v\n%s", buildOnce.err, buildOnce.out)
	}
	return buildOnce.path
}

func startFieldgate(t *testing.T, args ...string) *process {
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
func (p *process) stop(t *testing.T, sig syscall.Signal, d time.Duration) *os.ProcessState {
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
		t.Fatalf("fieldgate did not exit within %v of %v:\n%s", d, sig, p.out.String())
		return nil
	}
}
