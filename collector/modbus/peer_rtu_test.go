package modbus_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/telemetry"
)

// TestRTUAgainstPymodbus reads every type and order from pymodbus serving
// Modbus RTU on one end of a socat pseudo-terminal pair, with a second
// slave on the same line and a third unit id that nobody answers, and
// writes to it.
func TestRTUAgainstPymodbus(t *testing.T) {
	testSerialAgainstPymodbus(t, "rtu", "19200")
}

// TestASCIIAgainstPymodbus is TestRTUAgainstPymodbus in Modbus ASCII.
func TestASCIIAgainstPymodbus(t *testing.T) {
	testSerialAgainstPymodbus(t, "ascii", "19200", "ascii")
}

func testSerialAgainstPymodbus(t *testing.T, scheme string, baud string, args ...string) {
	if err := exec.Command(peerPython, "-c", "import pymodbus, serial").Run(); err != nil {
		msg := fmt.Sprintf("independent Modbus peer missing: %s cannot import pymodbus and serial (%v); install Debian's python3-pymodbus: apt-get install -y python3-pymodbus", peerPython, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	a, b := socatPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, peerPython, append([]string{"testdata/pymodbus_rtu_server.py", b, baud}, args...)...)
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
	manifest := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 1<<16), 1<<22)
		var m string
		for sc.Scan() {
			switch f := strings.SplitN(sc.Text(), " ", 2); f[0] {
			case "manifest":
				m = f[1]
			case "ready":
				manifest <- m
			}
		}
		close(manifest)
	}()
	var m string
	select {
	case got, ok := <-manifest:
		if !ok {
			t.Fatalf("pymodbus RTU server exited before it was ready: %s", stderr.String())
		}
		m = got
	case <-time.After(30 * time.Second):
		t.Fatalf("pymodbus RTU server not ready within 30s: %s", stderr.String())
	}
	var entries []struct {
		modbus.Tag `yaml:",inline"`
		Want       string `yaml:"want"`
	}
	if err := yaml.Unmarshal([]byte(m), &entries); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	var tags []modbus.Tag
	for _, e := range entries {
		tags = append(tags, e.Tag)
	}
	url := scheme + "://" + a + "?baud=" + baud + "&parity=N&data=8"
	links := modbus.NewLinks(discard())
	// pymodbus in Python is slow on a loaded machine; a generous timeout only
	// lengthens the one read of an absent unit.
	newDev := func(unit uint8, tags []modbus.Tag) *modbus.Driver {
		d, err := modbus.New("peer", modbus.Config{URL: url, Unit: unit, Timeout: 1500 * time.Millisecond, Poll: time.Second, Tags: tags}, discard(), modbus.WithLinks(links))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		connect(t, d)
		return d
	}
	d1 := newDev(1, tags)
	d2 := newDev(2, []modbus.Tag{{Name: "r0", Address: 40001}, {Name: "r9", Address: 40010, Type: modbus.TypeInt16}})
	d3 := newDev(3, []modbus.Tag{{Name: "r0", Address: 40001}})
	for range 2 {
		pts, err := read(t, d1, 0)
		if err != nil {
			t.Fatalf("unit 1: %v (pymodbus: %s)", err, stderr.String())
		}
		for i, e := range entries {
			p := pts[i]
			want := parseWant(t, e.Tag, e.Want)
			if p.Tag != e.Name || !p.Quality.IsGood() || !p.Value.Equal(want) {
				t.Errorf("%s (%s %s at %s %d): got %v %v, want %v", e.Name, e.Type, e.Order, e.Table, *e.Offset, p.Value, p.Quality, want)
			}
		}
		pts, err = read(t, d2, 0)
		if err != nil || !pts[0].Value.Equal(telemetry.Uint(200)) || !pts[1].Value.Equal(telemetry.Int(209)) {
			t.Errorf("unit 2: %v, %v", pts, err)
		}
		var te interface{ Timeout() bool }
		if _, err := read(t, d3, 0); !errAs(err, &te) || !te.Timeout() {
			t.Errorf("unit 3 (nobody): %v, want a timeout", err)
		}
	}
	// Writes, read back from the peer.
	if err := write(t, d2, "r9", telemetry.Int(-5)); err != nil {
		t.Fatal(err)
	}
	if err := write(t, d1, "holding_float32_CDAB", telemetry.Float(-1.5)); err != nil {
		t.Fatal(err)
	}
	if pts, err := read(t, d2, 0); err != nil || !pts[1].Value.Equal(telemetry.Int(-5)) {
		t.Errorf("unit 2 after write: %v, %v", pts, err)
	}
	pts, err := read(t, d1, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pts {
		if p.Tag == "holding_float32_CDAB" && !p.Value.Equal(telemetry.Float32(-1.5)) {
			t.Errorf("float32 CDAB after write: %v", p.Value)
		}
	}
}

func errAs(err error, target any) bool { return err != nil && errors.As(err, target) }
