package modbus

import (
	"encoding/hex"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/telemetry"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The byte patterns were computed with Python's struct module, then
// rearranged per order: CDAB reverses the registers, BADC swaps the bytes
// of each register, DCBA reverses all bytes.
var orderCases = []struct {
	typ   Type
	order Order
	wire  string
	want  telemetry.Value
}{
	{TypeInt16, ABCD, "ff fe", telemetry.Int(-2)},
	{TypeInt16, CDAB, "ff fe", telemetry.Int(-2)},
	{TypeInt16, BADC, "fe ff", telemetry.Int(-2)},
	{TypeInt16, DCBA, "fe ff", telemetry.Int(-2)},
	{TypeUint16, ABCD, "12 34", telemetry.Uint(0x1234)},
	{TypeUint16, CDAB, "12 34", telemetry.Uint(0x1234)},
	{TypeUint16, BADC, "34 12", telemetry.Uint(0x1234)},
	{TypeUint16, DCBA, "34 12", telemetry.Uint(0x1234)},
	{TypeInt32, ABCD, "f8 a4 32 eb", telemetry.Int(-123456789)},
	{TypeInt32, CDAB, "32 eb f8 a4", telemetry.Int(-123456789)},
	{TypeInt32, BADC, "a4 f8 eb 32", telemetry.Int(-123456789)},
	{TypeInt32, DCBA, "eb 32 a4 f8", telemetry.Int(-123456789)},
	{TypeUint32, ABCD, "de ad be ef", telemetry.Uint(0xDEADBEEF)},
	{TypeUint32, CDAB, "be ef de ad", telemetry.Uint(0xDEADBEEF)},
	{TypeUint32, BADC, "ad de ef be", telemetry.Uint(0xDEADBEEF)},
	{TypeUint32, DCBA, "ef be ad de", telemetry.Uint(0xDEADBEEF)},
	{TypeInt64, ABCD, "ee dd ef 0b 82 16 7e eb", telemetry.Int(-1234567890123456789)},
	{TypeInt64, CDAB, "7e eb 82 16 ef 0b ee dd", telemetry.Int(-1234567890123456789)},
	{TypeInt64, BADC, "dd ee 0b ef 16 82 eb 7e", telemetry.Int(-1234567890123456789)},
	{TypeInt64, DCBA, "eb 7e 16 82 0b ef dd ee", telemetry.Int(-1234567890123456789)},
	{TypeUint64, ABCD, "01 02 03 04 05 06 07 08", telemetry.Uint(0x0102030405060708)},
	{TypeUint64, CDAB, "07 08 05 06 03 04 01 02", telemetry.Uint(0x0102030405060708)},
	{TypeUint64, BADC, "02 01 04 03 06 05 08 07", telemetry.Uint(0x0102030405060708)},
	{TypeUint64, DCBA, "08 07 06 05 04 03 02 01", telemetry.Uint(0x0102030405060708)},
	{TypeFloat32, ABCD, "42 f6 e9 79", telemetry.Float32(123.456)},
	{TypeFloat32, CDAB, "e9 79 42 f6", telemetry.Float32(123.456)},
	{TypeFloat32, BADC, "f6 42 79 e9", telemetry.Float32(123.456)},
	{TypeFloat32, DCBA, "79 e9 f6 42", telemetry.Float32(123.456)},
	{TypeFloat64, ABCD, "40 5e dd 2f 1a 9f be 77", telemetry.Float(123.456)},
	{TypeFloat64, CDAB, "be 77 1a 9f dd 2f 40 5e", telemetry.Float(123.456)},
	{TypeFloat64, BADC, "5e 40 2f dd 9f 1a 77 be", telemetry.Float(123.456)},
	{TypeFloat64, DCBA, "77 be 9f 1a 2f dd 5e 40", telemetry.Float(123.456)},
	// BCD: one decimal digit per nibble; bcd32's words follow the order as uint32's do.
	{TypeBCD16, ABCD, "12 34", telemetry.Uint(1234)},
	{TypeBCD16, CDAB, "12 34", telemetry.Uint(1234)},
	{TypeBCD16, BADC, "34 12", telemetry.Uint(1234)},
	{TypeBCD16, DCBA, "34 12", telemetry.Uint(1234)},
	{TypeBCD32, ABCD, "12 34 56 78", telemetry.Uint(12345678)},
	{TypeBCD32, CDAB, "56 78 12 34", telemetry.Uint(12345678)},
	{TypeBCD32, BADC, "34 12 78 56", telemetry.Uint(12345678)},
	{TypeBCD32, DCBA, "78 56 34 12", telemetry.Uint(12345678)},
	{TypeBCD16, ABCD, "99 99", telemetry.Uint(9999)},
	{TypeBCD32, CDAB, "00 01 00 00", telemetry.Uint(1)},
	{TypeBCD32, ABCD, "99 99 99 99", telemetry.Uint(99999999)},
}

func TestDecodeEveryTypeAndOrder(t *testing.T) {
	for _, c := range orderCases {
		tg := &tag{typ: c.typ, order: c.order, count: c.typ.Registers(), bit: -1}
		got, q := decodeValue(tg, unhex(t, c.wire), "")
		if ok := q.IsGood(); !ok || !got.Equal(c.want) {
			t.Errorf("decode %s %s % s = %v (%v), want %v", c.typ, c.order, c.wire, got, ok, c.want)
		}
		enc, err := AppendRegisters(nil, c.typ, c.order, 0, c.want)
		if err != nil || hex.EncodeToString(enc) != strings.ReplaceAll(c.wire, " ", "") {
			t.Errorf("AppendRegisters %s %s %v = % x, %v; want %s", c.typ, c.order, c.want, enc, err, c.wire)
		}
	}
}

func TestDecodeBoolsStringsAndScale(t *testing.T) {
	cases := []struct {
		name string
		tag  tag
		wire string
		want telemetry.Value
		ok   bool
	}{
		{"bit 0", tag{typ: TypeBool, count: 1, bit: 0}, "00 01", telemetry.Bool(true), true},
		{"bit 13", tag{typ: TypeBool, count: 1, bit: 13}, "20 00", telemetry.Bool(true), true},
		{"bit 13 clear", tag{typ: TypeBool, count: 1, bit: 13}, "df ff", telemetry.Bool(false), true},
		{"bit 15", tag{typ: TypeBool, count: 1, bit: 15}, "80 00", telemetry.Bool(true), true},
		{"bool register", tag{typ: TypeBool, count: 1, bit: -1}, "01 00", telemetry.Bool(true), true},
		{"string", tag{typ: TypeString, count: 4, bit: -1}, "50 4e 2d 34 37 31 31 00", telemetry.String("PN-4711"), true},
		{"string spaces", tag{typ: TypeString, count: 3, bit: -1}, "41 42 20 20 20 20", telemetry.String("AB"), true},
		{"string nul then junk", tag{typ: TypeString, count: 3, bit: -1}, "41 00 ff ff ff ff", telemetry.String("A"), true},
		{"string swapped", tag{typ: TypeString, order: BADC, count: 2, bit: -1}, "4e 50 34 2d", telemetry.String("PN-4"), true},
		{"string empty", tag{typ: TypeString, count: 2, bit: -1}, "00 00 00 00", telemetry.String(""), true},
		{"scale uint16", tag{typ: TypeUint16, count: 1, bit: -1, scaled: true, scale: 0.1}, "03 e8", telemetry.Float(100), true},
		{"scale and offset int16", tag{typ: TypeInt16, count: 1, bit: -1, scaled: true, scale: 2, add: -10}, "ff fb", telemetry.Float(-20), true},
		{"offset only float32", tag{typ: TypeFloat32, count: 2, bit: -1, scaled: true, scale: 1, add: 0.5}, "3f 80 00 00", telemetry.Float(1.5), true},
		{"scale uint64", tag{typ: TypeUint64, count: 4, bit: -1, scaled: true, scale: 0.5}, "00 00 00 00 00 00 00 03", telemetry.Float(1.5), true},
		// scale 0.1 divides by 10, so 3 reads as the double nearest 0.3, not 0.30000000000000004.
		{"scale by division", tag{typ: TypeUint16, count: 1, bit: -1, scaled: true, scale: 0.1, div: 10}, "00 03", telemetry.Float(0.3), true},
		{"scale bcd16", tag{typ: TypeBCD16, count: 1, bit: -1, scaled: true, scale: 0.1, div: 10}, "12 34", telemetry.Float(123.4), true},
		{"scale bcd32 CDAB", tag{typ: TypeBCD32, order: CDAB, count: 2, bit: -1, scaled: true, scale: 1, add: -1}, "00 00 00 10", telemetry.Float(99999), true},
		{"bcd16 nibble a", tag{typ: TypeBCD16, count: 1, bit: -1}, "12 3a", telemetry.Value{}, false},
		{"bcd16 nibble f high", tag{typ: TypeBCD16, count: 1, bit: -1}, "f0 00", telemetry.Value{}, false},
		{"bcd32 nibble in low word", tag{typ: TypeBCD32, count: 2, bit: -1}, "00 00 00 0b", telemetry.Value{}, false},
		{"bcd32 scaled invalid", tag{typ: TypeBCD32, count: 2, bit: -1, scaled: true, scale: 2}, "c0 00 00 00", telemetry.Value{}, false},
		{"short", tag{typ: TypeFloat32, count: 2, bit: -1}, "3f 80", telemetry.Value{}, false},
		{"long", tag{typ: TypeUint16, count: 1, bit: -1}, "00 01 00 02", telemetry.Value{}, false},
	}
	for _, c := range cases {
		c.tag.order = max(c.tag.order, ABCD)
		got, q := decodeValue(&c.tag, unhex(t, c.wire), "")
		if ok := q.IsGood(); ok != c.ok || !got.Equal(c.want) {
			t.Errorf("%s: decode = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestDecodeBadIsDecodeReason(t *testing.T) {
	tg := &tag{typ: TypeBCD16, order: ABCD, count: 1, bit: -1}
	if v, q := decodeValue(tg, unhex(t, "00 0f"), ""); q != telemetry.Bad|telemetry.ReasonDecode || !v.IsNone() {
		t.Errorf("bcd16 0x000f = %v, %v; want no value, bad:decode", v, q)
	}
	if v, q := decodeValue(tg, unhex(t, "00"), ""); q != telemetry.Bad|telemetry.ReasonDecode || !v.IsNone() {
		t.Errorf("one byte = %v, %v; want no value, bad:decode", v, q)
	}
}

func TestDecodeClamp(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	const clamped = telemetry.Uncertain | telemetry.ReasonClamped
	cases := []struct {
		name  string
		tag   Tag
		wire  string
		want  telemetry.Value
		wantQ telemetry.Quality
	}{
		{"scaled inside", Tag{Type: TypeUint16, Scale: f(0.1), Clamp: &Clamp{Min: f(0), Max: f(100)}}, "03 e8", telemetry.Float(100), telemetry.Good},
		{"scaled above", Tag{Type: TypeUint16, Scale: f(0.1), Clamp: &Clamp{Min: f(0), Max: f(100)}}, "03 e9", telemetry.Float(100), clamped},
		{"after value_offset", Tag{Type: TypeInt16, ValueOffset: f(-40), Clamp: &Clamp{Min: f(-20)}}, "00 0a", telemetry.Float(-20), clamped},
		{"min only, inside", Tag{Type: TypeInt16, Scale: f(1), Clamp: &Clamp{Min: f(-20)}}, "7f ff", telemetry.Float(32767), telemetry.Good},
		{"float64 below", Tag{Type: TypeFloat64, Clamp: &Clamp{Min: f(-1.5), Max: f(1.5)}}, "c0 00 00 00 00 00 00 00", telemetry.Float(-1.5), clamped},
		{"float32 keeps its kind", Tag{Type: TypeFloat32, Clamp: &Clamp{Max: f(100.7)}}, "42 f6 e9 79", telemetry.Float32(100.7), clamped},
		{"float32 inside", Tag{Type: TypeFloat32, Clamp: &Clamp{Max: f(200)}}, "42 f6 e9 79", telemetry.Float32(123.456), telemetry.Good},
		{"float32 NaN passes", Tag{Type: TypeFloat32, Clamp: &Clamp{Min: f(0), Max: f(1)}}, "7f c0 00 00", telemetry.Float32(float32(math.NaN())), telemetry.Good},
		{"float32 +Inf", Tag{Type: TypeFloat32, Clamp: &Clamp{Min: f(0), Max: f(1)}}, "7f 80 00 00", telemetry.Float32(1), clamped},
		// Unscaled integers clamp in their own kind, to the whole numbers in the range.
		{"int16 above", Tag{Type: TypeInt16, Clamp: &Clamp{Min: f(-10.5), Max: f(99.9)}}, "00 64", telemetry.Int(99), clamped},
		{"int16 below", Tag{Type: TypeInt16, Clamp: &Clamp{Min: f(-10.5), Max: f(99.9)}}, "ff f5", telemetry.Int(-10), clamped},
		{"int16 bound", Tag{Type: TypeInt16, Clamp: &Clamp{Min: f(-10.5), Max: f(99.9)}}, "ff f6", telemetry.Int(-10), telemetry.Good},
		{"int64 min beyond the type", Tag{Type: TypeInt64, Clamp: &Clamp{Min: f(-1e300)}}, "80 00 00 00 00 00 00 00", telemetry.Int(math.MinInt64), telemetry.Good},
		{"uint16 negative min", Tag{Type: TypeUint16, Clamp: &Clamp{Min: f(-5), Max: f(1000)}}, "00 00", telemetry.Uint(0), telemetry.Good},
		{"uint32 above", Tag{Type: TypeUint32, Clamp: &Clamp{Max: f(1000)}}, "de ad be ef", telemetry.Uint(1000), clamped},
		{"uint64 huge max", Tag{Type: TypeUint64, Clamp: &Clamp{Min: f(1), Max: f(1e300)}}, "ff ff ff ff ff ff ff ff", telemetry.Uint(math.MaxUint64), telemetry.Good},
		{"uint64 below", Tag{Type: TypeUint64, Clamp: &Clamp{Min: f(1), Max: f(1e300)}}, "00 00 00 00 00 00 00 00", telemetry.Uint(1), clamped},
		{"bcd16 above", Tag{Type: TypeBCD16, Clamp: &Clamp{Max: f(5000)}}, "98 76", telemetry.Uint(5000), clamped},
		{"bcd16 invalid stays bad", Tag{Type: TypeBCD16, Clamp: &Clamp{Max: f(5000)}}, "98 7a", telemetry.Value{}, telemetry.Bad | telemetry.ReasonDecode},
	}
	lim := limits{maxGap: 10, maxRegisters: 125, maxBits: 2000}
	for _, c := range cases {
		c.tag.Name, c.tag.Table, c.tag.Offset = "t", HoldingRegister, u16(0)
		tg, err := resolve(&c.tag, lim)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, q := decodeValue(&tg, unhex(t, c.wire), "")
		if !got.Equal(c.want) || q != c.wantQ {
			t.Errorf("%s: decodeValue = %v (%v), %v; want %v (%v), %v", c.name, got, got.Kind(), q, c.want, c.want.Kind(), c.wantQ)
		}
	}
}

func TestResolveRejectsBadClampAndReport(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	lim := limits{maxGap: 10, maxRegisters: 125, maxBits: 2000}
	for name, ct := range map[string]Tag{
		"min above max":              {Type: TypeFloat32, Clamp: &Clamp{Min: f(2), Max: f(1)}},
		"NaN":                        {Type: TypeFloat32, Clamp: &Clamp{Min: f(math.NaN())}},
		"bool":                       {Type: TypeBool, Clamp: &Clamp{Max: f(1)}},
		"string":                     {Type: TypeString, Length: 2, Clamp: &Clamp{Max: f(1)}},
		"no whole number":            {Type: TypeInt16, Clamp: &Clamp{Min: f(0.2), Max: f(0.8)}},
		"negative range on unsigned": {Type: TypeUint16, Clamp: &Clamp{Min: f(-5), Max: f(-1)}},
		"always with deadband":       {Type: TypeUint16, Report: ReportAlways, Deadband: Deadband{Value: 1}},
	} {
		ct.Name, ct.Table, ct.Offset = "t", HoldingRegister, u16(0)
		if _, err := resolve(&ct, lim); err == nil {
			t.Errorf("%s: resolve accepted %+v", name, ct)
		}
	}
	// A scaled tag clamps as a float: a fractional range is fine.
	ok := Tag{Name: "t", Table: HoldingRegister, Offset: u16(0), Type: TypeInt16, Scale: f(0.1), Clamp: &Clamp{Min: f(0.2), Max: f(0.8)}}
	if _, err := resolve(&ok, lim); err != nil {
		t.Errorf("scaled fractional clamp: %v", err)
	}
}

func TestTagInfoFilter(t *testing.T) {
	lim := limits{maxGap: 10, maxRegisters: 125, maxBits: 2000}
	cases := []struct {
		name string
		tag  Tag
		want collector.Filter
	}{
		{"default reports always", Tag{}, collector.Filter{}},
		{"max_silence alone reports always", Tag{MaxSilence: time.Minute}, collector.Filter{}},
		{"always", Tag{Report: ReportAlways, MaxSilence: time.Minute}, collector.Filter{}},
		{"change", Tag{Report: ReportChange}, collector.Filter{OnChange: true}},
		{"deadband implies change", Tag{Deadband: Deadband{Value: 0.5}, MaxSilence: time.Minute},
			collector.Filter{OnChange: true, Deadband: 0.5, MaxSilence: time.Minute}},
		{"percent", Tag{Report: ReportChange, Deadband: Deadband{Value: 2, Percent: true}},
			collector.Filter{OnChange: true, Deadband: 2, Percent: true}},
		{"zero deadband, change", Tag{Report: ReportChange, Deadband: Deadband{Value: 0, Percent: true}, MaxSilence: time.Hour},
			collector.Filter{OnChange: true, Percent: true, MaxSilence: time.Hour}},
	}
	for _, c := range cases {
		c.tag.Name, c.tag.Table, c.tag.Offset, c.tag.Unit, c.tag.Description = "t", HoldingRegister, u16(0), "bar", "line pressure"
		tg, err := resolve(&c.tag, lim)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want := collector.TagInfo{Name: "t", Unit: "bar", Filter: c.want}
		if got := tg.info(); got != want {
			t.Errorf("%s: info() = %+v, want %+v", c.name, got, want)
		}
		if tg.desc != "line pressure" {
			t.Errorf("%s: description %q not kept", c.name, tg.desc)
		}
	}
}

func TestDecodeStringReusesPrevious(t *testing.T) {
	tg := &tag{typ: TypeString, count: 2, bit: -1, order: ABCD}
	regs := unhex(t, "41 42 43 00")
	prev := strings.Clone("ABC")
	allocs := testing.AllocsPerRun(100, func() {
		v, _ := decodeValue(tg, regs, prev)
		if v.AsString() != "ABC" {
			t.Fatal(v)
		}
	})
	if allocs != 0 {
		t.Errorf("decoding an unchanged string allocated %.0f times", allocs)
	}
}

func TestAppendRegistersRejectsOutOfRange(t *testing.T) {
	for _, c := range []struct {
		typ Type
		v   telemetry.Value
	}{
		{TypeInt16, telemetry.Int(40000)},
		{TypeUint16, telemetry.Int(-1)},
		{TypeUint16, telemetry.Uint(70000)},
		{TypeInt32, telemetry.Float(1.5)},
		{TypeUint64, telemetry.Float(-3)},
		{TypeInt64, telemetry.Uint(math.MaxUint64)},
		{TypeBCD16, telemetry.Uint(10000)},
		{TypeBCD16, telemetry.Int(-1)},
		{TypeBCD16, telemetry.Float(12.5)},
		{TypeBCD32, telemetry.Uint(100000000)},
		{TypeBCD32, telemetry.Float(1e8)},
		{TypeBCD32, telemetry.Float(-1)},
	} {
		if _, err := AppendRegisters(nil, c.typ, ABCD, 0, c.v); err == nil {
			t.Errorf("AppendRegisters(%s, %v) did not fail", c.typ, c.v)
		}
	}
	if _, err := AppendRegisters(nil, TypeString, ABCD, 2, telemetry.String("12345")); err == nil {
		t.Error("a 5-byte string fit 2 registers")
	}
}

// FuzzDecodeRegisters decodes arbitrary response data with a plan of
// overlapping tags of every type: no panic, every point Good or Bad|decode,
// and whole numbers encode back to the bytes they came from.
func FuzzDecodeRegisters(f *testing.F) {
	// Real frames' data: a holding-register response from the simulator's
	// animated block and the byte patterns of the order table.
	f.Add(unhex(f, "00 00 00 2a 42 f6 e9 79 e9 79 42 f6 00 c8 00 2a 00 01 00 00 52 43 50 2d 30 30 30 00"), uint8(TypeFloat32), uint8(ABCD))
	for _, c := range orderCases {
		f.Add(unhex(f, c.wire), uint8(c.typ), uint8(c.order))
	}
	f.Add([]byte{}, uint8(TypeString), uint8(DCBA))
	f.Fuzz(func(t *testing.T, data []byte, typ, order uint8) {
		ty := Type(typ%uint8(TypeBCD32)) + 1
		o := Order(order%4) + 1
		count := ty.Registers()
		if ty == TypeBool {
			count = 1
		}
		if ty == TypeString {
			count = uint16(min(len(data)/2, MaxRegistersPerRequest))
			if count == 0 {
				count = 1
			}
		}
		tg := &tag{typ: ty, order: o, count: count, bit: int8(order % 16)}
		v, q := decodeValue(tg, data, "")
		ok := q.IsGood()
		wantOK := len(data) == 2*int(count)
		if wantOK && (ty == TypeBCD16 || ty == TypeBCD32) {
			for _, c := range data {
				wantOK = wantOK && c>>4 <= 9 && c&0xF <= 9
			}
		}
		if ok != wantOK || (!ok && (q != telemetry.Bad|telemetry.ReasonDecode || !v.IsNone())) {
			t.Fatalf("decode %s % x = %v, %v; want ok %v", ty, data, v, q, wantOK)
		}
		if ok && (v.Kind() == telemetry.KindInt || v.Kind() == telemetry.KindUint) {
			enc, err := AppendRegisters(nil, ty, o, 0, v)
			if err != nil || string(enc) != string(data) {
				t.Fatalf("%s %s: % x decoded to %v, encodes to % x (%v)", ty, o, data, v, enc, err)
			}
		}
		// The same bytes as a whole response to a plan of overlapping tags.
		d := fuzzDriver(t)
		g := &d.groups[0]
		pts := make([]telemetry.Point, len(g.tags))
		for ri := range g.reqs {
			d.decodeRequest(0, &g.reqs[ri], data, pts, time.Unix(0, 0))
		}
		for _, p := range pts {
			switch p.Quality {
			case telemetry.Good, telemetry.Bad | telemetry.ReasonDecode:
			case telemetry.Uncertain | telemetry.ReasonClamped:
				if f := p.Value.AsFloat(); f < -100 || f > 100 {
					t.Fatalf("clamped point %+v outside [-100, 100]", p)
				}
			default:
				t.Fatalf("point %+v", p)
			}
		}
	})
}

func fuzzDriver(t *testing.T) *Driver {
	t.Helper()
	off := func(o uint16) *uint16 { return &o }
	bit := func(b uint8) *uint8 { return &b }
	fl := func(v float64) *float64 { return &v }
	cfg := Config{URL: "tcp://127.0.0.1", Poll: time.Second, Tags: []Tag{
		{Name: "bcd", Table: HoldingRegister, Offset: off(4), Type: TypeBCD32, Order: CDAB},
		{Name: "bcd16c", Table: HoldingRegister, Offset: off(5), Type: TypeBCD16, Clamp: &Clamp{Max: fl(100)}},
		{Name: "i16c", Table: HoldingRegister, Offset: off(6), Type: TypeInt16, Clamp: &Clamp{Min: fl(-100), Max: fl(100)}},
		{Name: "f32c", Table: HoldingRegister, Offset: off(0), Type: TypeFloat32, Scale: fl(0.5), Clamp: &Clamp{Min: fl(-100), Max: fl(100)}},
		{Name: "f32", Table: HoldingRegister, Offset: off(0), Type: TypeFloat32, Order: CDAB},
		{Name: "u16", Table: HoldingRegister, Offset: off(1), Type: TypeUint16},
		{Name: "i64", Table: HoldingRegister, Offset: off(1), Type: TypeInt64, Order: DCBA},
		{Name: "b3", Table: HoldingRegister, Offset: off(2), Type: TypeBool, Bit: bit(3)},
		{Name: "s", Table: HoldingRegister, Offset: off(3), Type: TypeString, Length: 6},
		{Name: "f64", Table: HoldingRegister, Offset: off(8), Type: TypeFloat64, Order: BADC},
	}}
	d, err := New("fuzz", cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// BenchmarkDecode decodes one 120-register response of mixed types, the
// way Read does after each request.
func BenchmarkDecode(b *testing.B) {
	var tags []Tag
	off := uint16(0)
	add := func(name string, typ Type, order Order, n uint16) {
		o := off
		tags = append(tags, Tag{Name: name, Table: HoldingRegister, Offset: &o, Type: typ, Order: order, Length: n})
		if n == 0 {
			n = typ.Registers()
		}
		off += n
	}
	scale := 0.1
	for i := range 10 {
		add("f32_"+string(rune('a'+i)), TypeFloat32, CDAB, 0) // 20
		add("i32_"+string(rune('a'+i)), TypeInt32, ABCD, 0)   // 20
		add("u16_"+string(rune('a'+i)), TypeUint16, ABCD, 0)  // 10
		add("i16_"+string(rune('a'+i)), TypeInt16, BADC, 0)   // 10
	}
	for i := range 5 {
		add("f64_"+string(rune('a'+i)), TypeFloat64, DCBA, 0) // 20
		add("u64_"+string(rune('a'+i)), TypeUint64, ABCD, 0)  // 20
	}
	add("name", TypeString, ABCD, 8) // 8
	tags[len(tags)-2].Scale = &scale
	lo, hi := -1e6, 1e6
	for i := range tags {
		if tags[i].Type == TypeInt32 || tags[i].Type == TypeFloat32 {
			tags[i].Clamp = &Clamp{Min: &lo, Max: &hi} // clamping costs a compare or two
		}
	}
	for i := range 16 {
		bit := uint8(i)
		o := off
		tags = append(tags, Tag{Name: "bit_" + string(rune('a'+i)), Table: HoldingRegister, Offset: &o, Type: TypeBool, Bit: &bit})
	}
	off += 1
	for i := range 11 {
		add("tail_"+string(rune('a'+i)), TypeUint16, ABCD, 0) // 11
	}
	if off != 120 {
		b.Fatalf("%d registers, want 120", off)
	}
	d, err := New("bench", Config{URL: "tcp://127.0.0.1", Poll: time.Second, Tags: tags}, discard())
	if err != nil {
		b.Fatal(err)
	}
	g := &d.groups[0]
	if len(g.reqs) != 1 || g.reqs[0].count != 120 {
		b.Fatalf("plan %v, want one 120-register request", d.Plan())
	}
	data := make([]byte, 240)
	for i := range data {
		data[i] = byte(i * 7)
	}
	copy(data[2*100:], "PN-4711 PN-4711 ")
	pts := make([]telemetry.Point, len(g.tags))
	now := time.Now()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		d.decodeRequest(0, &g.reqs[0], data, pts, now)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(g.reqs[0].count), "ns/register")
	for _, p := range pts {
		if !p.Quality.IsGood() && p.Quality != telemetry.Uncertain|telemetry.ReasonClamped {
			b.Fatalf("point %+v", p)
		}
	}
}
