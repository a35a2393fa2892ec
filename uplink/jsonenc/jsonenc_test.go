package jsonenc_test

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
)

var _ uplink.Encoder = jsonenc.Encoder{}

const (
	docPath    = "../../docs/payload-json.md"
	schemaPath = "../../docs/payload-json.schema.json"
)

var t0 = time.UnixMilli(1764100000123)

func docRecord() telemetry.Record {
	return telemetry.Record{Seq: 1234, Batch: telemetry.Batch{Device: "press-1", Points: []telemetry.Point{
		{Tag: "oil_temp", Time: t0, Value: telemetry.Float(42.5), Unit: "degC"},
		{Tag: "running", Time: t0, Value: telemetry.Bool(true)},
		{Tag: "speed", Time: t0, Quality: telemetry.Bad | telemetry.ReasonTimeout},
	}}}
}

func encode(t testing.TB, r telemetry.Record) []byte {
	t.Helper()
	return encodeHist(t, r, false)
}

func encodeHist(t testing.TB, r telemetry.Record, historical bool) []byte {
	t.Helper()
	out, err := jsonenc.Encoder{}.Encode(nil, "line3-gw", &r, historical)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return out
}

func TestEncodeValues(t *testing.T) {
	cases := []struct {
		name string
		p    telemetry.Point
		want string
	}{
		{"bool false", telemetry.Point{Tag: "b", Value: telemetry.Bool(false)}, `{"tag":"b","ts":0,"value":false}`},
		{"int", telemetry.Point{Tag: "i", Time: t0, Value: telemetry.Int(math.MinInt64)}, `{"tag":"i","ts":1764100000123,"value":-9223372036854775808}`},
		{"uint", telemetry.Point{Tag: "u", Time: t0, Value: telemetry.Uint(math.MaxUint64)}, `{"tag":"u","ts":1764100000123,"value":18446744073709551615}`},
		{"float", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float(0.1)}, `{"tag":"f","ts":1764100000123,"value":0.1}`},
		{"float64 of a float32", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float(float64(float32(0.1)))}, `{"tag":"f","ts":1764100000123,"value":0.10000000149011612}`},
		{"float32 in its own precision", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float32(0.1)}, `{"tag":"f","ts":1764100000123,"value":0.1}`},
		{"float32 large", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float32(3.4e38)}, `{"tag":"f","ts":1764100000123,"value":3.4e+38}`},
		{"float small", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float(1e-7)}, `{"tag":"f","ts":1764100000123,"value":1e-7}`},
		{"float big", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float(-1e21)}, `{"tag":"f","ts":1764100000123,"value":-1e+21}`},
		{"float integral", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float(3)}, `{"tag":"f","ts":1764100000123,"value":3}`},
		{"NaN", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float(math.NaN())}, `{"tag":"f","ts":1764100000123,"value":null,"quality":"bad","reason":"decode"}`},
		{"+Inf uncertain", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float(math.Inf(1)), Quality: telemetry.Uncertain | telemetry.ReasonStale}, `{"tag":"f","ts":1764100000123,"value":null,"quality":"bad","reason":"decode"}`},
		{"-Inf already bad", telemetry.Point{Tag: "f", Time: t0, Value: telemetry.Float(math.Inf(-1)), Quality: telemetry.Bad | telemetry.ReasonDevice}, `{"tag":"f","ts":1764100000123,"value":null,"quality":"bad","reason":"device"}`},
		{"string", telemetry.Point{Tag: "s", Time: t0, Value: telemetry.String("PN-4711")}, `{"tag":"s","ts":1764100000123,"value":"PN-4711"}`},
		{"escapes", telemetry.Point{Tag: "a\"b\\c\n\t\x01\u2028é", Time: t0, Value: telemetry.String("\xff<>&")}, `{"tag":"a\"b\\c\n\t\u0001\u2028é","ts":1764100000123,"value":"\ufffd<>&"}`},
		{"uncertain no reason", telemetry.Point{Tag: "x", Time: t0, Value: telemetry.Int(1), Quality: telemetry.Uncertain, Unit: "m/s"}, `{"tag":"x","ts":1764100000123,"value":1,"unit":"m/s","quality":"uncertain"}`},
		{"before 1970", telemetry.Point{Tag: "x", Time: time.UnixMilli(-5), Value: telemetry.Int(1)}, `{"tag":"x","ts":-5,"value":1}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := encode(t, telemetry.Record{Seq: 7, Batch: telemetry.Batch{Device: "d", Points: []telemetry.Point{c.p}}})
			want := `{"gateway":"line3-gw","device":"d","seq":7,"points":[` + c.want + `]}`
			if string(got) != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
			if !json.Valid(got) {
				t.Errorf("invalid JSON: %s", got)
			}
		})
	}
}

func TestEncodeEmptyBatch(t *testing.T) {
	got := encode(t, telemetry.Record{Seq: 1, Batch: telemetry.Batch{Device: "d"}})
	if want := `{"gateway":"line3-gw","device":"d","seq":1,"points":[]}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestEncodeAppends(t *testing.T) {
	r := docRecord()
	got, _ := jsonenc.Encoder{}.Encode([]byte("prefix"), "line3-gw", &r, false)
	if !bytes.HasPrefix(got, []byte("prefix{")) {
		t.Fatalf("Encode did not append: %q", got)
	}
}

func TestEncodeDoesNotAllocate(t *testing.T) {
	r := benchRecord(120)
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(100, func() { buf, _ = jsonenc.Encoder{}.Encode(buf[:0], "line3-gw", &r, true) })
	if allocs != 0 {
		t.Fatalf("Encode allocated %.1f times per call, want 0", allocs)
	}
}

// TestDocExample keeps the example in docs/payload-json.md identical to what
// the encoder writes.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Example\n.*?```json\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no json block under ## Example in " + docPath)
	}
	var want bytes.Buffer
	if err := json.Compact(&want, m[1]); err != nil {
		t.Fatalf("doc example is not JSON: %v", err)
	}
	if got := encode(t, docRecord()); string(got) != want.String() {
		t.Errorf("doc example differs from the encoder:\n doc %s\n enc %s", want.Bytes(), got)
	}
}

