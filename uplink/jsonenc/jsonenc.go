// Package jsonenc encodes buffer records as fieldgate's documented JSON
// payload (docs/payload-json.md): one message per record, the device's points
// with Unix-millisecond timestamps, quality only when not good.
//
// The encoder appends to a caller-owned buffer with strconv and does not
// allocate when the buffer is large enough; it never uses reflection.
package jsonenc

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Encoder is the JSON payload encoder; its zero value is ready to use and it
// is safe for concurrent use. It implements uplink.Encoder.
type Encoder struct{}

// Encode appends the JSON payload of r, published by gateway, to dst; a
// historical record gets "historical":true. It never fails; the error is
// there to satisfy uplink.Encoder.
func (Encoder) Encode(dst []byte, gateway string, r *telemetry.Record, historical bool) ([]byte, error) {
	return Append(dst, gateway, r, historical), nil
}

// Append appends the JSON payload of r, published by gateway, to dst and
// returns the extended slice. historical adds "historical":true after "seq"
// (a record replayed from the buffer's backlog, see docs/payload-json.md).
func Append(dst []byte, gateway string, r *telemetry.Record, historical bool) []byte {
	dst = append(dst, `{"gateway":`...)
	dst = appendString(dst, gateway)
	dst = append(dst, `,"device":`...)
	dst = appendString(dst, r.Batch.Device)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	if historical {
		dst = append(dst, `,"historical":true`...)
	}
	dst = append(dst, `,"points":[`...)
	var ts stamp
	for i := range r.Batch.Points {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendPoint(dst, &r.Batch.Points[i], &ts)
	}
	return append(dst, "]}"...)
}

// stamp is the last "ts" written in a payload. The points of one poll
// share their time, so each payload formats it about once and copies the
// digits for the other points.
type stamp struct {
	ms  int64
	n   int // len(buf) in use; 0: none yet
	buf [20]byte
}

// append appends t in Unix milliseconds (0 for the zero time).
func (s *stamp) append(dst []byte, t time.Time) []byte {
	ms := unixMilli(t)
	if s.n == 0 || ms != s.ms {
		s.ms, s.n = ms, len(strconv.AppendInt(s.buf[:0], ms, 10))
	}
	return append(dst, s.buf[:s.n]...)
}

func appendPoint(dst []byte, p *telemetry.Point, ts *stamp) []byte {
	q := p.Quality
	dst = append(dst, `{"tag":`...)
	dst = appendString(dst, p.Tag)
	dst = append(dst, `,"ts":`...)
	dst = ts.append(dst, p.Time)
	dst = append(dst, `,"value":`...)
	v := p.Value
	switch v.Kind() {
	case telemetry.KindBool:
		dst = strconv.AppendBool(dst, v.AsBool())
	case telemetry.KindInt:
		dst = strconv.AppendInt(dst, v.AsInt(), 10)
	case telemetry.KindUint:
		dst = strconv.AppendUint(dst, v.AsUint(), 10)
	case telemetry.KindFloat:
		f := v.AsFloat()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			dst = append(dst, "null"...)
			if q.Class() != telemetry.Bad {
				q = telemetry.Bad | telemetry.ReasonDecode
			}
		} else {
			dst = appendFloat(dst, f, v.IsFloat32())
		}
	case telemetry.KindString:
		dst = appendString(dst, v.AsString())
	default:
		dst = append(dst, "null"...)
	}
	if p.Unit != "" {
		dst = append(dst, `,"unit":`...)
		dst = appendString(dst, p.Unit)
	}
	if !q.IsGood() {
		dst = append(dst, `,"quality":"`...)
		dst = append(dst, q.ClassString()...)
		dst = append(dst, '"')
	}
	if r := q.ReasonString(); r != "" {
		dst = append(dst, `,"reason":"`...)
		dst = append(dst, r...) // snake_case ASCII, needs no escaping
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// unixMilli returns t in Unix milliseconds, 0 for the zero time.
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// appendFloat appends a finite f in the shortest form that parses back to
// the same float64, as JavaScript and encoding/json print numbers: plain
// decimals for 1e-6 <= |f| < 1e21, exponent form otherwise.
func appendFloat(dst []byte, f float64, f32 bool) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	bits := 64
	if f32 {
		bits = 32 // the shortest form that round-trips as a float32: 0.1, not 0.10000000149011612
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// 1e-07 -> 1e-7
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hex = "0123456789abcdef"

// safe[b] is true for ASCII bytes that go into a JSON string as they are.
var safe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// appendString appends s as a JSON string. Control characters, quote and
// backslash are escaped; invalid UTF-8 bytes become U+FFFD (as encoding/json
// does); U+2028 and U+2029 are escaped so the output is also valid
// JavaScript.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if safe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendString appends s as a JSON string (see the escaping rules of the
// JSON format); other JSON payloads (uplink/thingsboard) share it.
func AppendString(dst []byte, s string) []byte { return appendString(dst, s) }

// AppendValue appends v as a JSON value: a number, true/false, a string,
// or null for no value and for NaN and infinities (ok is then false).
func AppendValue(dst []byte, v telemetry.Value) (out []byte, ok bool) {
	switch v.Kind() {
	case telemetry.KindBool:
		return strconv.AppendBool(dst, v.AsBool()), true
	case telemetry.KindInt:
		return strconv.AppendInt(dst, v.AsInt(), 10), true
	case telemetry.KindUint:
		return strconv.AppendUint(dst, v.AsUint(), 10), true
	case telemetry.KindFloat:
		f := v.AsFloat()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return append(dst, "null"...), false
		}
		return appendFloat(dst, f, v.IsFloat32()), true
	case telemetry.KindString:
		return appendString(dst, v.AsString()), true
	}
	return append(dst, "null"...), false
}
