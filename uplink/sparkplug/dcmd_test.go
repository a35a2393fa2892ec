package sparkplug

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/sparkplug/sproto"
)

// testBirth is a device birth for parseDCMD: alias i+1 is metric i.
type testBirth []struct {
	name string
	dt   sproto.DataType
}

func (b testBirth) byAlias(a uint64) (string, sproto.DataType, bool) {
	if a == 0 || a > uint64(len(b)) {
		return "", 0, false
	}
	return b[a-1].name, b[a-1].dt, true
}

func (b testBirth) byName(n string) (sproto.DataType, bool) {
	for _, m := range b {
		if m.name == n {
			return m.dt, true
		}
	}
	return 0, false
}

var dcmdBirth = testBirth{
	{"speed", sproto.DataType_UInt16},
	{"setpoint", sproto.DataType_Double},
	{"enable", sproto.DataType_Boolean},
}

// dcmdPayload marshals a DCMD payload of ms.
func dcmdPayload(t testing.TB, ms ...*sproto.Payload_Metric) []byte {
	t.Helper()
	b, err := proto.Marshal(&sproto.Payload{Timestamp: proto.Uint64(uint64(t0.UnixMilli())), Metrics: ms})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dt(d sproto.DataType) *uint32 { return proto.Uint32(uint32(d)) }

// TestParseDCMD reads each metric's value by its datatype, resolves
// aliases through the birth, and gives a reason for what cannot be a write.
func TestParseDCMD(t *testing.T) {
	type M = sproto.Payload_Metric
	type set = func(*M)
	named := func(n string, d sproto.DataType, v set) *M {
		m := &M{Name: proto.String(n), Datatype: dt(d)}
		if v != nil {
			v(m)
		}
		return m
	}
	with := func(m *M, v set) *M { v(m); return m }
	iv := func(u uint32) set { return func(m *M) { m.Value = &sproto.Payload_Metric_IntValue{IntValue: u} } }
	lv := func(u uint64) set { return func(m *M) { m.Value = &sproto.Payload_Metric_LongValue{LongValue: u} } }
	fv := func(f float32) set { return func(m *M) { m.Value = &sproto.Payload_Metric_FloatValue{FloatValue: f} } }
	dv := func(f float64) set {
		return func(m *M) { m.Value = &sproto.Payload_Metric_DoubleValue{DoubleValue: f} }
	}
	bv := func(b bool) set { return func(m *M) { m.Value = &sproto.Payload_Metric_BooleanValue{BooleanValue: b} } }
	sv := func(s string) set { return func(m *M) { m.Value = &sproto.Payload_Metric_StringValue{StringValue: s} } }
	tests := []struct {
		name   string
		m      *M
		tag    string
		value  telemetry.Value
		reason string // substring; "" for a write
	}{
		{"bool", named("enable", sproto.DataType_Boolean, bv(true)), "enable", telemetry.Bool(true), ""},
		{"int8 -1 zero-extended", named("x", sproto.DataType_Int8, iv(0xFF)), "x", telemetry.Int(-1), ""},
		{"int8 -128 sign-extended", named("x", sproto.DataType_Int8, iv(0xFFFFFF80)), "x", telemetry.Int(-128), ""},
		{"int8 out of range", named("x", sproto.DataType_Int8, iv(300)), "x", telemetry.Value{}, "out of range"},
		{"int16", named("x", sproto.DataType_Int16, iv(1234)), "x", telemetry.Int(1234), ""},
		{"int32 negative", named("x", sproto.DataType_Int32, iv(uint32(math.MaxUint32))), "x", telemetry.Int(-1), ""},
		{"int32 in long_value", named("x", sproto.DataType_Int32, lv(math.MaxUint64-4)), "x", telemetry.Int(-5), ""},
		{"int64", named("x", sproto.DataType_Int64, lv(uint64(1)<<63)), "x", telemetry.Int(math.MinInt64), ""},
		{"uint8 out of range", named("x", sproto.DataType_UInt8, iv(256)), "x", telemetry.Value{}, "out of range"},
		{"uint16", named("speed", sproto.DataType_UInt16, iv(1500)), "speed", telemetry.Uint(1500), ""},
		{"uint64", named("x", sproto.DataType_UInt64, lv(math.MaxUint64)), "x", telemetry.Uint(math.MaxUint64), ""},
		{"float", named("x", sproto.DataType_Float, fv(0.1)), "x", telemetry.Float32(0.1), ""},
		{"double", named("setpoint", sproto.DataType_Double, dv(42.5)), "setpoint", telemetry.Float(42.5), ""},
		{"string", named("recipe", sproto.DataType_String, sv("A7")), "recipe", telemetry.String("A7"), ""},
		{"text", named("note", sproto.DataType_Text, sv("hi")), "note", telemetry.String("hi"), ""},
		{"alias, datatype from the birth", with(&M{Alias: proto.Uint64(1)}, iv(900)), "speed", telemetry.Uint(900), ""},
		{"alias and datatype", with(&M{Alias: proto.Uint64(2), Datatype: dt(sproto.DataType_Double)}, dv(1)), "setpoint", telemetry.Float(1), ""},
		{"name without datatype from the birth", with(&M{Name: proto.String("enable")}, bv(false)), "enable", telemetry.Bool(false), ""},
		{"unknown alias", with(&M{Alias: proto.Uint64(99)}, iv(1)), "", telemetry.Value{}, "alias 99 is not in the device's birth"},
		{"unknown name without datatype", with(&M{Name: proto.String("nope")}, iv(1)), "nope", telemetry.Value{}, "no datatype"},
		{"neither name nor alias", with(&M{Datatype: dt(sproto.DataType_Int32)}, iv(1)), "", telemetry.Value{}, "neither a name nor an alias"},
		{"null", &M{Name: proto.String("speed"), Datatype: dt(sproto.DataType_UInt16), IsNull: proto.Bool(true)}, "speed", telemetry.Value{}, "no value"},
		{"value does not fit", named("enable", sproto.DataType_Boolean, iv(1)), "enable", telemetry.Value{}, "does not fit"},
		{"datetime", named("when", sproto.DataType_DateTime, lv(1)), "when", telemetry.Value{}, "cannot be written"},
		{"dataset", named("table", sproto.DataType_DataSet, nil), "table", telemetry.Value{}, "no value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws, err := parseDCMD(dcmdPayload(t, tc.m), dcmdBirth)
			if err != nil || len(ws) != 1 {
				t.Fatalf("parseDCMD: %v, %d writes", err, len(ws))
			}
			w := ws[0]
			if w.tag != tc.tag {
				t.Errorf("tag %q, want %q", w.tag, tc.tag)
			}
			if tc.reason == "" {
				if w.reason != "" || w.value != tc.value {
					t.Errorf("got %v (reason %q), want %v", w.value, w.reason, tc.value)
				}
				return
			}
			if !strings.Contains(w.reason, tc.reason) {
				t.Errorf("reason %q, want it to say %q", w.reason, tc.reason)
			}
		})
	}
	if _, err := parseDCMD([]byte{0xff, 0xff}, dcmdBirth); err == nil {
		t.Error("garbage: no error")
	}
}

