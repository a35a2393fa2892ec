package peers

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MosquittoPath returns the mosquitto binary, or skips the test with a
// message naming the Debian package; with CI set it fails instead.
func MosquittoPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	missing(t, "mosquitto not found: install the Debian package mosquitto (apt-get install -y mosquitto)")
	return ""
}

// missing skips the test with msg, or fails it when CI is set.
func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// MosquittoOptions configure StartMosquitto. The zero value is one plain
// listener on a free port.
type MosquittoOptions struct {
	// Port is the plain listener's port on 127.0.0.1; 0 picks a free one.
	// The plain listener allows anonymous clients and puts no bound on
	// queued or in-flight messages.
	Port int
	// Global holds configuration lines written before any listener, for
	// the options Mosquitto wants first (per_listener_settings).
	Global string
	// Extra holds configuration lines written after the plain listener:
	// more listeners (TLS, password files) and their settings. Start waits
	// until every listener named here accepts connections too.
	Extra string
}

// Mosquitto is a real Mosquitto broker process on 127.0.0.1 that the test
// can SIGKILL and start again on the same ports with the same
// configuration. It is stopped when the test ends. Its methods must be
// called from the test's goroutine.
type Mosquitto struct {
	t     testing.TB
	bin   string
	port  int
	conf  string
	addrs []string // every listener, waited for by Start
	cmd   *exec.Cmd
	out   *SyncBuffer
}

// StartMosquitto writes the broker's configuration file, starts the
// broker and waits until it accepts connections on every listener. It
// skips the test when mosquitto is not installed (fails with CI set).
func StartMosquitto(t testing.TB, o MosquittoOptions) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, bin: MosquittoPath(t), port: o.Port, out: new(SyncBuffer)}
	if m.port == 0 {
		m.port = FreePort(t)
	}
	var b strings.Builder
	if o.Global != "" {
		b.WriteString(strings.TrimSuffix(o.Global, "\n") + "\n")
	}
	fmt.Fprintf(&b, "listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n", m.port)
	if o.Extra != "" {
		b.WriteString(strings.TrimSuffix(o.Extra, "\n") + "\n")
	}
	m.addrs = listeners(b.String())
	m.conf = filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Kill)
	return m
}

// listeners returns host:port of every TCP listener line of a Mosquitto
// configuration ("listener PORT [ADDRESS]"; no address means 127.0.0.1
// here, where the broker is reached).
func listeners(conf string) []string {
	var out []string
	for _, line := range strings.Split(conf, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "listener" || f[1] == "0" {
			continue
		}
		host := "127.0.0.1"
		if len(f) > 2 {
			host = f[2]
		}
		out = append(out, net.JoinHostPort(host, f[1]))
	}
	return out
}

// Addr returns host:port of the plain listener.
func (m *Mosquitto) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

// Port returns the plain listener's port.
func (m *Mosquitto) Port() int { return m.port }

// Output returns what the broker has written to stdout and stderr since
// StartMosquitto, over every restart.
func (m *Mosquitto) Output() string { return m.out.String() }

// Start starts the broker (again, after Kill) and waits up to 10 s until
// every listener accepts connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.cmd = exec.Command(m.bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	CheckFor(m.t, 10*time.Second, "mosquitto accepts connections", func() error {
		for _, a := range m.addrs {
			c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
			if err != nil {
				return fmt.Errorf("%w; mosquitto says: %s", err, m.out.String())
			}
			_ = c.Close()
		}
		return nil
	})
}

// Kill SIGKILLs the broker and waits for it to exit; it does nothing when
// the broker is not running.
func (m *Mosquitto) Kill() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	_ = m.cmd.Wait()
	m.cmd = nil
}
