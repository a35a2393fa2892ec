package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/fieldgate/fieldgate/internal/peers"
)

// lockedBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// checkFor polls cond until it holds or d passes (internal/peers).
var checkFor = peers.CheckFor

func TestValidateReportsFileLineAndField(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "plant.yaml")
	cfg := `gateway: { id: gw }
mqtt: { url: tcp://127.0.0.1:1883 }
devices:
  - name: press-1
    modbus: { url: tcp://127.0.0.1:502 }
    tags:
      - { name: t, address: 40001, type: flaot32 }
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"validate", "-c", path}, &stdout, &stderr)
	if code != exitConfig {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, exitConfig, stderr.String())
	}
	want := regexp.MustCompile(`plant\.yaml:7:\d+: devices\[0\]\.tags\[0\]\.type: "flaot32" is not a type; use one of bool, int16, `)
	if !want.MatchString(stderr.String()) {
		t.Fatalf("stderr does not match %s:\n%s", want, stderr.String())
	}
}

func TestValidatePrintsPlanForExample(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "secret")
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"validate", "-c", "../../deploy/examples/plant.yaml", "--plan"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"device press-1", "device boiler-2", "oil_temp", "config OK"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"frobnicate"}, &stdout, &stderr); code != exitConfig {
		t.Fatalf("exit code %d, want %d", code, exitConfig)
	}
	if !strings.Contains(stderr.String(), `unknown command "frobnicate"`) {
		t.Fatalf("stderr: %s", stderr.String())
	}
}

// TestRunKeepsRunningWithoutDeviceOrBroker starts the gateway with a device
// and a broker that both refuse connections: each gives a clear message, the
// gateway keeps running (and buffering Bad readings) until it is stopped.
func TestRunKeepsRunningWithoutDeviceOrBroker(t *testing.T) {
	dir := t.TempDir()
	deadDevice, deadBroker := closedPort(t), closedPort(t)
	cfg := fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
mqtt: { url: "tcp://%s", connect_timeout: 1s }
devices:
  - name: press-1
    modbus: { url: "tcp://%s", timeout: 200ms }
    poll: 100ms
    tags:
      - { name: t, address: 40001, type: uint16 }
`, dir, deadBroker, deadDevice)
	path := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout bytes.Buffer
	stderr := new(lockedBuffer)
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"run", "-c", path}, &stdout, stderr) }()

	checkFor(t, 15*time.Second, "device and broker failures logged", func() error {
		s := stderr.String()
		for _, want := range []string{deadDevice, deadBroker, "device down", "cannot connect to the broker"} {
			if !strings.Contains(s, want) {
				return fmt.Errorf("no log line names %s yet:\n%s", want, s)
			}
		}
		return nil
	})
	select {
	case code := <-done:
		t.Fatalf("gateway exited (code %d) instead of retrying:\n%s", code, stderr.String())
	default:
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit code %d after stop:\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not stop within 15 s")
	}
	t.Logf("log:\n%s", stderr.String())
}

// TestDemoShowsTelemetry runs the README's first command for a few seconds.
func TestDemoShowsTelemetry(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := new(lockedBuffer), new(lockedBuffer)
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"demo"}, stdout, stderr) }()
	checkFor(t, 60*time.Second, "telemetry from every device on the console", func() error {
		s := stdout.String()
		for _, want := range []string{"press-1", "oil_temp=", "degC", "boiler-2", "water_temp=", "meter-3", "power=", "status=online",
			"cnc-4", "spindle_temp=", "parts=", "setpoint=5 bar"} {
			if !strings.Contains(s, want) || strings.Count(s, "seq=") < 3 {
				return fmt.Errorf("output lacks %q:\n%s", want, s)
			}
		}
		return nil
	})
	// The write the demo suggests: answered, and the next poll shows it.
	m := regexp.MustCompile(`an MQTT broker on (127\.0\.0\.1:\d+)`).FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no broker address in the output:\n%s", stdout.String())
	}
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + m[1]).SetClientID("demo-test"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to the demo's broker: %v", tok.Error())
	}
	defer pub.Disconnect(0)
	if tok := pub.Publish("fieldgate/demo-gw/press-1/set", 1, false, `{"id":"1","tag":"setpoint","value":6.5}`); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish the set command: %v", tok.Error())
	}
	checkFor(t, 30*time.Second, "the write answered and polled", func() error {
		s := stdout.String()
		for _, want := range []string{`"id":"1","device":"press-1","tag":"setpoint","ok":true`, "setpoint=6.50 bar"} {
			if !strings.Contains(s, want) {
				return fmt.Errorf("output lacks %q:\n%s", want, s)
			}
		}
		return nil
	})
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("demo exit code %d:\n%s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("demo did not stop within 15 s")
	}
	if !strings.Contains(stdout.String(), "stopped:") {
		t.Errorf("no closing summary:\n%s", stdout.String())
	}
}

// closedPort returns a loopback address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
