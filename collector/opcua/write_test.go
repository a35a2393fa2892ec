package opcua

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/sim/opcuasim"
	"github.com/fieldgate/fieldgate/telemetry"
)

var (
	_ collector.Writer    = (*Driver)(nil)
	_ collector.TagReader = (*Driver)(nil)
)

// TestToVariant checks the conversions to each writable type and the
// refusals, which wrap collector.ErrValueType.
func TestToVariant(t *testing.T) {
	cases := []struct {
		v    telemetry.Value
		typ  ua.TypeID
		want any    // the variant's value
		err  string // part of the error, "" for none
	}{
		{telemetry.Bool(true), ua.TypeIDBoolean, true, ""},
		{telemetry.Int(0), ua.TypeIDBoolean, false, ""},
		{telemetry.Float(1), ua.TypeIDBoolean, true, ""},
		{telemetry.Int(2), ua.TypeIDBoolean, nil, "use true, false, 0 or 1"},
		{telemetry.String("true"), ua.TypeIDBoolean, nil, "use true, false, 0 or 1"},
		{telemetry.Int(-128), ua.TypeIDSByte, int8(-128), ""},
		{telemetry.Int(128), ua.TypeIDSByte, nil, "outside -128..127"},
		{telemetry.Float(-3), ua.TypeIDInt16, int16(-3), ""},
		{telemetry.Float(2.5), ua.TypeIDInt16, nil, "an integer type takes no fraction"},
		{telemetry.Uint(math.MaxUint64), ua.TypeIDInt64, nil, "too large"},
		{telemetry.Int(math.MinInt64), ua.TypeIDInt64, int64(math.MinInt64), ""},
		{telemetry.Uint(70000), ua.TypeIDInt32, int32(70000), ""},
		{telemetry.String("12"), ua.TypeIDInt32, nil, "a number is needed"},
		{telemetry.Bool(true), ua.TypeIDInt32, nil, "a number is needed"},
		{telemetry.Int(255), ua.TypeIDByte, uint8(255), ""},
		{telemetry.Int(256), ua.TypeIDByte, nil, "outside 0..255"},
		{telemetry.Int(-1), ua.TypeIDUint16, nil, "no negative number"},
		{telemetry.Float(4e9), ua.TypeIDUint32, uint32(4e9), ""},
		{telemetry.Uint(math.MaxUint64), ua.TypeIDUint64, uint64(math.MaxUint64), ""},
		{telemetry.Float(math.NaN()), ua.TypeIDUint64, nil, "not a finite number"},
		{telemetry.Float(1.5), ua.TypeIDFloat, float32(1.5), ""},
		{telemetry.Int(7), ua.TypeIDFloat, float32(7), ""},
		{telemetry.Float(1e39), ua.TypeIDFloat, nil, "outside the range of a 32-bit float"},
		{telemetry.Uint(3), ua.TypeIDDouble, float64(3), ""},
		{telemetry.String("x"), ua.TypeIDDouble, nil, "a number is needed"},
		{telemetry.String("auto"), ua.TypeIDString, "auto", ""},
		{telemetry.Int(1), ua.TypeIDString, nil, "a string is needed"},
		{telemetry.String("2024-01-01"), ua.TypeIDDateTime, nil, "writes Boolean, integer, Float, Double and String nodes only"},
	}
	for _, c := range cases {
		got, err := toVariant(c.v, c.typ)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%v to %s: %v", c.v, typeName(c.typ), err)
		case c.err == "" && got.Value() != c.want:
			t.Errorf("%v to %s = %#v (%T), want %#v", c.v, typeName(c.typ), got.Value(), got.Value(), c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !errors.Is(err, collector.ErrValueType)):
			t.Errorf("%v to %s: error %v, want one with %q wrapping ErrValueType", c.v, typeName(c.typ), err, c.err)
		}
	}
}

