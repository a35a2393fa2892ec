package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/telemetry"
)

func f64(f float64) *float64 { return &f }

// TestWriteTagCheck covers the value checks of every Modbus type at the
// edges of its range, before any request is made.
func TestWriteTagCheck(t *testing.T) {
	tag := func(typ modbus.Type, mod func(*modbus.Tag)) *writeTag {
		c := &modbus.Tag{Name: "t", Type: typ, Length: 2, Writable: true}
		if mod != nil {
			mod(c)
		}
		return modbusWriteTag(c, writeLimit(true, c.RateLimit, c.Min, c.Max, c.Verify))
	}
	scaled := func(c *modbus.Tag) { c.Scale, c.ValueOffset = f64(0.1), f64(-40) }
	for _, c := range []struct {
		t    *writeTag
		v    telemetry.Value
		code string
		want telemetry.Value // the value written, when ok
		msg  string
	}{
		{tag(modbus.TypeBool, nil), telemetry.Bool(true), "ok", telemetry.Bool(true), ""},
		{tag(modbus.TypeBool, nil), telemetry.Int(1), "wrong_type", telemetry.Value{}, "send true or false, not the number 1"},
		{tag(modbus.TypeString, nil), telemetry.String("abcd"), "ok", telemetry.String("abcd"), ""},
		{tag(modbus.TypeString, nil), telemetry.String("abcde"), "out_of_range", telemetry.Value{}, "5 bytes"},
		{tag(modbus.TypeString, nil), telemetry.Int(1), "wrong_type", telemetry.Value{}, "send text"},
		{tag(modbus.TypeInt16, nil), telemetry.Int(-32768), "ok", telemetry.Int(-32768), ""},
		{tag(modbus.TypeInt16, nil), telemetry.Int(32768), "out_of_range", telemetry.Value{}, "above 32767"},
		{tag(modbus.TypeInt16, nil), telemetry.Float(-7), "ok", telemetry.Int(-7), ""},
		{tag(modbus.TypeInt16, nil), telemetry.Float(-7.5), "wrong_type", telemetry.Value{}, "whole numbers"},
		{tag(modbus.TypeInt16, nil), telemetry.String("7"), "wrong_type", telemetry.Value{}, `not the string "7"`},
		{tag(modbus.TypeUint16, nil), telemetry.Int(-1), "out_of_range", telemetry.Value{}, "below 0"},
		{tag(modbus.TypeUint16, nil), telemetry.Bool(true), "wrong_type", telemetry.Value{}, "not the bool true"},
		{tag(modbus.TypeInt64, nil), telemetry.Uint(1 << 63), "out_of_range", telemetry.Value{}, "above 9223372036854775807"},
		{tag(modbus.TypeInt64, nil), telemetry.Uint(1<<63 - 1), "ok", telemetry.Uint(1<<63 - 1), ""},
		{tag(modbus.TypeInt64, nil), telemetry.Float(1e19), "out_of_range", telemetry.Value{}, "above"},
		{tag(modbus.TypeUint64, nil), telemetry.Uint(1<<64 - 1), "ok", telemetry.Uint(1<<64 - 1), ""},
		{tag(modbus.TypeUint64, nil), telemetry.Float(1e19), "ok", telemetry.Uint(1e19), ""},
		{tag(modbus.TypeUint64, nil), telemetry.Float(1e20), "out_of_range", telemetry.Value{}, "beyond"},
		{tag(modbus.TypeBCD16, nil), telemetry.Int(10000), "out_of_range", telemetry.Value{}, "above 9999"},
		{tag(modbus.TypeFloat32, nil), telemetry.Float(1e39), "out_of_range", telemetry.Value{}, "above"},
		{tag(modbus.TypeFloat32, nil), telemetry.Int(3), "ok", telemetry.Int(3), ""},
		{tag(modbus.TypeFloat64, nil), telemetry.Float(1e300), "ok", telemetry.Float(1e300), ""},
		// Scaled: engineering units, raw int16 -32768..32767 → -3316.8..3236.7.
		{tag(modbus.TypeInt16, scaled), telemetry.Float(12.35), "ok", telemetry.Float(12.35), ""},
		{tag(modbus.TypeInt16, scaled), telemetry.Float(3236.8), "out_of_range", telemetry.Value{}, "above 3236.7"},
		{tag(modbus.TypeUint16, func(c *modbus.Tag) { c.Min, c.Max = f64(10), f64(20) }), telemetry.Int(21), "out_of_range", telemetry.Value{}, "21 is above max 20"},
		{tag(modbus.TypeUint16, func(c *modbus.Tag) { c.Min, c.Max = f64(10), f64(20) }), telemetry.Int(9), "out_of_range", telemetry.Value{}, "9 is below min 10"},
		{&writeTag{name: "ua", kind: kindAny, min: f64(0)}, telemetry.String("x"), "wrong_type", telemetry.Value{}, "takes numbers"},
		{&writeTag{name: "ua", kind: kindAny}, telemetry.String("x"), "ok", telemetry.String("x"), ""},
		{&writeTag{name: "ua", kind: kindAny, max: f64(5)}, telemetry.Float(5.5), "out_of_range", telemetry.Value{}, "above max 5"},
	} {
		got, r := c.t.check(c.v)
		if r.Code != c.code || !strings.Contains(r.Reason, c.msg) || r.OK() && !got.Equal(c.want) {
			t.Errorf("%s %v (%s): %s %q → %v; want %s %q → %v", c.t.typ, c.v, c.v.Kind(), r.Code, r.Reason, got, c.code, c.msg, c.want)
		}
	}
}

