package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/sim/opcuasim"
)

func startSim(t *testing.T, units ...uint8) *sim.ModbusServer {
	t.Helper()
	s := sim.NewModbus(sim.ModbusOptions{Units: units})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestReadAdHocShowsRawBesideValue(t *testing.T) {
	s := startSim(t)
	if err := s.PutFloat32(modbus.HoldingRegister, 0, modbus.CDAB, 123.456); err != nil {
		t.Fatal(err)
	}
	if err := s.PutFloat32(modbus.HoldingRegister, 2, modbus.CDAB, -1.5); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"read", "--url", s.URL(), "--address", "40001",
		"--type", "float32", "--order", "CDAB", "--count", "2"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, re := range []string{
		`fc3 holding 0\.\.3 \(40001\.\.40004\), 4 registers`,
		`40001\s+40001\s+float32 CDAB\s+e979 42f6\s+123\.456\s+good`,
		`40003\s+40003\s+float32 CDAB\s+0000 bfc0\s+-1\.5\s+good`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
}

func TestReadConfiguredTag(t *testing.T) {
	s := startSim(t)
	s.SetHolding(99, 1234)
	s.SetCoil(0, true)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`gateway: { id: gw }
mqtt: { url: tcp://127.0.0.1:1883 }
devices:
  - name: press-1
    modbus: { url: "%s" }
    tags:
      - { name: speed, table: holding, offset: 99, type: uint16, scale: 0.1, unit: rpm }
      - { name: running, address: 1, type: bool }
`, s.URL())
	path := filepath.Join(dir, "plant.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"read", "-c", path, "press-1/speed"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if !regexp.MustCompile(`speed\s+40100\s+uint16\s+04d2\s+123\.4 rpm\s+good`).MatchString(out) {
		t.Errorf("unexpected output:\n%s", out)
	}
	if strings.Contains(out, "running") {
		t.Errorf("read of one tag printed another:\n%s", out)
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"read", "-c", path, "press-2"}, &stdout, &stderr); code != exitConfig ||
		!strings.Contains(stderr.String(), `has no device "press-2"; it has press-1`) {
		t.Errorf("unknown device: exit %d, stderr %s", code, stderr.String())
	}
}

func TestReadReportsException(t *testing.T) {
	s := startSim(t)
	var stdout, stderr bytes.Buffer
	// Past the end of the simulator's table: exception 02.
	code := run(context.Background(), []string{"read", "--url", s.URL(), "--table", "holding", "--offset", "65000"}, &stdout, &stderr)
	if code != exitFail {
		t.Fatalf("exit %d, want %d:\n%s", code, exitFail, stdout.String())
	}
	if !strings.Contains(stdout.String(), "error:") || !strings.Contains(stdout.String(), "bad:exception") {
		t.Errorf("no exception shown:\n%s", stdout.String())
	}
}

func TestScanFindsUnits(t *testing.T) {
	s := startSim(t, 3, 7)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"scan", "--url", s.URL(), "--units", "1-8", "--timeout", "200ms"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"unit   3: answered", "unit   7: answered", "2 of 8 unit ids answered"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestParseUnits(t *testing.T) {
	got, err := parseUnits("1-3, 7,2")
	if err != nil || fmt.Sprint(got) != "[1 2 3 7]" {
		t.Errorf("parseUnits = %v, %v", got, err)
	}
	for _, bad := range []string{"", "a", "5-1", "1-300"} {
		if _, err := parseUnits(bad); err == nil {
			t.Errorf("parseUnits(%q) accepted", bad)
		}
	}
}

// TestReadOPCUADevice reads a configured OPC UA device from the simulator,
// a subscribed tag included, and then one tag of it.
func TestReadOPCUADevice(t *testing.T) {
	s := opcuasim.New(opcuasim.Options{})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	dir := t.TempDir()
	cfg := fmt.Sprintf(`gateway: { id: gw }
mqtt: { url: tcp://127.0.0.1:1883 }
devices:
  - name: cnc
    opcua: { url: %q, timeout: 2s }
    tags:
      - { name: temp, node: %q, unit: degC }
      - { name: counter, node: %q, mode: subscribe, queue_size: 3 }
      - { name: missing, node: "nsu=urn:fieldgate:sim;s=Nope" }
`, s.URL(), s.NodeID("Temperature"), s.NodeID("Counter"))
	path := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"read", "-c", path, "cnc"}, &stdout, &stderr)
	out := stdout.String()
	if code != exitFail { // the missing node is Bad
		t.Errorf("exit %d, want %d: %s%s", code, exitFail, out, stderr.String())
	}
	for _, re := range []string{
		`device cnc at opc\.tcp://127\.0\.0\.1:\d+, security None/None`,
		`temp\s+nsu=urn:fieldgate:sim;s=Temperature\s+21\.5 degC\s+good\s+20\d\d-`,
		`counter\s+nsu=urn:fieldgate:sim;s=Counter\s+0\s+good`,
		`missing\s+nsu=urn:fieldgate:sim;s=Nope\s+\S*\s*bad:device`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(context.Background(), []string{"read", "-c", path, "cnc/temp"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	if out := stdout.String(); !strings.Contains(out, "temp") || strings.Contains(out, "counter") {
		t.Errorf("one tag:\n%s", out)
	}
	if code := run(context.Background(), []string{"read", "-c", path, "cnc/nope"}, &stdout, &stderr); code != exitConfig || !strings.Contains(stderr.String(), `device "cnc" has no tag "nope"`) {
		t.Errorf("unknown tag: exit %d, %s", code, stderr.String())
	}
}
