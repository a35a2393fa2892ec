package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

func TestParseSetCommand(t *testing.T) {
	for _, c := range []struct {
		in    string
		id    string // raw
		tag   string
		value telemetry.Value
	}{
		{`{"id":"abc","tag":"setpoint","value":42.5}`, `"abc"`, "setpoint", telemetry.Float(42.5)},
		{` {"value": 12, "tag": "speed"} `, ``, "speed", telemetry.Int(12)},
		{`{"tag":"speed","value":12.0,"id":7}`, `7`, "speed", telemetry.Float(12)},
		{`{"tag":"pump","value":true,"id":"x\u0041"}`, `"x\u0041"`, "pump", telemetry.Bool(true)},
		{`{"tag":"recipe","value":"PN-4711"}`, ``, "recipe", telemetry.String("PN-4711")},
		{`{"tag":"big","value":18446744073709551615}`, ``, "big", telemetry.Uint(18446744073709551615)},
		{`{"tag":"neg","value":-9223372036854775808}`, ``, "neg", telemetry.Int(-9223372036854775808)},
		{`{"tag":"huge","value":1e300}`, ``, "huge", telemetry.Float(1e300)},
		{`{"tag":"digits","value":123456789012345678901234567890}`, ``, "digits", telemetry.Float(123456789012345678901234567890)},
	} {
		got, err := ParseSetCommand([]byte(c.in))
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if string(got.ID) != c.id || got.Tag != c.tag || !got.Value.Equal(c.value) {
			t.Errorf("%s = id %s tag %q value %v (%s), want %s %q %v", c.in, got.ID, got.Tag, got.Value, got.Value.Kind(), c.id, c.tag, c.value)
		}
	}
	if c, _ := ParseSetCommand([]byte(`{"id":"x\u0041","tag":"a","value":1}`)); c.IDText() != "xA" {
		t.Errorf("IDText = %q", c.IDText())
	}
}

func TestParseSetCommandRejects(t *testing.T) {
	for _, c := range []struct {
		in, want, id string
	}{
		{``, "JSON object", ""},
		{`[1]`, "JSON object", ""},
		{`"x"`, "JSON object", ""},
		{`{"id":"a","tag":"t"}`, "value: required", `"a"`},
		{`{"id":1,"value":1}`, "tag: required", `1`},
		{`{"tag":"t","value":1,"extra":2}`, `unknown key "extra"`, ""},
		{`{"id":"q","tag":"t","value":1,"value":2}`, "given twice", `"q"`},
		{`{"tag":"t","value":null}`, "null", ""},
		{`{"tag":"t","value":{"a":1}}`, "object", ""},
		{`{"tag":"t","value":[1]}`, "list", ""},
		{`{"tag":"t","value":1e999}`, "range", ""},
		{`{"tag":"bad name","value":1}`, "not a tag name", ""},
		{`{"tag":"","value":1}`, "1 to 256", ""},
		{`{"tag":7,"value":1}`, "tag: want a string", ""},
		{`{"tag":null,"value":1}`, "tag: want a string", ""},
		{`{"id":true,"tag":"t","value":1}`, "id: want a string or a number", ""},
		{`{"id":{},"tag":"t","value":1}`, "id: want a string or a number", ""},
		{`{"id":"` + strings.Repeat("i", 300) + `","tag":"t","value":1}`, "id: longer", ""},
		{`{"tag":"t","value":1}{}`, "after the JSON object", ""},
		{`{"tag":"t","value":1`, "not valid JSON", ""},
		{`{"tag":"t","value":tru}`, "not valid JSON", ""},
		{`{"tag":"` + strings.Repeat("t", 300) + `","value":1}`, "1 to 256", ""},
		{`{"tag":"t","value":"` + strings.Repeat("x", MaxCommandBytes) + `"}`, "over the limit", ""},
	} {
		got, err := ParseSetCommand([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.80s: error %v, want one with %q", c.in, err, c.want)
		}
		if string(got.ID) != c.id {
			t.Errorf("%.80s: id %s kept, want %s", c.in, got.ID, c.id)
		}
	}
}

func TestAppendSetResult(t *testing.T) {
	for _, c := range []struct {
		id   string
		tag  string
		r    WriteResult
		want string
	}{
		{`"abc"`, "setpoint", WriteResult{Code: WriteOK}, `{"id":"abc","device":"press-1","tag":"setpoint","ok":true}`},
		{`7`, "setpoint", WriteResult{Code: RejectOutOfRange, Reason: "42.5 is above max 40"}, `{"id":7,"device":"press-1","tag":"setpoint","ok":false,"code":"out_of_range","reason":"42.5 is above max 40"}`},
		{``, "", WriteResult{Code: RejectBadRequest, Reason: `unknown key "<x>"`}, `{"device":"press-1","ok":false,"code":"bad_request","reason":"unknown key \"\u003cx\u003e\""}`},
	} {
		var id json.RawMessage
		if c.id != "" {
			id = json.RawMessage(c.id)
		}
		got := string(AppendSetResult(nil, id, "press-1", c.tag, c.r))
		if got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("not JSON: %s", got)
		}
	}
}