func TestWriteTagSame(t *testing.T) {
	i16 := modbusWriteTag(&modbus.Tag{Name: "t", Type: modbus.TypeInt16, Scale: f64(0.1)}, &writeTag{})
	f32 := modbusWriteTag(&modbus.Tag{Name: "t", Type: modbus.TypeFloat32}, &writeTag{})
	u16 := modbusWriteTag(&modbus.Tag{Name: "t", Type: modbus.TypeUint16}, &writeTag{})
	str := modbusWriteTag(&modbus.Tag{Name: "t", Type: modbus.TypeString, Length: 4}, &writeTag{})
	for _, c := range []struct {
		t         *writeTag
		got, want telemetry.Value
		same      bool
	}{
		{i16, telemetry.Float(12.3), telemetry.Float(12.34), true}, // half a raw step
		{i16, telemetry.Float(12.3), telemetry.Float(12.4), false},
		{f32, telemetry.Float32(0.1), telemetry.Float(0.1), true},
		{f32, telemetry.Float(0.1001), telemetry.Float(0.1), false},
		{u16, telemetry.Uint(7), telemetry.Int(7), true},
		{u16, telemetry.Uint(7), telemetry.Int(8), false},
		{str, telemetry.String("ab"), telemetry.String("ab\x00"), true},
		{str, telemetry.String("ab"), telemetry.String("abc"), false},
	} {
		if got := c.t.same(c.got, c.want); got != c.same {
			t.Errorf("%s: same(%v, %v) = %v", c.t.typ, c.got, c.want, got)
		}
	}
}

func TestRateLimitWindow(t *testing.T) {
	r := &rateLimit{n: 2, per: time.Minute}
	t0 := time.Unix(1000, 0)
	for i, c := range []struct {
		at   time.Duration
		want bool
	}{{0, true}, {time.Second, true}, {30 * time.Second, false}, {time.Minute, true}, {time.Minute + 500*time.Millisecond, false}, {time.Minute + time.Second, true}} {
		if ok, _ := r.allow(t0.Add(c.at)); ok != c.want {
			t.Errorf("write %d at %v: allowed %v, want %v", i, c.at, ok, c.want)
		}
	}
	if ok, wait := r.allow(t0.Add(time.Minute + 2*time.Second)); ok || wait != 58*time.Second {
		t.Errorf("over the limit: allowed %v, wait %v; want false, 58s", ok, wait)
	}
}
