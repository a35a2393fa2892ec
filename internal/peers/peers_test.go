package peers

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// echoServer accepts connections on a loopback port and writes back
// every line it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// echoClient is one connection through the proxy.
type echoClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialEcho(t *testing.T, addr string) *echoClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &echoClient{c: c, r: bufio.NewReader(c)}
}

// roundTrip sends line and returns what comes back within d.
func (e *echoClient) roundTrip(line string, d time.Duration) (string, error) {
	_ = e.c.SetDeadline(time.Now().Add(d))
	if _, err := fmt.Fprintln(e.c, line); err != nil {
		return "", err
	}
	got, err := e.r.ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

// echoOnce makes one new connection to addr and sends one line; it
// returns an error if the line does not come back.
func echoOnce(addr, line string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	e := &echoClient{c: c, r: bufio.NewReader(c)}
	got, err := e.roundTrip(line, 10*time.Second)
	if err == nil && got != line {
		err = fmt.Errorf("got %q back, want %q", got, line)
	}
	return err
}

func TestProxyCutResetsAndHoldRefuses(t *testing.T) {
	p := StartProxy(t, echoServer(t))
	c := dialEcho(t, p.Addr())
	if got, err := c.roundTrip("hello", 10*time.Second); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	p.Hold(true)
	if got, err := c.roundTrip("still open", 10*time.Second); err != nil || got != "still open" {
		t.Fatalf("Hold broke an open connection: %q, %v", got, err)
	}
	if err := echoOnce(p.Addr(), "refused"); err == nil {
		t.Fatal("a new connection worked while held")
	}
	p.Cut()
	if _, err := c.roundTrip("after cut", 10*time.Second); !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
		t.Fatalf("after Cut: %v, want a reset connection", err)
	}

	p.Hold(false)
	if err := echoOnce(p.Addr(), "back"); err != nil {
		t.Fatalf("after Hold(false): %v", err)
	}
}

func TestProxyBlackholeSwallowsThenForwards(t *testing.T) {
	p := StartProxy(t, echoServer(t))
	c := dialEcho(t, p.Addr())
	if got, err := c.roundTrip("hello", 10*time.Second); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.Blackhole(true)
	var ne net.Error
	if _, err := c.roundTrip("swallowed", 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("while black-holed: %v, want a read timeout", err)
	}
	if err := echoOnce(p.Addr(), "refused"); err == nil {
		t.Fatal("a new connection worked while black-holed")
	}
	p.Blackhole(false)
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := c.r.ReadString('\n'); err != nil || got != "swallowed\n" {
		t.Fatalf("held-back data after the black hole: %q, %v", got, err)
	}
	if err := echoOnce(p.Addr(), "new"); err != nil {
		t.Fatalf("a new connection after the black hole: %v", err)
	}
}

// TestProxyStallHoldsBackTheTarget stalls an echo: what the client sends
// reaches the echo server, whose answer waits until the stall ends.
func TestProxyStallHoldsBackTheTarget(t *testing.T) {
	p := StartProxy(t, echoServer(t))
	c := dialEcho(t, p.Addr())
	if got, err := c.roundTrip("hello", 10*time.Second); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.Stall(true)
	var ne net.Error
	if _, err := c.roundTrip("held", 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("while stalled: %v, want a read timeout", err)
	}
	p.Stall(false)
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := c.r.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("held-back answer after the stall: %q, %v", got, err)
	}
}

func TestProxyRateLimitedForwardsEverything(t *testing.T) {
	p := StartProxy(t, echoServer(t))
	p.SetRate(64 << 10)
	c := dialEcho(t, p.Addr())
	line := strings.Repeat("x", 8<<10)
	if got, err := c.roundTrip(line, 30*time.Second); err != nil || got != line {
		t.Fatalf("rate-limited round trip: %d bytes, %v", len(got), err)
	}
	p.SetRate(0)
	if got, err := c.roundTrip("unlimited", 10*time.Second); err != nil || got != "unlimited" {
		t.Fatalf("after SetRate(0): %q, %v", got, err)
	}
}

func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func TestMosquittoKillAndStartOnTheSamePorts(t *testing.T) {
	second := FreePort(t)
	m := StartMosquitto(t, MosquittoOptions{Extra: fmt.Sprintf("listener %d 127.0.0.1\n", second)})
	other := fmt.Sprintf("127.0.0.1:%d", second)
	for _, a := range []string{m.Addr(), other} {
		if err := dial(a); err != nil {
			t.Fatalf("listener %s after start: %v", a, err)
		}
	}
	m.Kill()
	if err := dial(m.Addr()); err == nil {
		t.Fatal("the broker still accepts connections after Kill")
	}
	m.Start()
	for _, a := range []string{m.Addr(), other} {
		if err := dial(a); err != nil {
			t.Fatalf("listener %s after restart: %v", a, err)
		}
	}
	if !strings.Contains(m.Output(), "mosquitto version") {
		t.Errorf("broker output not captured: %q", m.Output())
	}
}

func TestMosquittoGlobalOptionsComeFirst(t *testing.T) {
	tls := FreePort(t)
	m := StartMosquitto(t, MosquittoOptions{
		Global: "per_listener_settings true",
		Extra:  fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous false\n", tls),
	})
	CheckFor(t, 10*time.Second, "both listeners accept", func() error {
		if err := dial(m.Addr()); err != nil {
			return err
		}
		return dial(fmt.Sprintf("127.0.0.1:%d", tls))
	})
}

func TestProcessStopWithSignal(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("sleep not found")
	}
	p := StartProcess(t, sleep, "60")
	st := p.Stop(t, syscall.SIGTERM, 10*time.Second)
	ws, ok := st.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("process state %v, want killed by SIGTERM", st)
	}
}

func TestListenersFromConfig(t *testing.T) {
	got := listeners("per_listener_settings true\nlistener 1883 127.0.0.1\nallow_anonymous true\nlistener 8883\nlistener 0 /tmp/m.sock\n  listener 9001 ::1\n")
	want := []string{"127.0.0.1:1883", "127.0.0.1:8883", "[::1]:9001"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("listeners = %v, want %v", got, want)
	}
}
