package modbus_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/telemetry"
)

// peerPython is Debian's interpreter, the one python3-pymodbus installs for.
const peerPython = "/usr/bin/python3"

// TestDriverAgainstPymodbus reads every type and order from an independent
// Modbus server: pymodbus, filled by testdata/pymodbus_server.py with values
// encoded by Python's struct module. The script describes what it serves in
// a manifest whose entries use the config's tag keys.
func TestDriverAgainstPymodbus(t *testing.T) {
	if err := exec.Command(peerPython, "-c", "import pymodbus").Run(); err != nil {
		msg := fmt.Sprintf("independent Modbus peer missing: %s cannot import pymodbus (%v); install Debian's python3-pymodbus: apt-get install -y python3-pymodbus", peerPython, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg) // CI installs it; a skip there would hide the only independent check
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, peerPython, "testdata/pymodbus_server.py", "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	type line struct {
		manifest string
		port     string
	}
	ready := make(chan line, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 1<<16), 1<<22)
		var l line
		for sc.Scan() {
			switch f := strings.SplitN(sc.Text(), " ", 2); f[0] {
			case "manifest":
				l.manifest = f[1]
			case "ready":
				l.port = f[1]
				ready <- l
			}
		}
		close(ready)
	}()
	var l line
	select {
	case got, ok := <-ready:
		if !ok {
			t.Fatalf("pymodbus server exited before it was ready: %s", stderr.String())
		}
		l = got
	case <-time.After(30 * time.Second):
		t.Fatalf("pymodbus server not ready within 30s: %s", stderr.String())
	}

	var entries []struct {
		modbus.Tag `yaml:",inline"`
		Want       string `yaml:"want"`
	}
	if err := yaml.Unmarshal([]byte(l.manifest), &entries); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	var tags []modbus.Tag
	for _, e := range entries {
		tags = append(tags, e.Tag)
	}
	d := newDriver(t, modbus.Config{URL: "tcp://127.0.0.1:" + l.port, Unit: 1, Tags: tags})
	t.Logf("plan:\n%s", d.Plan())
	connect(t, d)
	pts, err := read(t, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != len(entries) {
		t.Fatalf("%d points for %d tags", len(pts), len(entries))
	}
	for i, e := range entries {
		p := pts[i]
		want := parseWant(t, e.Tag, e.Want)
		if p.Tag != e.Name || !p.Quality.IsGood() || !p.Value.Equal(want) {
			t.Errorf("%s (%s %s at %s %d): got %v %v, want %v", e.Name, e.Type, e.Order, e.Table, *e.Offset, p.Value, p.Quality, want)
		}
	}
}

func parseWant(t *testing.T, tag modbus.Tag, s string) telemetry.Value {
	t.Helper()
	var v telemetry.Value
	var err error
	switch {
	case tag.Scale != nil || tag.ValueOffset != nil || tag.Type == modbus.TypeFloat32 || tag.Type == modbus.TypeFloat64:
		var f float64
		f, err = strconv.ParseFloat(s, 64)
		v = telemetry.Float(f)
		if tag.Type == modbus.TypeFloat32 && tag.Scale == nil && tag.ValueOffset == nil {
			v = telemetry.Float32(float32(f))
		}
	case tag.Type == modbus.TypeBool:
		var b bool
		b, err = strconv.ParseBool(s)
		v = telemetry.Bool(b)
	case tag.Type == modbus.TypeString:
		v = telemetry.String(s)
	case strings.HasPrefix(tag.Type.String(), "uint"):
		var u uint64
		u, err = strconv.ParseUint(s, 10, 64)
		v = telemetry.Uint(u)
	default:
		var i int64
		i, err = strconv.ParseInt(s, 10, 64)
		v = telemetry.Int(i)
	}
	if err != nil {
		t.Fatalf("tag %s: want %q: %v", tag.Name, s, err)
	}
	return v
}
