package thingsboard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/buffer"
	ibroker "github.com/fieldgate/fieldgate/internal/broker"
	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
)

// TestParseRPC: the method scheme (set, set_<tag>), JSON values, and what
// is answered as bad_request or not answered at all.
func TestParseRPC(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		ok     bool
		tag    string
		value  telemetry.Value
		reason string // substring; "" for a write
	}{
		{"set int", `{"device":"press-1","data":{"id":42,"method":"set","params":{"tag":"setpoint","value":42}}}`, true, "setpoint", telemetry.Int(42), ""},
		{"set float", `{"device":"press-1","data":{"id":1,"method":"set","params":{"tag":"setpoint","value":42.5}}}`, true, "setpoint", telemetry.Float(42.5), ""},
		{"set exponent is a float", `{"device":"d","data":{"id":1,"method":"set","params":{"tag":"x","value":1e3}}}`, true, "x", telemetry.Float(1000), ""},
		{"set big uint", `{"device":"d","data":{"id":1,"method":"set","params":{"tag":"x","value":18446744073709551615}}}`, true, "x", telemetry.Uint(18446744073709551615), ""},
		{"set params as a string", `{"device":"d","data":{"id":1,"method":"set","params":"{\"tag\":\"run\",\"value\":true}"}}`, true, "run", telemetry.Bool(true), ""},
		{"set string", `{"device":"d","data":{"id":"a1","method":"set","params":{"tag":"recipe","value":"A7"}}}`, true, "recipe", telemetry.String("A7"), ""},
		{"set without tag", `{"device":"d","data":{"id":1,"method":"set","params":{"value":1}}}`, true, "", telemetry.Value{}, "needs params"},
		{"set null value", `{"device":"d","data":{"id":1,"method":"set","params":{"tag":"x","value":null}}}`, true, "x", telemetry.Value{}, "null is not a value"},
		{"set object value", `{"device":"d","data":{"id":1,"method":"set","params":{"tag":"x","value":{}}}}`, true, "x", telemetry.Value{}, "not an object"},
		{"widget set_<tag> bare value", `{"device":"press-1","data":{"id":7,"method":"set_speed","params":1500}}`, true, "speed", telemetry.Int(1500), ""},
		{"widget set_<tag> switch", `{"device":"press-1","data":{"id":8,"method":"set_running","params":false}}`, true, "running", telemetry.Bool(false), ""},
		{"set_<tag> value object", `{"device":"press-1","data":{"id":9,"method":"set_speed","params":{"value":-3}}}`, true, "speed", telemetry.Int(-3), ""},
		{"set_<tag> no params", `{"device":"press-1","data":{"id":9,"method":"set_speed"}}`, true, "speed", telemetry.Value{}, "value: missing"},
		{"unknown method", `{"device":"press-1","data":{"id":3,"method":"getValue","params":{}}}`, true, "", telemetry.Value{}, "unknown method"},
		{"no id", `{"device":"press-1","data":{"method":"set","params":{}}}`, false, "", telemetry.Value{}, ""},
		{"no device", `{"data":{"id":1,"method":"set"}}`, false, "", telemetry.Value{}, ""},
		{"a reply", `{"device":"press-1","id":42,"data":{"success":true}}`, false, "", telemetry.Value{}, ""},
		{"not JSON", `set speed 5`, false, "", telemetry.Value{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := parseRPC([]byte(tc.in))
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if r.tag != tc.tag {
				t.Errorf("tag %q, want %q", r.tag, tc.tag)
			}
			if tc.reason == "" {
				if r.reason != "" || r.value != tc.value {
					t.Errorf("value %v (reason %q), want %v", r.value, r.reason, tc.value)
				}
			} else if !strings.Contains(r.reason, tc.reason) {
				t.Errorf("reason %q, want it to say %q", r.reason, tc.reason)
			}
		})
	}
}