// TestDocSchemaMatchesFile checks that the schema printed in the doc is the
// schema file without its descriptions.
func TestDocSchemaMatchesFile(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## JSON Schema\n.*?```json\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("no json block under ## JSON Schema")
	}
	var inDoc any
	if err := json.Unmarshal(m[1], &inDoc); err != nil {
		t.Fatalf("doc schema: %v", err)
	}
	file := loadSchema(t)
	if diff := cmp.Diff(stripDescriptions(file), stripDescriptions(inDoc)); diff != "" {
		t.Errorf("doc schema differs from %s (-file +doc):\n%s", schemaPath, diff)
	}
}

func stripDescriptions(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			if k != "description" {
				out[k] = stripDescriptions(e)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = stripDescriptions(e)
		}
		return out
	}
	return v
}

func loadSchema(t testing.TB) map[string]any {
	t.Helper()
	b, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", schemaPath, err)
	}
	return s
}

// TestOutputMatchesSchema encodes every kind of point and checks the output
// against the documented schema: the required fields are there, no field is
// undocumented, and each has the documented JSON type.
func TestOutputMatchesSchema(t *testing.T) {
	schema := loadSchema(t)
	r := docRecord()
	r.Batch.Points = append(r.Batch.Points,
		telemetry.Point{Tag: "count", Time: t0, Value: telemetry.Int(-3), Unit: "pcs"},
		telemetry.Point{Tag: "total", Time: t0, Value: telemetry.Uint(7)},
		telemetry.Point{Tag: "recipe", Time: t0, Value: telemetry.String("A\"1")},
		telemetry.Point{Tag: "nan", Time: t0, Value: telemetry.Float(math.NaN())},
		telemetry.Point{Tag: "stale", Time: t0, Value: telemetry.Float(1), Quality: telemetry.Uncertain | telemetry.ReasonStale},
		telemetry.Point{Tag: "weird", Time: t0, Value: telemetry.Int(1), Quality: telemetry.Bad | 0x3f},
	)
	for _, hist := range []bool{false, true} {
		var v any
		dec := json.NewDecoder(bytes.NewReader(encodeHist(t, r, hist)))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		validate(t, schema, schema, v, "$")
	}
}

// TestEncodeHistorical: a replayed record carries "historical":true right
// after "seq"; a live one has no such field.
func TestEncodeHistorical(t *testing.T) {
	r := telemetry.Record{Seq: 9, Batch: telemetry.Batch{Device: "d"}}
	if got, want := string(encodeHist(t, r, true)), `{"gateway":"line3-gw","device":"d","seq":9,"historical":true,"points":[]}`; got != want {
		t.Errorf("historical: got %s, want %s", got, want)
	}
	if got := string(encodeHist(t, r, false)); strings.Contains(got, "historical") {
		t.Errorf("live record mentions historical: %s", got)
	}
}

