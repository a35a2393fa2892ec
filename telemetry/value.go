package telemetry

import (
	"math"
	"strconv"
)

// Kind says which field of a Value is set.
type Kind uint8

// The kinds a Value can hold. KindNone is the zero Value: no reading (for
// example a Bad-quality point whose device did not answer).
const (
	KindNone Kind = iota
	KindBool
	KindInt
	KindUint
	KindFloat
	KindString
	kindCount
)

var kindNames = [...]string{"none", "bool", "int", "uint", "float", "string"}

// String returns the kind's lowercase name.
func (k Kind) String() string {
	if k < kindCount {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Value is a typed reading: a tagged union of bool, int64, uint64, float64
// and string. The zero Value has KindNone. Values are small, comparable and
// safe to copy; none of the numeric kinds allocates.
type Value struct {
	kind Kind
	f32  bool   // a KindFloat read from a 32-bit float: printed with float32 precision
	bits uint64 // bool (0/1), int64, uint64 or float64 bits
	str  string
}

// Bool returns a Value holding b.
func Bool(b bool) Value {
	v := Value{kind: KindBool}
	if b {
		v.bits = 1
	}
	return v
}

// Int returns a Value holding i.
func Int(i int64) Value { return Value{kind: KindInt, bits: uint64(i)} }

// Uint returns a Value holding u.
func Uint(u uint64) Value { return Value{kind: KindUint, bits: u} }

// Float returns a Value holding f.
func Float(f float64) Value { return Value{kind: KindFloat, bits: math.Float64bits(f)} }

// Float32 returns a Value holding f. It is a KindFloat whose text forms
// (AppendText, JSON) use the shortest decimal that round-trips as a float32,
// so a register holding 0.1f reads as 0.1, not 0.10000000149011612.
func Float32(f float32) Value {
	return Value{kind: KindFloat, f32: true, bits: math.Float64bits(float64(f))}
}

// IsFloat32 reports whether v came from a 32-bit float (see Float32).
func (v Value) IsFloat32() bool { return v.f32 }

// String returns a Value holding s.
func String(s string) Value { return Value{kind: KindString, str: s} }

// Kind returns which kind of value v holds.
func (v Value) Kind() Kind { return v.kind }

// IsNone reports whether v holds no value.
func (v Value) IsNone() bool { return v.kind == KindNone }

// AsBool returns the value as a bool: the bool itself, or whether a number
// is non-zero, or whether a string is non-empty.
func (v Value) AsBool() bool {
	switch v.kind {
	case KindFloat:
		return v.AsFloat() != 0
	case KindString:
		return v.str != ""
	default:
		return v.bits != 0
	}
}

// AsInt returns the value as an int64; floats are truncated toward zero.
func (v Value) AsInt() int64 {
	switch v.kind {
	case KindFloat:
		return int64(v.AsFloat())
	case KindString:
		i, _ := strconv.ParseInt(v.str, 10, 64)
		return i
	default:
		return int64(v.bits)
	}
}

// AsUint returns the value as a uint64; floats are truncated toward zero.
func (v Value) AsUint() uint64 {
	switch v.kind {
	case KindFloat:
		return uint64(v.AsFloat())
	case KindString:
		u, _ := strconv.ParseUint(v.str, 10, 64)
		return u
	default:
		return v.bits
	}
}

// AsFloat returns the value as a float64.
func (v Value) AsFloat() float64 {
	switch v.kind {
	case KindFloat:
		return math.Float64frombits(v.bits)
	case KindInt:
		return float64(int64(v.bits))
	case KindUint, KindBool:
		return float64(v.bits)
	case KindString:
		f, _ := strconv.ParseFloat(v.str, 64)
		return f
	default:
		return 0
	}
}

// AsString returns the string a KindString value holds, or "" for other kinds.
func (v Value) AsString() string { return v.str }

// AppendText appends a human-readable form of v to dst: true/false,
// decimal numbers (floats in the shortest form that round-trips), the
// string unquoted, or "none".
func (v Value) AppendText(dst []byte) []byte {
	switch v.kind {
	case KindBool:
		return strconv.AppendBool(dst, v.bits != 0)
	case KindInt:
		return strconv.AppendInt(dst, int64(v.bits), 10)
	case KindUint:
		return strconv.AppendUint(dst, v.bits, 10)
	case KindFloat:
		if v.f32 {
			return strconv.AppendFloat(dst, v.AsFloat(), 'g', -1, 32)
		}
		return strconv.AppendFloat(dst, v.AsFloat(), 'g', -1, 64)
	case KindString:
		return append(dst, v.str...)
	default:
		return append(dst, "none"...)
	}
}

// String returns AppendText's form of v.
func (v Value) String() string { return string(v.AppendText(nil)) }

// Equal reports whether v and w hold the same kind and value, including
// whether a float came from 32 bits. Float values compare by bits, so NaN
// equals an identical NaN.
func (v Value) Equal(w Value) bool { return v == w }
