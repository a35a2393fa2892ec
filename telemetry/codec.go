package telemetry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// codecVersion is the first byte of every encoded batch. A decoder refuses
// versions it does not know, so the buffer format can evolve.
const codecVersion = 1

// Limits that keep a decoder of outside bytes from allocating without bound.
const (
	maxStringLen = 1 << 16 // longest device, tag, unit or string value
	maxPoints    = 1 << 20 // most points in one batch
)

// ErrCorrupt is wrapped by every error DecodeBatch returns for bytes that are
// not a batch this codec wrote.
var ErrCorrupt = errors.New("corrupt batch encoding")

// AppendBatch appends the binary encoding of b to dst and returns the
// extended slice. It allocates only when dst has to grow.
//
// Layout (version 1): version byte; device as uvarint length + bytes; base
// time as zigzag varint Unix nanoseconds; point count as uvarint; then per
// point: tag, unit (length + bytes), quality byte, kind byte, the value
// (bool in the kind byte's high bit, int as zigzag varint, uint as uvarint,
// float as 8 little-endian bytes, or as 4 bytes of float32 when the kind
// byte's high bit is set, string as length + bytes), and the time as
// a zigzag varint delta from the base time. A zero time.Time is stored as 0.
func AppendBatch(dst []byte, b *Batch) []byte {
	dst = append(dst, codecVersion)
	dst = appendString(dst, b.Device)
	var base int64
	if len(b.Points) > 0 {
		base = unixNano(b.Points[0].Time)
	}
	dst = binary.AppendVarint(dst, base)
	dst = binary.AppendUvarint(dst, uint64(len(b.Points)))
	for i := range b.Points {
		p := &b.Points[i]
		dst = appendString(dst, p.Tag)
		dst = appendString(dst, p.Unit)
		dst = append(dst, byte(p.Quality))
		k := byte(p.Value.kind)
		if (p.Value.kind == KindBool && p.Value.bits != 0) || p.Value.f32 {
			k |= 0x80
		}
		dst = append(dst, k)
		switch p.Value.kind {
		case KindInt:
			dst = binary.AppendVarint(dst, int64(p.Value.bits))
		case KindUint:
			dst = binary.AppendUvarint(dst, p.Value.bits)
		case KindFloat:
			if p.Value.f32 {
				dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(math.Float64frombits(p.Value.bits))))
			} else {
				dst = binary.LittleEndian.AppendUint64(dst, p.Value.bits)
			}
		case KindString:
			dst = appendString(dst, p.Value.str)
		}
		dst = binary.AppendVarint(dst, unixNano(p.Time)-base)
	}
	return dst
}

// DecodeBatch decodes src, which AppendBatch wrote, into b. It reuses the
// capacity of b.Points. Strings are copied out of src, so src may be reused
// once DecodeBatch returns. Any malformed input gives an error wrapping
// ErrCorrupt, never a panic.
func DecodeBatch(src []byte, b *Batch) error {
	d := decoder{buf: src}
	if v := d.byte(); v != codecVersion {
		if d.err != nil {
			return d.err
		}
		return fmt.Errorf("%w: unknown codec version %d", ErrCorrupt, v)
	}
	b.Device = d.string()
	base := d.varint()
	n := d.uvarint()
	if d.err != nil {
		return d.err
	}
	// Each point takes at least 5 bytes, which bounds n by the input size.
	if n > maxPoints || n > uint64(len(d.buf))/5 {
		return fmt.Errorf("%w: point count %d does not fit %d bytes", ErrCorrupt, n, len(d.buf))
	}
	if uint64(cap(b.Points)) < n {
		b.Points = make([]Point, n)
	} else {
		b.Points = b.Points[:n]
	}
	for i := range b.Points {
		p := &b.Points[i]
		p.Tag = d.string()
		p.Unit = d.string()
		p.Quality = Quality(d.byte())
		k := d.byte()
		kind := Kind(k &^ 0x80)
		p.Value = Value{kind: kind}
		switch kind {
		case KindNone:
		case KindBool:
			if k&0x80 != 0 {
				p.Value.bits = 1
			}
		case KindInt:
			p.Value.bits = uint64(d.varint())
		case KindUint:
			p.Value.bits = d.uvarint()
		case KindFloat:
			if k&0x80 != 0 {
				p.Value = Float32(math.Float32frombits(d.uint32le()))
			} else {
				p.Value.bits = d.uint64le()
			}
		case KindString:
			p.Value.str = d.string()
		default:
			if d.err == nil {
				d.err = fmt.Errorf("%w: unknown value kind %d", ErrCorrupt, kind)
			}
		}
		if kind != KindBool && kind != KindFloat && k&0x80 != 0 && d.err == nil {
			d.err = fmt.Errorf("%w: flag bits on value kind %s", ErrCorrupt, kind)
		}
		p.Time = fromUnixNano(base + d.varint())
		if d.err != nil {
			b.Points = b.Points[:0]
			return d.err
		}
	}
	if len(d.buf) != 0 {
		b.Points = b.Points[:0]
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.buf))
	}
	return nil
}

// BatchPointCount returns the number of points in an encoded batch without
// decoding it, for counting what a dropped record held.
func BatchPointCount(src []byte) (int, error) {
	d := decoder{buf: src}
	if v := d.byte(); v != codecVersion && d.err == nil {
		return 0, fmt.Errorf("%w: unknown codec version %d", ErrCorrupt, v)
	}
	d.skipString()
	d.varint()
	n := d.uvarint()
	if d.err != nil {
		return 0, d.err
	}
	if n > maxPoints {
		return 0, fmt.Errorf("%w: point count %d", ErrCorrupt, n)
	}
	return int(n), nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decoder reads from buf and keeps the first error; later reads return zero.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or bad %s", ErrCorrupt, what)
	}
	d.buf = nil
}

func (d *decoder) byte() byte {
	if len(d.buf) < 1 {
		d.fail("byte")
		return 0
	}
	c := d.buf[0]
	d.buf = d.buf[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) uint64le() uint64 {
	if len(d.buf) < 8 {
		d.fail("float")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.buf)
	d.buf = d.buf[8:]
	return v
}

func (d *decoder) uint32le() uint32 {
	if len(d.buf) < 4 {
		d.fail("float32")
		return 0
	}
	v := binary.LittleEndian.Uint32(d.buf)
	d.buf = d.buf[4:]
	return v
}

func (d *decoder) stringBytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > maxStringLen || n > uint64(len(d.buf)) {
		d.fail("string length")
		return nil
	}
	s := d.buf[:n]
	d.buf = d.buf[n:]
	return s
}

func (d *decoder) string() string {
	s := d.stringBytes()
	if len(s) == 0 {
		return ""
	}
	return string(s)
}

func (d *decoder) skipString() { d.stringBytes() }