// validate checks v against the subset of JSON Schema the payload schema
// uses: type, required, additionalProperties:false, properties, items,
// $ref, enum, const, minimum, minLength.
func validate(t *testing.T, root, s map[string]any, v any, path string) {
	t.Helper()
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/$defs/")
		s = root["$defs"].(map[string]any)[name].(map[string]any)
	}
	if ty, ok := s["type"]; ok {
		types := []any{ty}
		if l, ok := ty.([]any); ok {
			types = l
		}
		match := false
		for _, ty := range types {
			match = match || hasType(v, ty.(string))
		}
		if !match {
			t.Errorf("%s: %v is not of type %v", path, v, ty)
		}
	}
	if e, ok := s["enum"].([]any); ok {
		found := false
		for _, x := range e {
			found = found || reflect.DeepEqual(x, v)
		}
		if !found {
			t.Errorf("%s: %v not in %v", path, v, e)
		}
	}
	if c, ok := s["const"]; ok && !reflect.DeepEqual(c, v) {
		t.Errorf("%s: %v is not %v", path, v, c)
	}
	if n, ok := s["minLength"].(float64); ok {
		if str, _ := v.(string); utf8.RuneCountInString(str) < int(n) {
			t.Errorf("%s: %q shorter than %v", path, str, n)
		}
	}
	if n, ok := s["minimum"].(float64); ok {
		if f, err := v.(json.Number).Float64(); err != nil || f < n {
			t.Errorf("%s: %v below %v", path, v, n)
		}
	}
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		if req, ok := s["required"].([]any); ok {
			for _, k := range req {
				if _, ok := v[k.(string)]; !ok {
					t.Errorf("%s: missing required %q", path, k)
				}
			}
		}
		for k, e := range v {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false {
					t.Errorf("%s: field %q is not in the schema", path, k)
				}
				continue
			}
			validate(t, root, ps, e, path+"."+k)
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range v {
				validate(t, root, items, e, path+"["+string(rune('0'+i%10))+"]")
			}
		}
	}
}

func hasType(v any, ty string) bool {
	switch ty {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		return ok && !strings.ContainsAny(n.String(), ".eE")
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	}
	return false
}

func FuzzJSONEncode(f *testing.F) {
	f.Add("press-1", "oil_temp", "degC", "PN-4711", 42.5, int64(-3), uint64(7), byte(0))
	f.Add("a\"b", "\\\n", "", "\xff\xfe\u2028", math.NaN(), int64(math.MinInt64), uint64(math.MaxUint64), byte(0x82))
	f.Add("", "\x00", "°C", "日本語", math.Inf(-1), int64(0), uint64(0), byte(0x44))
	f.Fuzz(func(t *testing.T, device, tag, unit, str string, fl float64, i int64, u uint64, q byte) {
		points := []telemetry.Point{
			{Tag: tag, Unit: unit, Value: telemetry.String(str), Quality: telemetry.Quality(q), Time: t0},
			{Tag: tag, Value: telemetry.Float(fl)},
			{Tag: tag, Value: telemetry.Int(i), Unit: unit},
			{Tag: tag, Value: telemetry.Uint(u)},
			{Tag: tag, Value: telemetry.Bool(i%2 == 0)},
			{Tag: tag, Quality: telemetry.Quality(q)},
		}
		r := telemetry.Record{Seq: u, Batch: telemetry.Batch{Device: device, Points: points}}
		out, err := jsonenc.Encoder{}.Encode(nil, device, &r, q&1 == 1)
		if err != nil {
			t.Fatal(err)
		}
		type point struct {
			Tag     string          `json:"tag"`
			TS      int64           `json:"ts"`
			Value   json.RawMessage `json:"value"`
			Unit    *string         `json:"unit"`
			Quality *string         `json:"quality"`
			Reason  *string         `json:"reason"`
		}
		var got struct {
			Gateway    string  `json:"gateway"`
			Device     string  `json:"device"`
			Seq        uint64  `json:"seq"`
			Historical *bool   `json:"historical"`
			Points     []point `json:"points"`
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Fatalf("output is not valid JSON: %v\n%s", err, out)
		}
		if (got.Historical != nil) != (q&1 == 1) || (got.Historical != nil && !*got.Historical) {
			t.Fatalf("historical %v for q %#x", got.Historical, q)
		}
		if got.Gateway != valid(device) || got.Device != valid(device) || got.Seq != u || len(got.Points) != len(points) {
			t.Fatalf("header mismatch: %+v", got)
		}
		for k, p := range got.Points {
			want := points[k]
			if p.Tag != valid(tag) || p.TS != wantTS(want.Time) {
				t.Fatalf("point %d: tag %q ts %d", k, p.Tag, p.TS)
			}
			if (p.Unit != nil) != (want.Unit != "") || (p.Unit != nil && *p.Unit != valid(unit)) {
				t.Fatalf("point %d: unit %v, want %q", k, p.Unit, unit)
			}
			if p.Quality != nil && *p.Quality != "bad" && *p.Quality != "uncertain" {
				t.Fatalf("point %d: quality %q", k, *p.Quality)
			}
		}
		var s string
		if err := json.Unmarshal(got.Points[0].Value, &s); err != nil || s != valid(str) {
			t.Fatalf("string value %s does not round-trip %q (%v)", got.Points[0].Value, str, err)
		}
		var f64 *float64
		if err := json.Unmarshal(got.Points[1].Value, &f64); err != nil {
			t.Fatal(err)
		}
		switch {
		case math.IsNaN(fl) || math.IsInf(fl, 0):
			if f64 != nil || *got.Points[1].Quality != "bad" {
				t.Fatalf("non-finite float: value %v quality %v", f64, got.Points[1].Quality)
			}
		case f64 == nil || *f64 != fl:
			t.Fatalf("float %v came back as %v", fl, f64)
		}
		var i64 int64
		var u64 uint64
		if json.Unmarshal(got.Points[2].Value, &i64) != nil || i64 != i || json.Unmarshal(got.Points[3].Value, &u64) != nil || u64 != u {
			t.Fatalf("integers %s %s, want %d %d", got.Points[2].Value, got.Points[3].Value, i, u)
		}
		if string(got.Points[5].Value) != "null" {
			t.Fatalf("none value is %s", got.Points[5].Value)
		}
	})
}

