package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/sim/opcuasim"
	"github.com/fieldgate/fieldgate/uplink/sparkplug/sproto"
)

// The tests in this file send writes through a whole gateway (a real
// buffer and audit log in a temporary folder, the embedded broker, the
// Modbus or OPC UA simulator on 127.0.0.1) by each payload format's own
// command: JSON set commands to an OPC UA device, Sparkplug DCMD and
// ThingsBoard RPC to a Modbus device, and retained commands of every
// format, which are refused.

// mqttPeer is a cloud-side MQTT client (a platform, a Sparkplug host, a
// ThingsBoard server) that keeps every message on its subscriptions.
type mqttPeer struct {
	c    paho.Client
	mu   sync.Mutex
	msgs []peerMsg
}

type peerMsg struct {
	topic    string
	payload  []byte
	retained bool
}

// newPeer connects a client with id to url and subscribes filters (QoS 1).
func newPeer(t *testing.T, url, id string, filters ...string) *mqttPeer {
	t.Helper()
	p := &mqttPeer{}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false).SetCleanSession(true)
	p.c = paho.NewClient(o)
	if tok := p.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() { p.c.Disconnect(0) })
	for _, f := range filters {
		tok := p.c.Subscribe(f, 1, func(_ paho.Client, m paho.Message) {
			p.mu.Lock()
			p.msgs = append(p.msgs, peerMsg{m.Topic(), bytes.Clone(m.Payload()), m.Retained()})
			p.mu.Unlock()
		})
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: subscribe %s: %v", id, f, tok.Error())
		}
	}
	return p
}

