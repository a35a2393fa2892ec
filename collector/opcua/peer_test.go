package opcua

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// peer is a running testdata/nodeopcua/server.js.
type peer struct {
	url   string
	pki   string // its PKI folder, "" without security
	in    io.Writer
	lines chan string // its stdout after READY
}

// startNodeOPCUA starts a node-opcua server without security; see
// startPeer.
func startNodeOPCUA(t *testing.T) string { return startPeer(t, "").url }

// startPeer starts testdata/nodeopcua/server.js, an OPC UA server from
// node-opcua, an implementation independent of gopcua. With pki set it
// offers every security policy and mode, keeps its certificates there and
// accepts any client certificate (see server.js). It needs node and
// `npm install` run in testdata/nodeopcua; without them the test is
// skipped, or fails when the environment variable CI is set.
func startPeer(t *testing.T, pki string) *peer {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("testdata", "nodeopcua"))
	missing := func(why string) {
		msg := why + "; run: (cd collector/opcua/testdata/nodeopcua && npm install --no-package-lock) to install node-opcua"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "node-opcua")); err != nil {
		missing("node-opcua is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	args := []string{"server.js", strconv.Itoa(port)}
	if pki != "" {
		args = append(args, pki)
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	p := &peer{pki: pki, in: in, lines: make(chan string, 16)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if port, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- port
				continue
			}
			if strings.HasPrefix(sc.Text(), "OK ") || strings.HasPrefix(sc.Text(), "STATS ") || strings.HasPrefix(sc.Text(), "ERR ") {
				p.lines <- sc.Text()
			}
		}
		close(p.lines)
	}()
	select {
	case port := <-ready:
		p.url = "opc.tcp://127.0.0.1:" + port
		return p
	case <-time.After(60 * time.Second):
		t.Fatal("node-opcua server did not start in 60s")
	}
	return nil
}

// command sends one command to server.js and returns its answer.
func (p *peer) command(t *testing.T, cmd string) string {
	t.Helper()
	if _, err := io.WriteString(p.in, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case line, ok := <-p.lines:
		if !ok {
			t.Fatalf("%s: the server exited", cmd)
		}
		if strings.HasPrefix(line, "ERR ") {
			t.Fatalf("%s: %s", cmd, line)
		}
		return line
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer in 10s", cmd)
	}
	return ""
}

// stats returns the counts of the server's "stats" command.
func (p *peer) stats(t *testing.T) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, f := range strings.Fields(strings.TrimPrefix(p.command(t, "stats"), "STATS ")) {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("stats: %q", f)
		}
		m[k] = n
	}
	return m
}

// serverCert returns the path of the peer's own certificate (PEM).
func (p *peer) serverCert() string {
	return filepath.Join(p.pki, "server", "own", "certs", "certificate.pem")
}

// TestNodeOPCUAPeer reads values of several types through namespace-URI
// node ids from node-opcua, by polling and by subscription.
func TestNodeOPCUAPeer(t *testing.T) {
	url := startNodeOPCUA(t)
	const nsu = "nsu=urn:fieldgate:peer;s="
	want := map[string]telemetry.Value{
		"Bool":       telemetry.Bool(true),
		"SByte":      telemetry.Int(-5),
		"Int16":      telemetry.Int(-1234),
		"UInt16":     telemetry.Uint(54321),
		"Int32":      telemetry.Int(-123456),
		"UInt32":     telemetry.Uint(4000000000),
		"Int64":      telemetry.Int(-2),
		"UInt64":     telemetry.Uint(1 << 32),
		"Float":      telemetry.Float32(1.5),
		"Double":     telemetry.Float(3.25),
		"String":     telemetry.String("peer"),
		"DateTime":   telemetry.String("2024-01-02T03:04:05Z"),
		"ByteString": telemetry.String("0102ff"),
	}
	var tags []Tag
	for name := range want {
		tags = append(tags, Tag{Name: name, Node: nsu + name})
	}
	tags = append(tags,
		Tag{Name: "ArrayDouble", Node: nsu + "ArrayDouble"},
		Tag{Name: "Counter", Node: nsu + "Counter", Mode: ModeSubscribe, Poll: 100 * time.Millisecond},
		Tag{Name: "SubDouble", Node: nsu + "Double", Mode: ModeSubscribe, Poll: 100 * time.Millisecond})
	d := newDriver(t, Config{URL: url, Poll: time.Second, Timeout: 5 * time.Second, Tags: tags})
	connect(t, d)
	pg, sg := 0, 1
	if d.Mode(0) == ModeSubscribe {
		pg, sg = 1, 0
	}
	pts, err := read(t, d, pg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pts {
		if p.Tag == "ArrayDouble" {
			if p.Quality != telemetry.Bad|telemetry.ReasonDecode {
				t.Errorf("array: %+v, want bad:decode", p)
			}
			continue
		}
		if w := want[p.Tag]; p.Value != w || !p.Quality.IsGood() {
			t.Errorf("%s = %v (%v, %v), want %v", p.Tag, p.Value, p.Value.Kind(), p.Quality, w)
		}
	}
	first := waitPoints(t, d, sg, func(m map[string]telemetry.Point) bool {
		return m["SubDouble"].Value == telemetry.Float(3.25) && m["Counter"].Quality.IsGood() && m["Counter"].Value.Kind() == telemetry.KindUint
	})
	c0 := first["Counter"].Value.AsUint()
	waitPoints(t, d, sg, func(m map[string]telemetry.Point) bool { return m["Counter"].Value.AsUint() > c0 })
}