// FuzzParseCommand feeds the set command parser arbitrary payloads: it
// never panics, and whatever it accepts (or the id it keeps from what it
// rejects) makes a valid JSON result.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		`{"id":"abc","tag":"setpoint","value":42.5}`,
		`{"tag":"pump","value":true}`,
		`{"id":7,"tag":"recipe","value":"PN-4711"}`,
		`{"tag":"big","value":18446744073709551616}`,
		`{"id":"a","tag":"t","value":1,"value":2}`,
		`{"id":"\ud800","tag":"t","value":"\u0000"}`,
		`{"tag":"t","value":[[[[[[1]]]]]]}`,
		`{"id":-0.5e-3,"tag":"t","value":-0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := ParseSetCommand(payload)
		if err == nil && (CheckTagName(c.Tag) != nil || c.Value.IsNone()) {
			t.Fatalf("accepted %q with tag %q value %v", payload, c.Tag, c.Value)
		}
		if len(c.ID) > MaxCommandID+2 && err == nil {
			t.Fatalf("id of %d bytes accepted", len(c.ID))
		}
		r := WriteResult{Code: WriteOK}
		if err != nil {
			r = WriteResult{Code: RejectBadRequest, Reason: err.Error()}
		}
		if out := AppendSetResult(nil, c.ID, "d", c.Tag, r); !json.Valid(out) {
			t.Fatalf("result %q of %q is not JSON", out, payload)
		}
	})
}

// recordingWriter answers writes from a table and records what it saw.
type recordingWriter struct {
	mu       sync.Mutex
	writes   []WriteRequest
	rejected []WriteRequest
}

func (w *recordingWriter) Write(_ context.Context, req WriteRequest) WriteResult {
	w.mu.Lock()
	w.writes = append(w.writes, req)
	w.mu.Unlock()
	if req.Tag == "setpoint" && req.Value.AsFloat() > 40 {
		return WriteResult{Code: RejectOutOfRange, Reason: fmt.Sprintf("%v is above max 40", req.Value)}
	}
	return WriteResult{Code: WriteOK}
}

func (w *recordingWriter) Reject(req WriteRequest, _ WriteResult) {
	w.mu.Lock()
	w.rejected = append(w.rejected, req)
	w.mu.Unlock()
}

// TestSetCommandRoundTrip publishes set commands through a real broker and
// reads their results: the filter comes from the topic template, results
// go to {device topic}/set/result with the id echoed, and a payload that
// does not parse gets bad_request and is recorded as rejected.
func TestSetCommandRoundTrip(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0", newRecorder())
	w := &recordingWriter{}
	ws := NewWrites(w, 0, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ws.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	cfg := testConfig(b.url())
	cfg.Topic = "plant/{gateway}/{device}/data"
	cfg.Writes = ws
	sub := subscribe(t, b.url(), "platform", "plant/gw1/+/data/set/result")
	// A retained command, there before the gateway subscribes: it comes
	// with the retain flag, and would come again at every reconnect.
	// (Wait until the broker has passed it on: it may send the PUBACK
	// first, and a subscriber arriving meanwhile then gets it twice.)
	seen := subscribe(t, b.url(), "watcher", "plant/gw1/+/data/set")
	if tok := sub.c.Publish("plant/gw1/press-3/data/set", 1, true, `{"id":"r4","tag":"setpoint","value":5}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := seen.last(); !ok {
			return errNotYet
		}
		return nil
	})
	u, _ := runUplink(t, cfg, newMemSource())
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	publish := func(topic, payload string) {
		t.Helper()
		if tok := sub.c.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	publish("plant/gw1/press-1/data/set", `{"id":"a1","tag":"setpoint","value":12}`)
	publish("plant/gw1/press-2/data/set", `{"id":2,"tag":"setpoint","value":42.5}`)
	publish("plant/gw1/press-1/data/set", `{"id":"a3","tag":"setpoint"`)
	publish("plant/gw1/press-1/data/set/other", `{"id":"ignored","tag":"setpoint","value":1}`)
	want := map[string]string{
		"plant/gw1/press-1/data/set/result a1": `{"id":"a1","device":"press-1","tag":"setpoint","ok":true}`,
		"plant/gw1/press-2/data/set/result 2":  `{"id":2,"device":"press-2","tag":"setpoint","ok":false,"code":"out_of_range","reason":"42.5 is above max 40"}`,
		"plant/gw1/press-1/data/set/result a3": `{"id":"a3","device":"press-1","tag":"setpoint","ok":false,"code":"bad_request","reason":"not valid JSON: it ends early"}`,
		"plant/gw1/press-3/data/set/result r4": `{"id":"r4","device":"press-3","tag":"setpoint","ok":false,"code":"bad_request","reason":"retained set commands are not carried out (the broker would deliver them again at every reconnect); publish with retain off"}`,
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		if len(sub.msgs) < len(want) {
			return fmt.Errorf("%d results", len(sub.msgs))
		}
		return nil
	})
	sub.mu.Lock()
	for _, m := range sub.msgs {
		var r struct{ ID json.RawMessage }
		_ = json.Unmarshal(m.payload, &r)
		key := m.topic + " " + idText(r.ID)
		if want[key] != string(m.payload) || m.retained {
			t.Errorf("result %s: %s (retained %v), want %s", key, m.payload, m.retained, want[key])
		}
	}
	sub.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.writes) != 2 || w.writes[0].Device != "press-1" || w.writes[0].Source != "json" || w.writes[0].Topic != "plant/gw1/press-1/data/set" || w.writes[0].ID != "a1" || !w.writes[0].Value.Equal(telemetry.Int(12)) {
		t.Errorf("writes %+v", w.writes)
	}
	if len(w.rejected) != 2 || w.rejected[0].ID != "r4" || w.rejected[1].ID != "a3" {
		t.Errorf("rejected %+v, want the bad payload and the retained command", w.rejected)
	}
}

