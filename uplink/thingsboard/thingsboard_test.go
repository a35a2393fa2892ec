package thingsboard

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
)

// fakePub records what a Format publishes; its tokens are done at once.
type fakePub struct{ msgs []uplink.Message }

type doneToken struct{}

func (doneToken) Done() <-chan struct{} { c := make(chan struct{}); close(c); return c }
func (doneToken) Error() error          { return nil }

func (p *fakePub) Publish(m uplink.Message) uplink.Token {
	p.msgs = append(p.msgs, m)
	return doneToken{}
}

var t0 = time.UnixMilli(1764100000123)

// decoded is a message as ThingsBoard's gateway API documents it.
type decoded struct {
	Topic string
	QoS   byte
	Body  any
}

func decode(t *testing.T, ms []uplink.Message) []decoded {
	t.Helper()
	var out []decoded
	for _, m := range ms {
		var body any
		if err := json.Unmarshal(m.Payload, &body); err != nil {
			t.Fatalf("%s: %v: %s", m.Topic, err, m.Payload)
		}
		out = append(out, decoded{m.Topic, m.QoS, body})
	}
	return out
}

// TestGatewayAPIMessageShapes checks connect, attributes, telemetry and
// disconnect against the shapes of ThingsBoard's gateway MQTT API
// (thingsboard.io/docs/reference/gateway-mqtt-api).
func TestGatewayAPIMessageShapes(t *testing.T) {
	f := New("line3-gw", 0, nil, nil)
	if w, _ := f.Will(); w.Topic != "" {
		t.Errorf("will %q, want none", w.Topic)
	}
	p := &fakePub{}
	rec := &telemetry.Record{Seq: 1, Batch: telemetry.Batch{Device: "Press 1", Points: []telemetry.Point{
		{Tag: "oil_temp", Time: t0, Value: telemetry.Float(41.5), Unit: "degC"},
		{Tag: "running", Time: t0, Value: telemetry.Bool(true)},
		{Tag: "pressure", Time: t0, Quality: telemetry.Bad | telemetry.ReasonTimeout},
		{Tag: "count", Time: t0.Add(time.Second), Value: telemetry.Uint(7)},
		{Tag: "ratio", Time: t0.Add(time.Second), Value: telemetry.Float(math.NaN())},
	}}}
	tok, payload, err := f.Publish(p, nil, rec, false)
	if err != nil || tok == nil || len(payload) == 0 {
		t.Fatalf("Publish: %v %v %q", tok, err, payload)
	}
	rec2 := &telemetry.Record{Seq: 2, Batch: telemetry.Batch{Device: "Press 1", Points: []telemetry.Point{
		{Tag: "oil_temp", Time: t0.Add(2 * time.Second), Value: telemetry.Float(42), Unit: "degC"},
	}}}
	if _, _, err := f.Publish(p, nil, rec2, true); err != nil {
		t.Fatal(err)
	}
	f.Offline(p)
	want := []decoded{
		{TopicConnect, 1, map[string]any{"device": "Press 1"}},
		{TopicAttributes, 1, map[string]any{"Press 1": map[string]any{"gateway": "line3-gw", "oil_temp_unit": "degC"}}},
		{TopicTelemetry, 1, map[string]any{"Press 1": []any{
			map[string]any{"ts": float64(t0.UnixMilli()), "values": map[string]any{
				"oil_temp": 41.5, "running": true, "pressure_quality": "bad"}},
			map[string]any{"ts": float64(t0.UnixMilli() + 1000), "values": map[string]any{
				"count": float64(7), "ratio_quality": "bad"}},
		}}},
		{TopicTelemetry, 1, map[string]any{"Press 1": []any{
			map[string]any{"ts": float64(t0.UnixMilli() + 2000), "values": map[string]any{"oil_temp": float64(42)}},
		}}},
		{TopicDisconnect, 1, map[string]any{"device": "Press 1"}},
	}
	if diff := cmp.Diff(want, decode(t, p.msgs)); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
		for _, m := range p.msgs {
			t.Logf("%s %s", m.Topic, m.Payload)
		}
	}

	// A new connection connects the device again before its telemetry.
	p = &fakePub{}
	f.Will()
	_, _, _ = f.Publish(p, nil, rec2, false)
	if got := []string{p.msgs[0].Topic, p.msgs[1].Topic, p.msgs[2].Topic}; !cmp.Equal(got, []string{TopicConnect, TopicAttributes, TopicTelemetry}) {
		t.Errorf("after reconnect: %v", got)
	}
}