// FuzzDCMD: parseDCMD never panics on outside bytes, and every metric is
// either a write with a tag and a value or has a reason.
func FuzzDCMD(f *testing.F) {
	f.Add(dcmdPayload(f,
		&sproto.Payload_Metric{Name: proto.String("speed"), Datatype: dt(sproto.DataType_UInt16), Value: &sproto.Payload_Metric_IntValue{IntValue: 1500}},
		&sproto.Payload_Metric{Alias: proto.Uint64(2), Value: &sproto.Payload_Metric_DoubleValue{DoubleValue: 42.5}},
	))
	f.Add(dcmdPayload(f, &sproto.Payload_Metric{Name: proto.String("x"), Datatype: dt(sproto.DataType_Int8), Value: &sproto.Payload_Metric_IntValue{IntValue: 0xFFFFFF80}}))
	f.Add(rebirthCommand(f))
	f.Fuzz(func(t *testing.T, b []byte) {
		ws, err := parseDCMD(b, dcmdBirth)
		if err != nil {
			return
		}
		for _, w := range ws {
			if w.reason == "" && (w.tag == "" || w.value.IsNone()) {
				t.Fatalf("write without a reason has tag %q value %v", w.tag, w.value)
			}
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

func slogText(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (w *recWriter) requests() []uplink.WriteRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]uplink.WriteRequest(nil), w.reqs...)
}

// syncLog collects log lines for a test to look at.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
	t  testing.TB
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDCMDWritesThroughWrites: a host's DCMD through the broker becomes
// one WriteRequest per metric (by name and by alias), submitted to the
// gateway's Writes; results are logged; a metric that cannot be a write is
// rejected as bad_request without reaching the Writer; NCMD rebirth still
// works beside it.
func TestDCMDWritesThroughWrites(t *testing.T) {
	rec := &recorder{clientID: "gw1"}
	addr := startBroker(t, rec)
	host := subscribe(t, addr, Namespace+"/#")
	q, _ := openBuffer(t)
	w := &recWriter{result: func(r uplink.WriteRequest) uplink.WriteResult {
		if r.Tag == "count" {
			return uplink.WriteResult{Code: uplink.RejectNotWritable, Reason: "tag count is not writable"}
		}
		return uplink.WriteResult{Code: uplink.WriteOK}
	}}
	logs := &syncLog{t: t}
	log := slogText(logs)
	writes := uplink.NewWrites(w, 0, log)
	wctx, wcancel := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- writes.Run(wctx) }()
	t.Cleanup(func() { wcancel(); <-wdone })

	f, err := New(Config{Group: "plant-a", Node: "gw1", Writes: writes, Catalog: []CatalogDevice{
		{Name: "press 1", Tags: []CatalogTag{{Name: "oil_temp", Unit: "degC", Kind: telemetry.KindFloat}, {Name: "count", Kind: telemetry.KindInt}}},
	}}, log)
	if err != nil {
		t.Fatal(err)
	}
	run(t, uplinkConfig("tcp://"+addr), q, f)
	checkFor(t, 10*time.Second, func() error {
		if rec.count("DBIRTH") < 1 {
			return fmt.Errorf("no DBIRTH yet")
		}
		return nil
	})
	// The device id in topics is the name with its characters that a topic
	// level may not hold replaced; the alias comes from the DBIRTH.
	birth := filter(rec.snapshot(), "DBIRTH")[0]
	var countAlias uint64
	for _, mt := range birth.pl.GetMetrics() {
		if mt.GetName() == "count" {
			countAlias = mt.GetAlias()
		}
	}
	topic := Namespace + "/plant-a/DCMD/gw1/press 1"
	host.publish(t, topic, false, dcmdPayload(t,
		&sproto.Payload_Metric{Name: proto.String("oil_temp"), Datatype: dt(sproto.DataType_Double), Value: &sproto.Payload_Metric_DoubleValue{DoubleValue: 55.5}},
		&sproto.Payload_Metric{Alias: proto.Uint64(countAlias), Value: &sproto.Payload_Metric_LongValue{LongValue: 7}},
		&sproto.Payload_Metric{Name: proto.String("when"), Datatype: dt(sproto.DataType_DateTime), Value: &sproto.Payload_Metric_LongValue{LongValue: 1}},
	))
	checkFor(t, 10*time.Second, func() error {
		if n := len(w.requests()); n < 2 {
			return fmt.Errorf("%d write requests", n)
		}
		if !strings.Contains(logs.String(), "not_writable") {
			return fmt.Errorf("no log of the rejection yet")
		}
		return nil
	})
	want := []uplink.WriteRequest{
		{Source: "sparkplug", Topic: topic, Device: "press 1", Tag: "oil_temp", Value: telemetry.Float(55.5)},
		{Source: "sparkplug", Topic: topic, Device: "press 1", Tag: "count", Value: telemetry.Int(7)},
	}
	if diff := cmp.Diff(want, w.requests(), cmp.AllowUnexported(telemetry.Value{})); diff != "" {
		t.Errorf("write requests (-want +got):\n%s", diff)
	}
	if got := w.rejects(); !cmp.Equal(got, []string{"when bad_request"}) {
		t.Errorf("rejections recorded %v, want the DateTime metric as bad_request", got)
	}
	out := strings.ReplaceAll(logs.String(), " component=sparkplug", "")
	for _, s := range []string{
		`msg="DCMD write done" device="press 1" tag=oil_temp value=55.5`,
		`msg="DCMD write rejected" code=not_writable`,
		`msg="DCMD metric rejected" code=bad_request device="press 1" tag=when`,
	} {
		if !strings.Contains(out, s) {
			t.Errorf("log lacks %s", s)
		}
	}

	// Without a Writer (the gateway's default), every write is rejected as
	// writes_disabled and logged.
	f2, _ := New(Config{Group: "plant-a", Node: "gw2"}, log)
	f2.handleDCMD(Namespace+"/plant-a/DCMD/gw2/press-9", dcmdPayload(t,
		&sproto.Payload_Metric{Name: proto.String("speed"), Datatype: dt(sproto.DataType_UInt16), Value: &sproto.Payload_Metric_IntValue{IntValue: 1}}))
	if !strings.Contains(logs.String(), `msg="DCMD write rejected" component=sparkplug code=writes_disabled`) {
		t.Error("no writes_disabled rejection logged")
	}

	// NCMD rebirth is unchanged.
	host.publish(t, Namespace+"/plant-a/NCMD/gw1", false, rebirthCommand(t))
	checkFor(t, 5*time.Second, func() error {
		if n := rec.count("NBIRTH"); n < 2 {
			return fmt.Errorf("%d NBIRTH", n)
		}
		return nil
	})
}
