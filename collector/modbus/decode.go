package modbus

import (
	"errors"
	"fmt"
	"math"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/telemetry"
)

// tag is a configured Tag resolved for reading: its table, the span of
// registers (or bits) it occupies, and how to turn them into a Value.
type tag struct {
	name   string
	unit   string
	desc   string // the configured description, for people (fieldgate read)
	table  Table
	offset uint16 // first register or bit, zero-based
	count  uint16 // registers (register tables) or bits (bit tables) read
	typ    Type
	order  Order
	bit    int8 // 0..15 for a bool taken from one bit of a register, else -1
	scaled bool // scale or value_offset set: the value is raw*scale + add as float64
	scale  float64
	div    float64 // 1/scale when that is a whole number (scale 0.1, 0.01, ...): raw/div rounds better than raw*scale
	add    float64
	clamp  clampRange       // applied after scale and value_offset
	filter collector.Filter // report-by-exception, handed to the collector by info
}

// end returns the offset one past the tag's last register or bit.
func (t *tag) end() int { return int(t.offset) + int(t.count) }

// bitAt reports bit i of packed coil or discrete-input data as Modbus sends
// it: bit 0 is the least significant bit of the first byte.
func bitAt(data []byte, i int) bool { return data[i>>3]>>(uint(i)&7)&1 != 0 }

// decodeValue turns the registers of one tag, exactly as they arrived (2
// bytes per register, high byte first), into the tag's value and quality:
// Good; Uncertain|ReasonClamped when the clamp replaced the value by one of
// its bounds; Bad|ReasonDecode, with no value, when regs does not have the
// tag's length or does not hold a value of its type (a BCD digit above 9).
// prev is the tag's previous string value: when a string tag reads the same
// text again decodeValue returns prev, so decoding never allocates. It is
// pure.
func decodeValue(t *tag, regs []byte, prev string) (telemetry.Value, telemetry.Quality) {
	const bad = telemetry.Bad | telemetry.ReasonDecode
	if len(regs) != 2*int(t.count) {
		return telemetry.Value{}, bad
	}
	switch t.typ {
	case TypeBool:
		r := uint16(regs[0])<<8 | uint16(regs[1])
		if t.bit >= 0 {
			return telemetry.Bool(r>>uint(t.bit)&1 != 0), telemetry.Good
		}
		return telemetry.Bool(r != 0), telemetry.Good
	case TypeString:
		return telemetry.String(decodeString(regs, t.order, prev)), telemetry.Good
	}
	u := ordered(regs, t.order)
	switch t.typ {
	case TypeBCD16, TypeBCD32:
		var ok bool
		if u, ok = fromBCD(u, 4*int(t.count)); !ok {
			return telemetry.Value{}, bad
		}
	}
	var v telemetry.Value
	switch {
	case t.scaled && t.div != 0:
		// 3/10 is the double nearest 0.3; 3*0.1 is 0.30000000000000004.
		v = telemetry.Float(rawFloat(t.typ, u)/t.div + t.add)
	case t.scaled:
		v = telemetry.Float(rawFloat(t.typ, u)*t.scale + t.add)
	case t.typ == TypeInt16:
		v = telemetry.Int(int64(int16(u)))
	case t.typ == TypeInt32:
		v = telemetry.Int(int64(int32(u)))
	case t.typ == TypeInt64:
		v = telemetry.Int(int64(u))
	case t.typ == TypeFloat32:
		v = telemetry.Float32(math.Float32frombits(uint32(u)))
	case t.typ == TypeFloat64:
		v = telemetry.Float(math.Float64frombits(u))
	case t.typ == TypeUint16, t.typ == TypeUint32, t.typ == TypeUint64, t.typ == TypeBCD16, t.typ == TypeBCD32:
		v = telemetry.Uint(u)
	default:
		return telemetry.Value{}, bad
	}
	if t.clamp.on {
		return t.clamp.apply(v)
	}
	return v, telemetry.Good
}

// rawFloat returns the numeric value of the big-endian bits u of type t.
func rawFloat(t Type, u uint64) float64 {
	switch t {
	case TypeInt16:
		return float64(int16(u))
	case TypeInt32:
		return float64(int32(u))
	case TypeInt64:
		return float64(int64(u))
	case TypeFloat32:
		return float64(math.Float32frombits(uint32(u)))
	case TypeFloat64:
		return math.Float64frombits(u)
	}
	return float64(u)
}

// wirePos returns where value byte i (0 = most significant) of an n-byte
// value sits on the wire in order o. For one register only the byte swap of
// BADC and DCBA applies; for two and four registers the pattern extends:
// ABCD big-endian, DCBA fully little-endian, BADC bytes swapped within each
// register, CDAB register order reversed.
func wirePos(i, n int, o Order) int {
	switch o {
	case BADC:
		return i ^ 1
	case CDAB:
		return n - 2 - i&^1 + i&1
	case DCBA:
		return n - 1 - i
	}
	return i
}

// ordered returns the registers in b (1, 2 or 4 of them) as a big-endian
// unsigned integer, undoing byte order o.
func ordered(b []byte, o Order) uint64 {
	n := len(b)
	if o == CDAB && n == 2 {
		o = ABCD // one register: there is no word order
	}
	var u uint64
	for i := range n {
		u = u<<8 | uint64(b[wirePos(i, n, o)])
	}
	return u
}