func TestCommandFilter(t *testing.T) {
	for _, c := range []struct{ topic, filter string }{
		{"fieldgate/{gateway}/{device}", "fieldgate/gw1/+/set"},
		{"{device}/{gateway}", "+/gw1/set"},
		{"a/{device}/b/{device}", "a/+/b/+/set"},
		{"a/dev-{device}", ""},
		{"a/{gateway}", ""},
	} {
		cfg := testConfig("tcp://127.0.0.1:1")
		cfg.Topic = c.topic
		u, err := New(cfg, newMemSource(), jsonEncoder{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		f := u.format.(*encoderFormat)
		got, ok := f.commandFilter()
		if got != c.filter || ok != (c.filter != "") {
			t.Errorf("%s: filter %q %v, want %q", c.topic, got, ok, c.filter)
		}
	}
	cfg := testConfig("tcp://127.0.0.1:1")
	cfg.Topic = "a/{device}/b/{device}"
	u, _ := New(cfg, newMemSource(), jsonEncoder{}, nil)
	f := u.format.(*encoderFormat)
	for topic, dev := range map[string]string{"a/x/b/x/set": "x", "a/x/b/y/set": "", "a/x/b/x": "", "a/x/c/x/set": "", "a/x/b/x/y/set": ""} {
		if got := f.commandDevice(topic); got != dev {
			t.Errorf("commandDevice(%s) = %q, want %q", topic, got, dev)
		}
	}
}

// jsonEncoder is a plain Encoder for tests that need no payload.
type jsonEncoder struct{}

func (jsonEncoder) Encode(dst []byte, _ string, _ *telemetry.Record, _ bool) ([]byte, error) {
	return append(dst, "{}"...), nil
}