// TestWriteSim writes simulator variables of several types and reads them
// back with ReadTag; a value of the wrong type is refused before anything
// is sent, a read-only variable is refused by the server, and a driver
// that is not connected says so.
func TestWriteSim(t *testing.T) {
	s := startSim(t, opcuasim.Options{ReadOnly: []string{"Total"}})
	d := newDriver(t, Config{URL: s.URL(), Tags: []Tag{
		{Name: "temp", Node: s.NodeID("Temperature")},
		{Name: "pressure", Node: s.NodeID("Pressure")},
		{Name: "counter", Node: s.NodeID("Counter"), Mode: ModeSubscribe},
		{Name: "level", Node: s.NodeID("Level")},
		{Name: "running", Node: s.NodeID("Running")},
		{Name: "mode", Node: s.NodeID("Mode")},
		{Name: "total", Node: s.NodeID("Total")},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Write(ctx, "temp", telemetry.Float(1)); !errors.Is(err, ErrNotConnected) {
		t.Errorf("write before connect: %v", err)
	}
	if _, err := d.ReadTag(ctx, "temp"); !errors.Is(err, ErrNotConnected) {
		t.Errorf("read before connect: %v", err)
	}
	connect(t, d)
	writes := []struct {
		tag  string
		v    telemetry.Value
		want telemetry.Value
	}{
		{"temp", telemetry.Int(30), telemetry.Float(30)},
		{"pressure", telemetry.Float(2.5), telemetry.Float32(2.5)},
		{"counter", telemetry.Float(12), telemetry.Uint(12)},
		{"level", telemetry.Int(-7), telemetry.Int(-7)},
		{"running", telemetry.Bool(false), telemetry.Bool(false)},
		{"mode", telemetry.String("manual"), telemetry.String("manual")},
	}
	for _, w := range writes {
		if err := d.Write(ctx, w.tag, w.v); err != nil {
			t.Fatalf("write %s: %v", w.tag, err)
		}
		p, err := d.ReadTag(ctx, w.tag)
		if err != nil || p.Value != w.want || !p.Quality.IsGood() || p.Tag != w.tag {
			t.Errorf("%s read back %+v (%v), %v; want %v", w.tag, p, p.Value.Kind(), err, w.want)
		}
	}
	for _, w := range []struct {
		tag string
		v   telemetry.Value
	}{
		{"level", telemetry.Float(1.5)},
		{"level", telemetry.Int(40000)},
		{"counter", telemetry.Int(-1)},
		{"temp", telemetry.String("hot")},
	} {
		if err := d.Write(ctx, w.tag, w.v); !errors.Is(err, collector.ErrValueType) {
			t.Errorf("write %s = %v: %v, want ErrValueType", w.tag, w.v, err)
		}
	}
	if p, _ := d.ReadTag(ctx, "level"); p.Value != telemetry.Int(-7) {
		t.Errorf("a refused write changed level: %v", p.Value)
	}
	err := d.Write(ctx, "total", telemetry.Int(1))
	if !errors.Is(err, ua.StatusBadUserAccessDenied) || !strings.Contains(err.Error(), "write total: the server refused the write") {
		t.Errorf("write to a read-only variable: %v", err)
	}
	if err := d.Write(ctx, "nope", telemetry.Int(1)); err == nil || !strings.Contains(err.Error(), `no tag "nope"`) {
		t.Errorf("write to an unknown tag: %v", err)
	}
}

// TestWriteWhilePolling writes and reads tags from other goroutines while
// the collector polls and subscribes through the same driver (run with
// -race).
func TestWriteWhilePolling(t *testing.T) {
	s := startSim(t, opcuasim.Options{})
	d := newDriver(t, Config{URL: s.URL(), Timeout: time.Second, Tags: []Tag{
		{Name: "temp", Node: s.NodeID("Temperature")},
		{Name: "level", Node: s.NodeID("Level")},
		{Name: "counter", Node: s.NodeID("Counter"), Mode: ModeSubscribe},
	}})
	var out sink
	c := collector.New([]collector.Device{{Name: "dev", Driver: d, BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond}}, out.put, testLog(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	out.waitFor(t, "temp good", func(p telemetry.Point) bool { return p.Tag == "temp" && p.Quality.IsGood() })
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
				if err := d.Write(wctx, "level", telemetry.Int(int64(g*100+i))); err != nil {
					errs <- err
				}
				if _, err := d.ReadTag(wctx, "temp"); err != nil {
					errs <- err
				}
				wcancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	out.waitFor(t, "level polled after the writes", func(p telemetry.Point) bool {
		return p.Tag == "level" && p.Quality.IsGood() && p.Value.AsInt() >= 24 && p.Value.AsInt()%100 == 24
	})
}

// TestNodeOPCUAWrite writes node-opcua variables of each writable type
// (node-opcua refuses a value whose variant type differs from the
// variable's, so a wrong conversion would fail here) and reads them back.
func TestNodeOPCUAWrite(t *testing.T) {
	p := startPeer(t, "")
	const nsu = "nsu=urn:fieldgate:peer;s="
	names := []string{"SetInt16", "SetByte", "SetUInt32", "SetFloat", "SetDouble", "SetBool", "SetString", "SetInt64", "ReadOnly"}
	var tags []Tag
	for _, n := range names {
		tags = append(tags, Tag{Name: n, Node: nsu + n})
	}
	d := newDriver(t, Config{URL: p.url, Tags: tags})
	connect(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	writes := []struct {
		tag  string
		v    telemetry.Value
		want telemetry.Value
	}{
		{"SetInt16", telemetry.Int(-300), telemetry.Int(-300)},
		{"SetByte", telemetry.Uint(200), telemetry.Uint(200)},
		{"SetUInt32", telemetry.Float(4e9), telemetry.Uint(4e9)},
		{"SetFloat", telemetry.Float(0.5), telemetry.Float32(0.5)},
		{"SetDouble", telemetry.Int(-2), telemetry.Float(-2)},
		{"SetBool", telemetry.Int(1), telemetry.Bool(true)},
		{"SetString", telemetry.String("recipe 7"), telemetry.String("recipe 7")},
		{"SetInt64", telemetry.Int(-5_000_000_000), telemetry.Int(-5_000_000_000)},
	}
	for _, w := range writes {
		if err := d.Write(ctx, w.tag, w.v); err != nil {
			t.Errorf("write %s: %v", w.tag, err)
			continue
		}
		got, err := d.ReadTag(ctx, w.tag)
		if err != nil || got.Value != w.want || !got.Quality.IsGood() {
			t.Errorf("%s read back %v (%v, %v), %v; want %v", w.tag, got.Value, got.Value.Kind(), got.Quality, err, w.want)
		}
	}
	if err := d.Write(ctx, "SetInt16", telemetry.Float(0.5)); !errors.Is(err, collector.ErrValueType) {
		t.Errorf("a fraction to Int16: %v", err)
	}
	if err := d.Write(ctx, "SetByte", telemetry.Int(-1)); !errors.Is(err, collector.ErrValueType) {
		t.Errorf("-1 to Byte: %v", err)
	}
	err := d.Write(ctx, "ReadOnly", telemetry.Int(8))
	var code ua.StatusCode
	if !errors.As(err, &code) || (code != ua.StatusBadNotWritable && code != ua.StatusBadUserAccessDenied) {
		t.Errorf("write to a read-only variable: %v", err)
	}
	if got, err := d.ReadTag(ctx, "ReadOnly"); err != nil || got.Value != telemetry.Int(7) {
		t.Errorf("ReadOnly = %v, %v", got.Value, err)
	}
}