// valid is s as encoding/json decodes it back: each invalid UTF-8 byte
// becomes U+FFFD.
func valid(s string) string { return string([]rune(s)) }

func wantTS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func benchRecord(n int) telemetry.Record {
	now := time.Now()
	r := telemetry.Record{Seq: 123456, Batch: telemetry.Batch{Device: "press-001", Points: make([]telemetry.Point, n)}}
	for i := range r.Batch.Points {
		p := telemetry.Point{Tag: "tag_" + string(rune('a'+i%26)) + "_value", Time: now, Unit: "bar"}
		switch i % 4 {
		case 0:
			p.Value = telemetry.Float(float64(i) * 1.37)
		case 1:
			p.Value = telemetry.Int(int64(i * 100))
			p.Unit = ""
		case 2:
			p.Value = telemetry.Bool(i%3 == 0)
			p.Unit = ""
		case 3:
			p.Value = telemetry.Float(float64(i) / 3)
		}
		r.Batch.Points[i] = p
	}
	return r
}

func BenchmarkJSONEncode(b *testing.B) {
	r := benchRecord(120)
	buf, _ := jsonenc.Encoder{}.Encode(nil, "line3-gw", &r, false)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = jsonenc.Encoder{}.Encode(buf[:0], "line3-gw", &r, false)
	}
}

// TestEncodeTimestampsPerPoint checks each point's "ts" when points of one
// record carry different times (the encoder reuses the digits of the
// previous point's time when it is the same).
func TestEncodeTimestampsPerPoint(t *testing.T) {
	times := []time.Time{t0, t0, t0.Add(time.Millisecond), t0.Add(time.Millisecond), {}, t0, t0.Add(999 * time.Microsecond), time.UnixMilli(-5), t0.Add(-time.Hour)}
	r := telemetry.Record{Seq: 1, Batch: telemetry.Batch{Device: "d"}}
	for i, ts := range times {
		r.Batch.Points = append(r.Batch.Points, telemetry.Point{Tag: string(rune('a' + i)), Time: ts, Value: telemetry.Int(int64(i))})
	}
	out, _ := jsonenc.Encoder{}.Encode(nil, "gw", &r, false)
	var got struct {
		Points []struct{ TS int64 }
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var want, have []int64
	for i, ts := range times {
		ms := ts.UnixMilli()
		if ts.IsZero() {
			ms = 0
		}
		want = append(want, ms)
		have = append(have, got.Points[i].TS)
	}
	if diff := cmp.Diff(want, have); diff != "" {
		t.Errorf("ts per point (-want +got):\n%s", diff)
	}
}