// putOrdered writes the low len(b) bytes of u into b in byte order o: the
// inverse of ordered.
func putOrdered(b []byte, u uint64, o Order) {
	n := len(b)
	if o == CDAB && n == 2 {
		o = ABCD
	}
	for i := range n {
		b[wirePos(i, n, o)] = byte(u >> (8 * uint(n-1-i)))
	}
}

// decodeString reads two characters per register, high byte first (low
// byte first for BADC and DCBA). The text ends at the first NUL; trailing
// spaces are trimmed. It returns prev when the text equals prev.
func decodeString(b []byte, o Order, prev string) string {
	var buf [2 * MaxRegistersPerRequest]byte
	s := buf[:0]
	swap := o == BADC || o == DCBA
	for i := 0; i+1 < len(b); i += 2 {
		hi, lo := b[i], b[i+1]
		if swap {
			hi, lo = lo, hi
		}
		s = append(s, hi, lo)
	}
	for i, c := range s {
		if c == 0 {
			s = s[:i]
			break
		}
	}
	for len(s) > 0 && s[len(s)-1] == ' ' {
		s = s[:len(s)-1]
	}
	if string(s) == prev {
		return prev
	}
	return string(s)
}

// errRange is wrapped by AppendRegisters when a value does not fit its type.
var errRange = errors.New("value out of range")

// AppendRegisters appends the registers that hold v as type t in byte
// order o to dst, in wire order (2 bytes per register, as a Modbus write
// sends them), and returns the extended slice. length is the register count
// of a string (padded with NULs). Bool is one register holding 0 or 1. BCD
// takes a whole number from 0 to 9999 (bcd16) or 99999999 (bcd32).
// It is the inverse of what Read decodes, without scale and value_offset.
func AppendRegisters(dst []byte, t Type, o Order, length uint16, v telemetry.Value) ([]byte, error) {
	var n int
	switch t {
	case TypeString:
		s := v.AsString()
		if len(s) > 2*int(length) {
			return dst, fmt.Errorf("string of %d bytes does not fit %d registers: %w", len(s), length, errRange)
		}
		start := len(dst)
		dst = append(dst, make([]byte, 2*int(length))...)
		copy(dst[start:], s)
		if o == BADC || o == DCBA {
			for i := start; i+1 < len(dst); i += 2 {
				dst[i], dst[i+1] = dst[i+1], dst[i]
			}
		}
		return dst, nil
	case TypeBool:
		if v.AsBool() {
			return append(dst, 0, 1), nil
		}
		return append(dst, 0, 0), nil
	default:
		n = 2 * int(t.Registers())
		if n == 0 {
			return dst, fmt.Errorf("cannot encode type %s", t)
		}
	}
	var u uint64
	var err error
	switch t {
	case TypeBCD16, TypeBCD32:
		u, err = bcdBits(t, v)
	default:
		u, err = rawBits(t, v)
	}
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = append(dst, make([]byte, n)...)
	putOrdered(dst[start:], u, o)
	return dst, nil
}

// rawBits returns v as the big-endian bits of type t, checking its range.
func rawBits(t Type, v telemetry.Value) (uint64, error) {
	switch t {
	case TypeFloat32:
		return uint64(math.Float32bits(float32(v.AsFloat()))), nil
	case TypeFloat64:
		return math.Float64bits(v.AsFloat()), nil
	}
	if v.Kind() == telemetry.KindFloat {
		if f := v.AsFloat(); f != math.Trunc(f) {
			return 0, fmt.Errorf("%v is not a whole number for type %s: %w", f, t, errRange)
		}
	}
	signed := t == TypeInt16 || t == TypeInt32 || t == TypeInt64
	bits := 16 * uint(t.Registers())
	if signed {
		var i int64
		switch {
		case v.Kind() == telemetry.KindUint && v.AsUint() > math.MaxInt64:
			return 0, fmt.Errorf("%v does not fit %s: %w", v, t, errRange)
		case v.Kind() == telemetry.KindFloat && (v.AsFloat() < math.MinInt64 || v.AsFloat() >= math.MaxInt64):
			return 0, fmt.Errorf("%v does not fit %s: %w", v, t, errRange)
		default:
			i = v.AsInt()
		}
		if bits < 64 && (i < -(1<<(bits-1)) || i >= 1<<(bits-1)) {
			return 0, fmt.Errorf("%d does not fit %s: %w", i, t, errRange)
		}
		return uint64(i) & (1<<bits - 1), nil
	}
	var u uint64
	switch {
	case v.Kind() == telemetry.KindInt && v.AsInt() < 0,
		v.Kind() == telemetry.KindFloat && (v.AsFloat() < 0 || v.AsFloat() >= math.MaxUint64):
		return 0, fmt.Errorf("%v does not fit %s: %w", v, t, errRange)
	default:
		u = v.AsUint()
	}
	if bits < 64 && u >= 1<<bits {
		return 0, fmt.Errorf("%d does not fit %s: %w", u, t, errRange)
	}
	return u, nil
}