// FuzzRPC: parseRPC never panics; whatever it accepts can be answered
// with a reply that is valid JSON echoing the device and id.
func FuzzRPC(f *testing.F) {
	for _, s := range []string{
		`{"device":"press-1","data":{"id":42,"method":"set","params":{"tag":"setpoint","value":42}}}`,
		`{"device":"press-1","data":{"id":7,"method":"set_speed","params":1500}}`,
		`{"device":"d","data":{"id":"x","method":"set","params":"{\"tag\":\"run\",\"value\":true}"}}`,
		`{"device":"press-1","id":42,"data":{"success":true}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := parseRPC(b)
		if !ok {
			return
		}
		if r.reason == "" && (r.tag == "" || r.value.IsNone()) {
			t.Fatalf("write without a reason: tag %q value %v", r.tag, r.value)
		}
		rep := appendReply(nil, r.device, r.id, uplink.WriteResult{Code: uplink.RejectBadRequest, Reason: r.reason})
		var got struct {
			Device string
			ID     json.RawMessage
			Data   struct{ Success bool }
		}
		if err := json.Unmarshal(rep, &got); err != nil {
			t.Fatalf("reply %s: %v", rep, err)
		}
		if got.Device != r.device || string(got.ID) != string(r.id) {
			t.Fatalf("reply %s does not echo device %q id %s", rep, r.device, r.id)
		}
	})
}

// recWriter is an uplink.Writer that records requests and answers each
// with the result its function chooses.
type recWriter struct {
	mu       sync.Mutex
	reqs     []uplink.WriteRequest
	rejected []string // "tag code" of each Reject
	result   func(uplink.WriteRequest) uplink.WriteResult
}

// Reject records a request rejected before Write, as the audit log does.
func (w *recWriter) Reject(r uplink.WriteRequest, res uplink.WriteResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rejected = append(w.rejected, r.Tag+" "+res.Code)
}

func (w *recWriter) rejects() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.rejected...)
}

func (w *recWriter) Write(_ context.Context, r uplink.WriteRequest) uplink.WriteResult {
	w.mu.Lock()
	w.reqs = append(w.reqs, r)
	w.mu.Unlock()
	return w.result(r)
}

func (w *recWriter) requests() []uplink.WriteRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]uplink.WriteRequest(nil), w.reqs...)
}

// checkFor calls f every 10 ms until it returns nil or timeout passes.
func checkFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// platform is a plain MQTT client standing in for ThingsBoard: it records
// what arrives on v1/gateway/# and can send RPC requests.
type platform struct {
	c    paho.Client
	mu   sync.Mutex
	msgs []uplink.Message
}

func (p *platform) snapshot() []uplink.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uplink.Message(nil), p.msgs...)
}

// TestGatewayAPIThroughBroker runs the whole uplink (a bbolt buffer, the
// ThingsBoard format, the embedded broker) and checks, as a platform
// subscribed to v1/gateway/# sees them, the connect, attributes and
// telemetry messages against the documented shapes and an RPC round trip:
// a request on v1/gateway/rpc becomes a WriteRequest, and its result comes
// back on v1/gateway/rpc with the request's device and id.
func TestGatewayAPIThroughBroker(t *testing.T) {
	br, err := ibroker.Start("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = br.Close() })
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })

	tb := &platform{}
	o := paho.NewClientOptions().AddBroker(br.URL()).SetClientID("thingsboard").SetAutoReconnect(false)
	tb.c = paho.NewClient(o)
	if tok := tb.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("platform connect: %v", tok.Error())
	}
	t.Cleanup(func() { tb.c.Disconnect(0) })
	if tok := tb.c.Subscribe("v1/gateway/#", 1, func(_ paho.Client, m paho.Message) {
		tb.mu.Lock()
		tb.msgs = append(tb.msgs, uplink.Message{Topic: m.Topic(), QoS: m.Qos(), Payload: append([]byte(nil), m.Payload()...)})
		tb.mu.Unlock()
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("platform subscribe: %v", tok.Error())
	}

	log := slog.New(slog.NewTextHandler(tLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := &recWriter{result: func(r uplink.WriteRequest) uplink.WriteResult {
		if r.Tag == "oil_temp" {
			return uplink.WriteResult{Code: uplink.RejectNotWritable, Reason: `tag "oil_temp" is not writable`}
		}
		return uplink.WriteResult{Code: uplink.WriteOK}
	}}
	writes := uplink.NewWrites(w, 0, log)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = writes.Run(ctx) }()
	f := New("line3-gw", 1, writes, log)
	u, err := uplink.New(uplink.Config{
		URL: br.URL(), Gateway: "line3-gw", ConnectTimeout: 2 * time.Second, PublishTimeout: 2 * time.Second,
		Window: 16, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 100 * time.Millisecond,
	}, q, f, log)
	if err != nil {
		t.Fatal(err)
	}
	go func() { defer wg.Done(); _ = u.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	checkFor(t, 10*time.Second, func() error {
		if !u.Stats().Connected {
			return fmt.Errorf("not connected")
		}
		return nil
	})
	if err := q.Append(ctx, &telemetry.Batch{Device: "press-1", Points: []telemetry.Point{
		{Tag: "oil_temp", Time: t0, Value: telemetry.Float(41.5), Unit: "degC"},
		{Tag: "running", Time: t0, Value: telemetry.Bool(true)},
		{Tag: "pressure", Time: t0, Quality: telemetry.Bad | telemetry.ReasonTimeout, Unit: "bar"},
	}}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, func() error {
		if recs, _ := q.Depth(); recs != 0 || len(tb.snapshot()) < 3 {
			return fmt.Errorf("%d buffered, %d messages", recs, len(tb.snapshot()))
		}
		return nil
	})
	want := []decoded{
		{TopicConnect, 1, map[string]any{"device": "press-1"}},
		{TopicAttributes, 1, map[string]any{"press-1": map[string]any{"gateway": "line3-gw", "oil_temp_unit": "degC", "pressure_unit": "bar"}}},
		{TopicTelemetry, 1, map[string]any{"press-1": []any{map[string]any{"ts": float64(t0.UnixMilli()), "values": map[string]any{
			"oil_temp": 41.5, "running": true, "pressure_quality": "bad"}}}}},
	}
	ms := tb.snapshot()
	for _, m := range ms {
		t.Logf("captured %s (QoS %d): %s", m.Topic, m.QoS, m.Payload)
	}
	if diff := cmp.Diff(want, decode(t, ms)); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}

	// RPC round trips: a write done, a write the Writer rejects, a method
	// that is not a write.
	requests := []string{
		`{"device":"press-1","data":{"id":42,"method":"set","params":{"tag":"speed","value":1500}}}`,
		`{"device":"press-1","data":{"id":43,"method":"set_oil_temp","params":50}}`,
		`{"device":"press-1","data":{"id":44,"method":"reboot","params":{}}}`,
	}
	for _, r := range requests {
		if tok := tb.c.Publish(TopicRPC, 1, false, r); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish RPC: %v", tok.Error())
		}
	}
	replies := func() []uplink.Message {
		var out []uplink.Message
		for _, m := range tb.snapshot() {
			if m.Topic == TopicRPC && isReply(m.Payload) {
				out = append(out, m)
			}
		}
		return out
	}
	checkFor(t, 10*time.Second, func() error {
		if n := len(replies()); n < 3 {
			return fmt.Errorf("%d RPC replies", n)
		}
		return nil
	})
	got := map[string]any{}
	for _, m := range replies() {
		t.Logf("captured %s (QoS %d): %s", m.Topic, m.QoS, m.Payload)
		var v map[string]any
		if err := json.Unmarshal(m.Payload, &v); err != nil {
			t.Fatal(err)
		}
		got[fmt.Sprint(v["id"])] = v
	}
	wantReplies := map[string]any{
		"42": map[string]any{"device": "press-1", "id": float64(42), "data": map[string]any{"success": true}},
		"43": map[string]any{"device": "press-1", "id": float64(43), "data": map[string]any{
			"success": false, "code": "not_writable", "error": `tag "oil_temp" is not writable`}},
		"44": map[string]any{"device": "press-1", "id": float64(44), "data": map[string]any{
			"success": false, "code": "bad_request", "error": `unknown method "reboot"; use set or set_<tag>`}},
	}
	if diff := cmp.Diff(wantReplies, got); diff != "" {
		t.Errorf("RPC replies (-want +got):\n%s", diff)
	}
	if got := w.rejects(); !cmp.Equal(got, []string{" bad_request"}) {
		t.Errorf("rejections recorded %v, want the reboot request as bad_request", got)
	}
	wantReqs := []uplink.WriteRequest{
		{ID: "42", Source: "thingsboard", Topic: TopicRPC, Device: "press-1", Tag: "speed", Value: telemetry.Int(1500)},
		{ID: "43", Source: "thingsboard", Topic: TopicRPC, Device: "press-1", Tag: "oil_temp", Value: telemetry.Int(50)},
	}
	if diff := cmp.Diff(wantReqs, w.requests(), cmp.AllowUnexported(telemetry.Value{})); diff != "" {
		t.Errorf("write requests (-want +got):\n%s", diff)
	}
}

type tLog struct{ t testing.TB }

func (l tLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