func (p *mqttPeer) publish(t *testing.T, topic string, retained bool, payload []byte) {
	t.Helper()
	if tok := p.c.Publish(topic, 1, retained, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// on returns the messages received on topic so far, oldest first.
func (p *mqttPeer) on(topic string) []peerMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []peerMsg
	for _, m := range p.msgs {
		if m.topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// runGateway parses cfg, runs the gateway and returns a stop function
// (also called at the end of the test) that cancels Run and waits for it.
func runGateway(t *testing.T, cfg string) func() {
	t.Helper()
	c, err := config.Parse("gw.yaml", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(c, Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return peers.Run(t, 30*time.Second, g.Run)
}

// startBroker starts the embedded broker for one test.
func startBroker(t *testing.T) *broker.Broker {
	t.Helper()
	brk, err := broker.Start("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = brk.Close() })
	return brk
}

// startModbus starts the Modbus simulator for one test.
func startModbus(t *testing.T) *sim.ModbusServer {
	t.Helper()
	dev := sim.NewModbus(sim.ModbusOptions{})
	if err := dev.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	return dev
}

// auditWrites returns the write entries of the audit log at path that
// match keep; a line still being written is left for the next call.
func auditWrites(path string, keep func(e map[string]any) bool) ([]map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("audit line %q: %v", sc.Text(), err)
		}
		if e["event"] == "write" && keep(e) {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// waitAudit waits until the audit log holds n write entries that match
// keep, and returns them.
func waitAudit(t *testing.T, path, what string, n int, keep func(e map[string]any) bool) []map[string]any {
	t.Helper()
	var es []map[string]any
	checkFor(t, 20*time.Second, what, func() error {
		var err error
		if es, err = auditWrites(path, keep); err != nil {
			return err
		}
		if len(es) < n {
			return fmt.Errorf("%d audit entries, want %d: %v", len(es), n, es)
		}
		return nil
	})
	return es
}

// TestOPCUAWritesThroughJSONCommands writes to an OPC UA device (the
// simulator) with JSON set commands through the whole gateway: a writable
// tag's variable changes on the server, the result is ok, the audit entry
// has the old and new value, and the next reading carries the new value;
// a tag that is not writable, a variable the server keeps read-only, a
// value outside min/max and a fraction for an Int16 variable are answered
// with their code, audited, and leave the variable as it was.
func TestOPCUAWritesThroughJSONCommands(t *testing.T) {
	srv := opcuasim.New(opcuasim.Options{ReadOnly: []string{"Mode"}})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	brk := startBroker(t)
	var mu sync.Mutex
	temps := map[string]bool{} // temp readings that arrived, as JSON
	err := brk.Subscribe("fieldgate/gw/cnc", 1, func(_ string, payload []byte, _ bool) {
		var m struct {
			Points []struct {
				Tag     string          `json:"tag"`
				Value   json.RawMessage `json:"value"`
				Quality string          `json:"quality"`
			} `json:"points"`
		}
		if json.Unmarshal(payload, &m) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, p := range m.Points {
			if p.Tag == "temp" && p.Quality == "" {
				temps[string(p.Value)] = true
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := func(v string) error {
		mu.Lock()
		defer mu.Unlock()
		if !temps[v] {
			return fmt.Errorf("temp %s not among %v", v, temps)
		}
		return nil
	}

	dir := t.TempDir()
	stop := runGateway(t, fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
mqtt: { url: "%s" }
devices:
  - name: cnc
    opcua: { url: "%s", timeout: 2s }
    poll: 100ms
    tags:
      - { name: temp, node: "%s", writable: true, min: 0, max: 100 }
      - { name: level, node: "%s", writable: true }
      - { name: counter, node: "%s" }
      - { name: mode, node: "%s", writable: true }
`, dir, brk.URL(), srv.URL(), srv.NodeID("Temperature"), srv.NodeID("Level"), srv.NodeID("Counter"), srv.NodeID("Mode")))

	// The driver writes only while connected: wait for a reading, then
	// for the command subscription.
	checkFor(t, 20*time.Second, "the first reading", func() error { return seen("21.5") })
	p := newPlatform(t, brk.URL())
	pings := 0
	checkFor(t, 15*time.Second, "the gateway answers set commands", func() error {
		pings++
		p.send(t, "cnc", fmt.Sprintf(`{"id":"ping-%d","tag":"nope","value":1}`, pings))
		for i := 1; i <= pings; i++ {
			if r, _ := p.result(fmt.Sprint("ping-", i)); r != nil {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
		return fmt.Errorf("no answer to %d pings", pings)
	})

	type want struct{ payload, code, reason string }
	cases := map[string]want{
		"temp":         {`{"id":"temp","tag":"temp","value":30.5}`, "ok", ""},
		"level":        {`{"id":"level","tag":"level","value":-7}`, "ok", ""},
		"above-max":    {`{"id":"above-max","tag":"temp","value":150}`, "out_of_range", "150 is above max 100"},
		"fraction":     {`{"id":"fraction","tag":"level","value":2.5}`, "wrong_type", "Int16"},
		"not-writable": {`{"id":"not-writable","tag":"counter","value":5}`, "not_writable", "tag counter of cnc is not writable"},
		"read-only":    {`{"id":"read-only","tag":"mode","value":"manual"}`, "device_error", "BadUserAccessDenied"},
	}
	order := []string{"temp", "level", "above-max", "fraction", "not-writable", "read-only"}
	for _, id := range order {
		p.send(t, "cnc", cases[id].payload)
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
		code, _ := r["code"].(string)
		reason, _ := r["reason"].(string)
		ok := w.code == "ok"
		if n != 1 || r["ok"] != ok || (!ok && code != w.code) || !strings.Contains(reason, w.reason) || r["device"] != "cnc" {
			t.Errorf("%s: %d results, first %v; want code %s with reason containing %q", id, n, r, w.code, w.reason)
		}
	}

	// The server: what was accepted is there, nothing else.
	for name, want := range map[string]any{"Temperature": 30.5, "Level": int16(-7), "Counter": uint32(0), "Mode": "auto"} {
		dv := srv.Value(name)
		if dv == nil || dv.Value == nil || dv.Value.Value() != want {
			t.Errorf("variable %s = %v, want %v (%T)", name, dv, want, want)
		}
	}
	checkFor(t, 10*time.Second, "the written value in the next reading", func() error { return seen("30.5") })

	stop()
	es, err := auditWrites(filepath.Join(dir, "audit.log"), func(e map[string]any) bool { return !strings.HasPrefix(fmt.Sprint(e["id"]), "ping-") })
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string][]map[string]any{}
	for _, e := range es {
		byID[fmt.Sprint(e["id"])] = append(byID[fmt.Sprint(e["id"])], e)
	}
	if len(es) != len(order) {
		t.Errorf("%d audit entries, want %d: %v", len(es), len(order), es)
	}
	for _, id := range order {
		if len(byID[id]) != 1 {
			t.Errorf("%s: audit entries %v, want one", id, byID[id])
			continue
		}
		e := byID[id][0]
		if e["result"] != cases[id].code || e["source"] != "json" || e["device"] != "cnc" || e["topic"] != "fieldgate/gw/cnc/set" {
			t.Errorf("%s: audit entry %v", id, e)
		}
	}
	check := func(id string, old, new any) {
		t.Helper()
		if es := byID[id]; len(es) == 1 && (es[0]["old"] != old || es[0]["new"] != new) {
			t.Errorf("%s: audit entry %v, want old %v and new %v", id, es[0], old, new)
		}
	}
	check("temp", 21.5, 30.5)
	check("level", -3.0, -7.0)
	check("read-only", "auto", "manual") // read before the write was refused
	check("not-writable", nil, 5.0)      // refused before reading
	check("above-max", nil, 150.0)       // refused before reading
	check("fraction", -7.0, 2.5)         // the server's type is known after reading
}

// sparkplugMetrics decodes a Sparkplug payload's metrics.
func sparkplugMetrics(t *testing.T, b []byte) []*sproto.Payload_Metric {
	t.Helper()
	var pl sproto.Payload
	if err := proto.Unmarshal(b, &pl); err != nil {
		t.Fatalf("Sparkplug payload: %v", err)
	}
	return pl.GetMetrics()
}

// dcmd encodes a DCMD payload of ms.
func dcmd(t *testing.T, ms ...*sproto.Payload_Metric) []byte {
	t.Helper()
	b, err := proto.Marshal(&sproto.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: ms})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pressConfig is a gateway with one Modbus device, press-1, whose
// setpoint (float32, max 40) and speed (uint16) are writable and mode is
// not; mqtt is added to the mqtt section (the format and its settings).
func pressConfig(dir, brokerURL, mqtt, dev string) string {
	return fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
mqtt: { url: "%s"%s }
devices:
  - name: press-1
    modbus: { url: "tcp://%s", timeout: 1s }
    poll: 100ms
    tags:
      - { name: setpoint, address: 40001, type: float32, writable: true, min: 0, max: 40 }
      - { name: speed, address: 40003, type: uint16, writable: true }
      - { name: mode, address: 40004, type: uint16 }
`, dir, brokerURL, mqtt, dev)
}

// Formats of pressConfig.
const (
	mqttSparkplug   = ", format: sparkplugb, sparkplug: { group: plant }"
	mqttThingsBoard = ", format: thingsboard"
)

// TestSparkplugDCMDWritesThroughGateway sends DCMDs, as a Sparkplug host
// would, to a gateway with mqtt.format sparkplugb: a metric by name and one
// by its DBIRTH alias change the simulator's registers and leave audit
// entries with source sparkplug; a value above max and a tag that is not
// writable are refused, audited, and leave the registers as they were; the
// next DDATA carries the written value.
func TestSparkplugDCMDWritesThroughGateway(t *testing.T) {
	dev := startModbus(t)
	dev.SetHolding(3, 7) // mode
	brk := startBroker(t)
	host := newPeer(t, brk.URL(), "scada", "spBv1.0/plant/#")
	dir := t.TempDir()
	stop := runGateway(t, pressConfig(dir, brk.URL(), mqttSparkplug, dev.Addr()))

	// The DBIRTH comes after the command subscriptions: its aliases name
	// the tags in DDATA.
	alias := map[string]uint64{}
	checkFor(t, 20*time.Second, "the DBIRTH of press-1", func() error {
		births := host.on("spBv1.0/plant/DBIRTH/gw/press-1")
		if len(births) == 0 {
			return fmt.Errorf("no DBIRTH")
		}
		for _, m := range sparkplugMetrics(t, births[0].payload) {
			alias[m.GetName()] = m.GetAlias()
		}
		return nil
	})
	if alias["setpoint"] == 0 || alias["speed"] == 0 {
		t.Fatalf("DBIRTH aliases %v lack setpoint or speed", alias)
	}
	topic := "spBv1.0/plant/DCMD/gw/press-1"
	host.publish(t, topic, false, dcmd(t,
		&sproto.Payload_Metric{Name: proto.String("setpoint"), Datatype: proto.Uint32(uint32(sproto.DataType_Float)),
			Value: &sproto.Payload_Metric_FloatValue{FloatValue: 12.5}},
		&sproto.Payload_Metric{Alias: proto.Uint64(alias["speed"]), Value: &sproto.Payload_Metric_LongValue{LongValue: 1500}}))
	host.publish(t, topic, false, dcmd(t,
		&sproto.Payload_Metric{Name: proto.String("setpoint"), Datatype: proto.Uint32(uint32(sproto.DataType_Float)),
			Value: &sproto.Payload_Metric_FloatValue{FloatValue: 42.5}},
		&sproto.Payload_Metric{Name: proto.String("mode"), Datatype: proto.Uint32(uint32(sproto.DataType_UInt16)),
			Value: &sproto.Payload_Metric_IntValue{IntValue: 5}}))

	auditPath := filepath.Join(dir, "audit.log")
	es := waitAudit(t, auditPath, "four audited DCMD metrics", 4, func(map[string]any) bool { return true })
	want := []struct {
		tag    string
		new    float64
		result string
		reason string
	}{
		{"setpoint", 12.5, "ok", ""},
		{"speed", 1500, "ok", ""},
		{"setpoint", 42.5, "out_of_range", "42.5 is above max 40"},
		{"mode", 5, "not_writable", "tag mode of press-1 is not writable"},
	}
	if len(es) != len(want) {
		t.Errorf("%d audit entries, want %d: %v", len(es), len(want), es)
	}
	for i, w := range want[:min(len(want), len(es))] {
		e := es[i]
		reason, _ := e["reason"].(string)
		if e["source"] != "sparkplug" || e["topic"] != topic || e["device"] != "press-1" || e["tag"] != w.tag ||
			e["new"] != w.new || e["result"] != w.result || !strings.HasPrefix(reason, w.reason) || (reason == "") != (w.reason == "") ||
			e["id"] != nil {
			t.Errorf("audit entry %d: %v, want %s = %v answered %s %q", i, e, w.tag, w.new, w.result, w.reason)
		}
	}
	if e := es[0]; e["old"] != 0.0 {
		t.Errorf("audit entry of the setpoint write: old %v, want 0", e["old"])
	}
	if got := float32At(dev, 0); got != 12.5 {
		t.Errorf("setpoint register holds %v, want 12.5 (only the accepted write)", got)
	}
	if got := dev.Holding(2, 2); got[0] != 1500 || got[1] != 7 {
		t.Errorf("speed, mode registers = %d, %d; want 1500, 7 (unchanged)", got[0], got[1])
	}

	// The next DDATA carries the new value, by alias.
	checkFor(t, 10*time.Second, "a DDATA with setpoint 12.5 and speed 1500", func() error {
		for _, m := range host.on("spBv1.0/plant/DDATA/gw/press-1") {
			var sp, sd bool
			for _, x := range sparkplugMetrics(t, m.payload) {
				switch x.GetAlias() {
				case alias["setpoint"]:
					sp = x.GetFloatValue() == 12.5
				case alias["speed"]:
					sd = x.GetLongValue() == 1500 || x.GetIntValue() == 1500
				}
			}
			if sp && sd {
				return nil
			}
		}
		return fmt.Errorf("none of %d DDATA", len(host.on("spBv1.0/plant/DDATA/gw/press-1")))
	})
	stop()
}

// rpcReplies returns the gateway's replies on v1/gateway/rpc by id (as
// JSON text); the server's own requests on that topic are left out.
func rpcReplies(t *testing.T, p *mqttPeer) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	for _, m := range p.on("v1/gateway/rpc") {
		var r struct {
			Device string          `json:"device"`
			ID     json.RawMessage `json:"id"`
			Data   map[string]any  `json:"data"`
		}
		if err := json.Unmarshal(m.payload, &r); err != nil {
			t.Errorf("message on v1/gateway/rpc is not JSON: %q", m.payload)
			continue
		}
		if r.ID == nil { // a request
			continue
		}
		r.Data["device"], r.Data["retained"] = r.Device, m.retained
		out[string(r.ID)] = append(out[string(r.ID)], r.Data)
	}
	return out
}

// TestThingsBoardRPCWritesThroughGateway sends server-side RPCs, as
// ThingsBoard forwards them, to a gateway with mqtt.format thingsboard:
// set and set_<tag> change the simulator's registers and are answered
// success on v1/gateway/rpc; a value above max and a tag that is not
// writable are answered with their code and leave the registers as they
// were; every request has one audit entry with source thingsboard and the
// RPC id.
func TestThingsBoardRPCWritesThroughGateway(t *testing.T) {
	dev := startModbus(t)
	dev.SetHolding(3, 7) // mode
	brk := startBroker(t)
	tb := newPeer(t, brk.URL(), "thingsboard", "v1/gateway/rpc")
	dir := t.TempDir()
	stop := runGateway(t, pressConfig(dir, brk.URL(), mqttThingsBoard, dev.Addr()))

	rpc := func(id, method, params string) {
		tb.publish(t, "v1/gateway/rpc", false,
			[]byte(fmt.Sprintf(`{"device":"press-1","data":{"id":%s,"method":%q,"params":%s}}`, id, method, params)))
	}
	// Requests sent before the gateway has subscribed are lost: ping
	// until one is answered.
	pings := 0
	checkFor(t, 15*time.Second, "the gateway answers RPCs", func() error {
		pings++
		rpc(fmt.Sprint(1000+pings), "set_nope", "1")
		if len(rpcReplies(t, tb)) > 0 {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
		return fmt.Errorf("no answer to %d pings", pings)
	})

	type want struct {
		method, params, code, reason string
	}
	cases := map[string]want{
		"1":       {"set", `{"tag":"setpoint","value":12.5}`, "ok", ""},
		"2":       {"set_speed", `1500`, "ok", ""},
		`"three"`: {"set_setpoint", `{"value":42.5}`, "out_of_range", "42.5 is above max 40"},
		"4":       {"set", `"{\"tag\":\"mode\",\"value\":5}"`, "not_writable", "tag mode of press-1 is not writable"},
		"5":       {"reset", `{}`, "bad_request", `unknown method "reset"`},
	}
	order := []string{"1", "2", `"three"`, "4", "5"}
	for _, id := range order {
		rpc(id, cases[id].method, cases[id].params)
	}
	var replies map[string][]map[string]any
	checkFor(t, 20*time.Second, "a reply to every RPC", func() error {
		replies = rpcReplies(t, tb)
		for _, id := range order {
			if len(replies[id]) == 0 {
				return fmt.Errorf("no reply to %s", id)
			}
		}
		return nil
	})
	for _, id := range order {
		w, rs := cases[id], replies[id]
		r := rs[0]
		reason, _ := r["error"].(string)
		ok := w.code == "ok"
		if len(rs) != 1 || r["success"] != ok || (!ok && r["code"] != w.code) || !strings.Contains(reason, w.reason) ||
			r["device"] != "press-1" || r["retained"] != false {
			t.Errorf("RPC %s: replies %v; want code %s with error containing %q", id, rs, w.code, w.reason)
		}
	}
	if got := float32At(dev, 0); got != 12.5 {
		t.Errorf("setpoint register holds %v, want 12.5 (only the accepted write)", got)
	}
	if got := dev.Holding(2, 2); got[0] != 1500 || got[1] != 7 {
		t.Errorf("speed, mode registers = %d, %d; want 1500, 7 (unchanged)", got[0], got[1])
	}

	stop()
	es, err := auditWrites(filepath.Join(dir, "audit.log"), func(e map[string]any) bool { return e["tag"] != "nope" })
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string][]map[string]any{}
	for _, e := range es {
		byID[fmt.Sprint(e["id"])] = append(byID[fmt.Sprint(e["id"])], e)
	}
	if len(es) != len(order) {
		t.Errorf("%d audit entries, want %d: %v", len(es), len(order), es)
	}
	for _, id := range order {
		if len(byID[id]) != 1 {
			t.Errorf("RPC %s: audit entries %v, want one", id, byID[id])
			continue
		}
		e := byID[id][0]
		if e["result"] != cases[id].code || e["source"] != "thingsboard" || e["topic"] != "v1/gateway/rpc" || e["device"] != "press-1" {
			t.Errorf("RPC %s: audit entry %v", id, e)
		}
	}
	if es := byID["1"]; len(es) == 1 && (es[0]["tag"] != "setpoint" || es[0]["old"] != 0.0 || es[0]["new"] != 12.5) {
		t.Errorf("audit entry of RPC 1: %v", es[0])
	}
}

// TestRetainedCommandsAreRefused publishes, for each format, a retained
// write command before the gateway connects, so that the broker delivers
// it at subscription, as it would again at every reconnect. The gateway
// records it as bad_request (with a result or RPC reply where the format
// has one) and does not write it; a command published without retain
// afterwards is carried out. For Sparkplug, the primary host's retained
// STATE is still obeyed (NBIRTH follows it).
func TestRetainedCommandsAreRefused(t *testing.T) {
	type format struct {
		mqtt    string // for pressConfig
		filters []string
		command func(t *testing.T, speed uint16) (topic string, payload []byte)
		setup   func(t *testing.T, host *mqttPeer) // before the gateway starts
		answer  func(t *testing.T, host *mqttPeer) error
		source  string
		topic   string
		reason  string
	}
	formats := map[string]format{
		"json": {
			mqtt:    "",
			filters: []string{"fieldgate/gw/+/set/result"},
			command: func(t *testing.T, speed uint16) (string, []byte) {
				return "fieldgate/gw/press-1/set", []byte(fmt.Sprintf(`{"id":"s%d","tag":"speed","value":%d}`, speed, speed))
			},
			answer: func(t *testing.T, host *mqttPeer) error {
				for _, m := range host.on("fieldgate/gw/press-1/set/result") {
					if strings.Contains(string(m.payload), `"id":"s111"`) {
						if !strings.Contains(string(m.payload), `"code":"bad_request"`) || m.retained {
							t.Errorf("result of the retained command: %s (retained %v)", m.payload, m.retained)
						}
						return nil
					}
				}
				return fmt.Errorf("no result for the retained command")
			},
			source: "json", topic: "fieldgate/gw/press-1/set", reason: "retained set commands are not carried out",
		},
		"sparkplug": {
			mqtt:    ", format: sparkplugb, sparkplug: { group: plant, primary_host: scada }",
			filters: []string{"spBv1.0/plant/#"},
			command: func(t *testing.T, speed uint16) (string, []byte) {
				return "spBv1.0/plant/DCMD/gw/press-1", dcmd(t, &sproto.Payload_Metric{Name: proto.String("speed"),
					Datatype: proto.Uint32(uint32(sproto.DataType_UInt16)), Value: &sproto.Payload_Metric_IntValue{IntValue: uint32(speed)}})
			},
			setup: func(t *testing.T, host *mqttPeer) {
				// The primary host's STATE is retained, as Sparkplug 3.0
				// requires; the gateway must still see it.
				host.publish(t, "spBv1.0/STATE/scada", true, []byte(`{"online":true,"timestamp":1}`))
			},
			answer: func(t *testing.T, host *mqttPeer) error {
				if len(host.on("spBv1.0/plant/NBIRTH/gw")) == 0 {
					return fmt.Errorf("no NBIRTH after the retained STATE online")
				}
				return nil
			},
			source: "sparkplug", topic: "spBv1.0/plant/DCMD/gw/press-1", reason: "retained DCMD is not carried out",
		},
		"thingsboard": {
			mqtt:    mqttThingsBoard,
			filters: []string{"v1/gateway/rpc"},
			command: func(t *testing.T, speed uint16) (string, []byte) {
				return "v1/gateway/rpc", []byte(fmt.Sprintf(`{"device":"press-1","data":{"id":%d,"method":"set_speed","params":%d}}`, speed, speed))
			},
			answer: func(t *testing.T, host *mqttPeer) error {
				rs := rpcReplies(t, host)["111"]
				if len(rs) == 0 {
					return fmt.Errorf("no reply to the retained RPC")
				}
				if rs[0]["success"] != false || rs[0]["code"] != "bad_request" || rs[0]["retained"] != false {
					t.Errorf("reply to the retained RPC: %v", rs)
				}
				return nil
			},
			source: "thingsboard", topic: "v1/gateway/rpc", reason: "retained RPC requests are not carried out",
		},
	}
	for name, f := range formats {
		t.Run(name, func(t *testing.T) {
			dev := startModbus(t)
			brk := startBroker(t)
			host := newPeer(t, brk.URL(), "host-"+name, f.filters...)
			if f.setup != nil {
				f.setup(t, host)
			}
			topic, payload := f.command(t, 111)
			host.publish(t, topic, true, payload)
			dir := t.TempDir()
			stop := runGateway(t, pressConfig(dir, brk.URL(), f.mqtt, dev.Addr()))
			auditPath := filepath.Join(dir, "audit.log")

			es := waitAudit(t, auditPath, "the retained command audited", 1, func(map[string]any) bool { return true })
			e := es[0]
			reason, _ := e["reason"].(string)
			if e["source"] != f.source || e["topic"] != f.topic || e["device"] != "press-1" || e["tag"] != "speed" ||
				e["new"] != 111.0 || e["result"] != "bad_request" || !strings.HasPrefix(reason, f.reason) || e["old"] != nil {
				t.Errorf("audit entry of the retained command: %v", e)
			}
			checkFor(t, 10*time.Second, "the answer to the retained command", func() error { return f.answer(t, host) })

			if got := dev.Holding(2, 1)[0]; got != 0 {
				t.Errorf("speed register = %d after the retained command, want 0", got)
			}

			// The retained command came at subscription: the gateway is
			// subscribed, and a command without retain is carried out.
			topic, payload = f.command(t, 222)
			host.publish(t, topic, false, payload)
			checkFor(t, 15*time.Second, "the command without retain written", func() error {
				if got := dev.Holding(2, 1)[0]; got != 222 {
					return fmt.Errorf("speed register = %d, want 222", got)
				}
				return nil
			})
			stop()
			es, err := auditWrites(auditPath, func(map[string]any) bool { return true })
			if err != nil {
				t.Fatal(err)
			}
			refused := 0
			for _, e := range es {
				switch {
				case e["new"] == 111.0 && e["result"] == "bad_request":
					refused++
				case e["new"] == 111.0 || e["new"] == 222.0 && e["result"] != "ok":
					t.Errorf("audit entry %v", e)
				}
			}
			if refused != 1 {
				t.Errorf("the retained command was audited %d times, want once: %v", refused, es)
			}
		})
	}
}
