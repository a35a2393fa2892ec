package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/api"
	"github.com/fieldgate/fieldgate/audit"
	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/telemetry"
)

// platform is an MQTT client on the cloud side: it publishes set commands
// and collects their results by id.
type platform struct {
	c       paho.Client
	mu      sync.Mutex
	results map[string][]map[string]any // by id as text
}

func newPlatform(t *testing.T, url string) *platform {
	t.Helper()
	p := &platform{results: map[string][]map[string]any{}}
	o := paho.NewClientOptions().AddBroker(url).SetClientID("platform").SetAutoReconnect(false).SetCleanSession(true)
	p.c = paho.NewClient(o)
	if tok := p.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("platform connect: %v", tok.Error())
	}
	t.Cleanup(func() { p.c.Disconnect(0) })
	tok := p.c.Subscribe("fieldgate/gw/+/set/result", 1, func(_ paho.Client, m paho.Message) {
		var r map[string]any
		if err := json.Unmarshal(m.Payload(), &r); err != nil {
			t.Errorf("result on %s is not JSON: %q", m.Topic(), m.Payload())
			return
		}
		r["topic"], r["retained"] = m.Topic(), m.Retained()
		p.mu.Lock()
		p.results[fmt.Sprint(r["id"])] = append(p.results[fmt.Sprint(r["id"])], r)
		p.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("platform subscribe: %v", tok.Error())
	}
	return p
}

