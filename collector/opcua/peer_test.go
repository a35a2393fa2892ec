package opcua

import (
	"bufio"
	"context"
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

// startNodeOPCUA starts testdata/nodeopcua/server.js, an OPC UA server
// from node-opcua, an implementation independent of gopcua. It needs node
// and `npm install` run in testdata/nodeopcua; without them the test is
// skipped, or fails when the environment variable CI is set.
func startNodeOPCUA(t *testing.T) string {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("testdata", "nodeopcua"))
	missing := func(why string) {
		msg := why + "; run: (cd collector/opcua/testdata/nodeopcua && npm install) to install node-opcua"
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
	cmd := exec.CommandContext(ctx, node, "server.js", strconv.Itoa(port))
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
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
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- p
			}
		}
	}()
	select {
	case p := <-ready:
		return "opc.tcp://127.0.0.1:" + p
	case <-time.After(60 * time.Second):
		t.Fatal("node-opcua server did not start in 60s")
	}
	return ""
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
