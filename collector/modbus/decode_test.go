package modbus

import (
	"encoding/hex"
	"math"
	"strings"
	"testing"
	"time"

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
}

func TestDecodeEveryTypeAndOrder(t *testing.T) {
	for _, c := range orderCases {
		tg := &tag{typ: c.typ, order: c.order, count: c.typ.Registers(), bit: -1}
		got, ok := decode(tg, unhex(t, c.wire), "")
		if !ok || !got.Equal(c.want) {
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
		{"short", tag{typ: TypeFloat32, count: 2, bit: -1}, "3f 80", telemetry.Value{}, false},
		{"long", tag{typ: TypeUint16, count: 1, bit: -1}, "00 01 00 02", telemetry.Value{}, false},
	}
	for _, c := range cases {
		c.tag.order = max(c.tag.order, ABCD)
		got, ok := decode(&c.tag, unhex(t, c.wire), "")
		if ok != c.ok || !got.Equal(c.want) {
			t.Errorf("%s: decode = %v, %v; want %v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestDecodeStringReusesPrevious(t *testing.T) {
	tg := &tag{typ: TypeString, count: 2, bit: -1, order: ABCD}
	regs := unhex(t, "41 42 43 00")
	prev := strings.Clone("ABC")
	allocs := testing.AllocsPerRun(100, func() {
		v, _ := decode(tg, regs, prev)
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
		ty := Type(typ%uint8(TypeString)) + 1
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
		v, ok := decode(tg, data, "")
		if ok != (len(data) == 2*int(count)) {
			t.Fatalf("decode ok = %v for %d bytes of %s", ok, len(data), ty)
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
			if !p.Quality.IsGood() && p.Quality != telemetry.Bad|telemetry.ReasonDecode {
				t.Fatalf("point %+v", p)
			}
		}
	})
}

func fuzzDriver(t *testing.T) *Driver {
	t.Helper()
	off := func(o uint16) *uint16 { return &o }
	bit := func(b uint8) *uint8 { return &b }
	cfg := Config{URL: "tcp://127.0.0.1", Poll: time.Second, Tags: []Tag{
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
	for _, p := range pts {
		if !p.Quality.IsGood() {
			b.Fatalf("point %+v", p)
		}
	}
}