func (p *platform) send(t *testing.T, device, payload string) {
	t.Helper()
	tok := p.c.Publish("fieldgate/gw/"+device+"/set", 1, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
}

func (p *platform) result(id string) (map[string]any, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.results[id]
	if len(rs) == 0 {
		return nil, 0
	}
	return rs[0], len(rs)
}

// forgetfulDevice is a Modbus TCP device in front of dev that acknowledges
// every write (function 5, 6, 15, 16) without carrying it out, as a PLC in
// local mode does; reads go through to dev.
func forgetfulDevice(t *testing.T, dev string) string {
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
				up, err := net.Dial("tcp", dev)
				if err != nil {
					return
				}
				defer up.Close()
				in, out := bufio.NewReader(c), bufio.NewReader(up)
				frame := func(r *bufio.Reader) ([]byte, error) {
					h := make([]byte, 7)
					if _, err := io.ReadFull(r, h); err != nil {
						return nil, err
					}
					n := int(binary.BigEndian.Uint16(h[4:]))
					if n < 2 || n > 260 {
						return nil, fmt.Errorf("bad length %d", n)
					}
					body := make([]byte, n-1)
					if _, err := io.ReadFull(r, body); err != nil {
						return nil, err
					}
					return append(h, body...), nil
				}
				for {
					req, err := frame(in)
					if err != nil {
						return
					}
					var resp []byte
					switch fc := req[7]; fc {
					case 5, 6:
						resp = req // the echo of a successful write
					case 15, 16:
						resp = append(req[:7:7], req[7:12]...)
						binary.BigEndian.PutUint16(resp[4:], 6)
					default:
						if _, err := up.Write(req); err != nil {
							return
						}
						if resp, err = frame(out); err != nil {
							return
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func float32At(s *sim.ModbusServer, offset uint16) float32 {
	r := s.Holding(offset, 2)
	return math.Float32frombits(uint32(r[0])<<16 | uint32(r[1]))
}

func readAudit(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestWritesThroughJSONCommands runs a gateway against the Modbus
// simulator and the embedded broker, and a platform client that publishes
// set commands: a write within range changes the register and is answered
// ok; writes out of range, to a tag that is not writable, of the wrong type
// and over the rate limit are answered with their code and reason and
// leave the registers as they were; verify: true reads back, and catches a
// device that acknowledges a write without keeping it; every attempt has
// exactly one audit entry and is counted in fieldgate_writes_total.
func TestWritesThroughJSONCommands(t *testing.T) {
	dev := sim.NewModbus(sim.ModbusOptions{})
	if err := dev.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	dev.SetHolding(3, 7)       // mode
	dev.SetHolding(10, 0xBEEF) // the forgetful device's register
	forgetful := forgetfulDevice(t, dev.Addr())

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	brk, err := broker.Start("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	defer brk.Close()
	dir := t.TempDir()
	cfg, err := config.Parse("gw.yaml", []byte(fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
mqtt: { url: "%s" }
devices:
  - name: press-1
    modbus: { url: "tcp://%s", timeout: 1s }
    poll: 100ms
    tags:
      - { name: setpoint, address: 40001, type: float32, writable: true, min: 0, max: 40 }
      - { name: speed, address: 40003, type: uint16, writable: true, rate_limit: 2/min }
      - { name: mode, address: 40004, type: uint16 }
      - { name: level, address: 40005, type: int16, scale: 0.1, writable: true, verify: true }
      - { name: pump, address: 1, type: bool, writable: true, verify: true }
      - { name: recipe, address: 40020, type: string, length: 2, writable: true }
  - name: stubborn
    modbus: { url: "tcp://%s", timeout: 1s }
    poll: 100ms
    tags:
      - { name: target, address: 40011, type: uint16, writable: true, verify: true }
`, dir, brk.URL(), dev.Addr(), forgetful)))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	defer stop()

	p := newPlatform(t, brk.URL())
	// Commands sent before the gateway has subscribed are lost: ping
	// until one is answered.
	pings := 0
	checkFor(t, 15*time.Second, "the gateway answers set commands", func() error {
		pings++
		p.send(t, "press-1", fmt.Sprintf(`{"id":"ping-%d","tag":"nope","value":1}`, pings))
		for i := 1; i <= pings; i++ {
			if r, _ := p.result(fmt.Sprint("ping-", i)); r != nil {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
		return fmt.Errorf("no answer to %d pings", pings)
	})

	type want struct {
		device, payload, code, reason string
	}
	cases := map[string]want{
		"ok":            {"press-1", `{"id":"ok","tag":"setpoint","value":12.5}`, "ok", ""},
		"above-max":     {"press-1", `{"id":"above-max","tag":"setpoint","value":42.5}`, "out_of_range", "42.5 is above max 40"},
		"below-min":     {"press-1", `{"id":"below-min","tag":"setpoint","value":-1}`, "out_of_range", "-1 is below min 0"},
		"not-writable":  {"press-1", `{"id":"not-writable","tag":"mode","value":5}`, "not_writable", "tag mode of press-1 is not writable"},
		"fraction":      {"press-1", `{"id":"fraction","tag":"speed","value":12.5}`, "wrong_type", "12.5 is not one"},
		"string-to-int": {"press-1", `{"id":"string-to-int","tag":"speed","value":"fast"}`, "wrong_type", `not the string "fast"`},
		"int-to-bool":   {"press-1", `{"id":"int-to-bool","tag":"pump","value":1}`, "wrong_type", "send true or false"},
		"type-range":    {"press-1", `{"id":"type-range","tag":"speed","value":70000}`, "out_of_range", "70000 is above 65535"},
		"long-text":     {"press-1", `{"id":"long-text","tag":"recipe","value":"ABCDE"}`, "out_of_range", "5 bytes, longer than the 4"},
		"whole-float":   {"press-1", `{"id":"whole-float","tag":"speed","value":12.0}`, "ok", ""},
		"second":        {"press-1", `{"id":"second","tag":"speed","value":13}`, "ok", ""},
		"third":         {"press-1", `{"id":"third","tag":"speed","value":14}`, "rate_limited", "tag speed allows 2/min"},
		"scaled-verify": {"press-1", `{"id":"scaled-verify","tag":"level","value":-12.3}`, "ok", ""},
		"coil-verify":   {"press-1", `{"id":"coil-verify","tag":"pump","value":true}`, "ok", ""},
		"forgotten":     {"stubborn", `{"id":"forgotten","tag":"target","value":7}`, "verify_failed", "wrote 7 but read back 48879"},
		"no-device":     {"press-9", `{"id":"no-device","tag":"setpoint","value":1}`, "unknown_device", `no device "press-9"`},
		"bad-json":      {"press-1", `{"id":"bad-json","tag":"setpoint","value":}`, "bad_request", "not valid JSON"},
	}
	// In order: the rate limit counts whole-float and second before third.
	order := []string{"ok", "above-max", "below-min", "not-writable", "fraction", "string-to-int", "int-to-bool", "type-range",
		"long-text", "whole-float", "second", "third", "scaled-verify", "coil-verify", "forgotten", "no-device", "bad-json"}
	for _, id := range order {
		p.send(t, cases[id].device, cases[id].payload)
	}
	checkFor(t, 20*time.Second, "a result for every command", func() error {
		for _, id := range order {
			if r, _ := p.result(id); r == nil {
				return fmt.Errorf("no result for %s", id)
			}
		}
		return nil
	})
	for _, id := range order {
		w := cases[id]
		r, n := p.result(id)
		if n != 1 {
			t.Errorf("%s: %d results, want 1", id, n)
		}
		code, _ := r["code"].(string)
		reason, _ := r["reason"].(string)
		ok := w.code == "ok"
		if r["ok"] != ok || (!ok && code != w.code) || !strings.Contains(reason, w.reason) || r["device"] != w.device ||
			r["topic"] != "fieldgate/gw/"+w.device+"/set/result" || r["retained"] != false {
			t.Errorf("%s: result %v, want code %s with reason containing %q", id, r, w.code, w.reason)
		}
	}

	// The device: what was accepted is there, nothing else.
	if got := float32At(dev, 0); got != 12.5 {
		t.Errorf("setpoint register holds %v, want 12.5 (only the accepted write)", got)
	}
	if got := dev.Holding(2, 3); got[0] != 13 || got[1] != 7 || int16(got[2]) != -123 {
		t.Errorf("speed, mode, level registers = %d, %d, %d; want 13 (not 14), 7 (unchanged), -123", got[0], got[1], int16(got[2]))
	}
	if !dev.Coil(0) {
		t.Error("pump coil not set")
	}
	if got := dev.Holding(19, 1)[0]; got != 0 {
		t.Errorf("recipe register = %#x, want 0", got)
	}
	if got := dev.Holding(10, 1)[0]; got != 0xBEEF {
		t.Errorf("the forgetful device's register = %#x, want 0xBEEF", got)
	}

	// The audit log: one entry per attempt, with the result and values.
	stop()
	entries := readAudit(t, filepath.Join(dir, "audit.log"))
	byID := map[string][]map[string]any{}
	for _, e := range entries {
		if e["event"] != "write" {
			t.Errorf("unexpected audit entry %v", e)
			continue
		}
		byID[fmt.Sprint(e["id"])] = append(byID[fmt.Sprint(e["id"])], e)
	}
	for _, id := range order {
		es := byID[id]
		if len(es) != 1 {
			t.Errorf("%s: %d audit entries, want 1: %v", id, len(es), es)
			continue
		}
		e := es[0]
		if e["result"] != cases[id].code || e["source"] != "json" || e["device"] != cases[id].device ||
			e["topic"] != "fieldgate/gw/"+cases[id].device+"/set" || e["time"] == nil {
			t.Errorf("%s: audit entry %v", id, e)
		}
	}
	if e := byID["ok"][0]; e["tag"] != "setpoint" || e["old"] != 0.0 || e["new"] != 12.5 || e["duration_ms"] == nil {
		t.Errorf("audit entry of the accepted write: %v", e)
	}
	if e := byID["second"][0]; e["old"] != 12.0 || e["new"] != 13.0 {
		t.Errorf("audit entry of the second speed write: %v (want old 12, new 13)", e)
	}
	if e := byID["above-max"][0]; e["reason"] != "42.5 is above max 40" {
		t.Errorf("audit entry of the refused write: %v", e)
	}
	// Pings published before the subscription was in place never reach
	// the gateway, so only some of them are audited; every command is.
	audited := 0
	for id := range byID {
		if strings.HasPrefix(id, "ping-") {
			continue
		}
		audited++
	}
	if audited != len(order) || len(byID)-audited > pings || len(byID)-audited < 1 {
		t.Errorf("%d ids in the audit log: %d commands (want %d) and %d pings (want 1..%d)",
			len(byID), audited, len(order), len(byID)-audited, pings)
	}

	var m api.Metrics
	g.Metrics(&m)
	var sb strings.Builder
	if _, err := m.WriteTo(&sb); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`fieldgate_writes_total{device="press-1",result="ok"} 5`,
		`fieldgate_writes_total{device="press-1",result="out_of_range"} 4`,
		`fieldgate_writes_total{device="stubborn",result="verify_failed"} 1`,
		`fieldgate_writes_total{device="",result="unknown_device"} 1`,
		`fieldgate_audit_write_errors_total 0`,
	} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, err := range api.LintNames(&m) {
		t.Error(err)
	}
}

// TestBufferDropsAreAudited fills a small buffer past its bound and checks
// that the drops appear in the audit log as buffer_drop entries, per
// device, and that their counts add up to what the buffer dropped.
func TestBufferDropsAreAudited(t *testing.T) {
	dir := t.TempDir()
	q, err := buffer.Open(filepath.Join(dir, "buffer.db"), buffer.Options{MaxBytes: 4000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	al, err := audit.Open(filepath.Join(dir, "audit.log"), audit.Options{MaxBytes: audit.MinBytes, Files: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{queue: q, audit: al, log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.auditDrops(ctx, 20*time.Millisecond); close(done) }()
	for i := range 300 {
		b := telemetry.Batch{Device: []string{"a", "b"}[i%2], Points: []telemetry.Point{
			{Tag: "v", Value: telemetry.Int(int64(i)), Time: time.Now()}, {Tag: "w", Value: telemetry.Int(1), Time: time.Now()}}}
		if err := q.Append(context.Background(), &b); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(30 * time.Millisecond) // let a check or two pass
		}
	}
	cancel()
	<-done
	_ = al.Close()
	sum := map[string]float64{}
	for _, e := range readAudit(t, filepath.Join(dir, "audit.log")) {
		if e["event"] != "buffer_drop" || e["points"] == nil || e["records"] == nil {
			t.Errorf("entry %v", e)
			continue
		}
		sum[e["device"].(string)] += e["points"].(float64)
	}
	drops := q.DroppedByDevice()
	if len(drops) != 2 {
		t.Fatalf("buffer dropped for %v, want both devices", drops)
	}
	for dev, d := range drops {
		if sum[dev] != float64(d.Points) {
			t.Errorf("device %s: audit says %v points dropped, buffer %d", dev, sum[dev], d.Points)
		}
	}
}
