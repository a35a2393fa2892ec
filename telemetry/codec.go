package telemetry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"
)

// The first byte of every encoded batch is its version. A decoder refuses
// versions it does not know, so the buffer format can evolve. AppendBatch
// writes version 2; DecodeBatch reads 1 and 2, so buffer files written
// before version 2 still replay.
const (
	codecV1      = 1
	codecV2      = 2
	codecVersion = codecV2
)

// Version 2 point head byte: the kind in the low 3 bits, then flags.
const (
	headKind     = 0x07
	headValue    = 0x08 // bool: true; float: stored as float32
	headSameUnit = 0x10 // the unit is the previous point's (the first point's: "")
	headGood     = 0x20 // Quality is Good; no quality byte follows
	headBaseTime = 0x40 // the time is the batch's base time; no delta follows
	headReserved = 0x80
)

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
// Layout (version 2): version byte; device as uvarint length + bytes; base
// time (the first point's) as zigzag varint Unix nanoseconds; point count as
// uvarint; then per point: a head byte (kind in bits 0-2; bit 3: bool true
// or float stored as float32; bit 4: same unit as the previous point; bit 5:
// quality Good; bit 6: time equals the base time), the tag front-coded
// against the previous point's tag (uvarint shared prefix length, uvarint
// suffix length, suffix bytes), the unit (length + bytes) unless bit 4, the
// quality byte unless bit 5, the value (int as zigzag varint, uint as
// uvarint, float as 8 or 4 little-endian bytes, string as length + bytes),
// and the time as a zigzag varint delta from the base time unless bit 6.
// A zero time.Time is stored as 0. A poll's batch of uint16 registers named
// like r000…r119 costs about 6 bytes per point (version 1: 11).
//
// Version 1, still decoded: per point tag and unit as length + bytes,
// quality byte, kind byte (bit 7: bool true or float32), value, time delta.
func AppendBatch(dst []byte, b *Batch) []byte {
	dst = append(dst, codecVersion)
	dst = appendString(dst, b.Device)
	var base int64
	if len(b.Points) > 0 {
		base = unixNano(b.Points[0].Time)
	}
	dst = binary.AppendVarint(dst, base)
	dst = binary.AppendUvarint(dst, uint64(len(b.Points)))
	prevTag, prevUnit := "", ""
	for i := range b.Points {
		p := &b.Points[i]
		h := byte(p.Value.kind)
		if (p.Value.kind == KindBool && p.Value.bits != 0) || p.Value.f32 {
			h |= headValue
		}
		if p.Unit == prevUnit {
			h |= headSameUnit
		}
		if p.Quality == Good {
			h |= headGood
		}
		t := unixNano(p.Time)
		if t == base {
			h |= headBaseTime
		}
		dst = append(dst, h)
		n := sharedPrefix(prevTag, p.Tag)
		dst = binary.AppendUvarint(dst, uint64(n))
		dst = appendString(dst, p.Tag[n:])
		if h&headSameUnit == 0 {
			dst = appendString(dst, p.Unit)
		}
		if h&headGood == 0 {
			dst = append(dst, byte(p.Quality))
		}
		dst = appendValue(dst, &p.Value)
		if h&headBaseTime == 0 {
			dst = binary.AppendVarint(dst, t-base)
		}
		prevTag, prevUnit = p.Tag, p.Unit
	}
	return dst
}

func appendValue(dst []byte, v *Value) []byte {
	switch v.kind {
	case KindInt:
		dst = binary.AppendVarint(dst, int64(v.bits))
	case KindUint:
		dst = binary.AppendUvarint(dst, v.bits)
	case KindFloat:
		if v.f32 {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(math.Float64frombits(v.bits))))
		} else {
			dst = binary.LittleEndian.AppendUint64(dst, v.bits)
		}
	case KindString:
		dst = appendString(dst, v.str)
	}
	return dst
}

// sharedPrefix returns the length of the longest common prefix of a and b.
func sharedPrefix(a, b string) int {
	n := min(len(a), len(b), 255)
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// DecodeBatch decodes src, which AppendBatch wrote (version 1 or 2), into
// b. It reuses the capacity of b.Points, and a point's Tag, Unit and
// b.Device are kept when the decoded bytes equal what b already holds, so
// decoding one device's batches into the same Batch does not allocate.
// Other strings are copied out of src, so src may be reused once
// DecodeBatch returns. Any malformed input gives an error wrapping
// ErrCorrupt, never a panic.
func DecodeBatch(src []byte, b *Batch) error {
	d := decoder{buf: src}
	v := d.byte()
	if d.err != nil {
		return d.err
	}
	if v != codecV1 && v != codecV2 {
		return fmt.Errorf("%w: unknown codec version %d", ErrCorrupt, v)
	}
	b.Device = d.reuse(d.stringBytes(), b.Device)
	base := d.varint()
	n := d.uvarint()
	if d.err != nil {
		return d.err
	}
	// Each point takes at least 3 bytes (version 1: 5), which bounds n by
	// the input size.
	if n > maxPoints || n > uint64(len(d.buf))/3 {
		return fmt.Errorf("%w: point count %d does not fit %d bytes", ErrCorrupt, n, len(d.buf))
	}
	if uint64(cap(b.Points)) < n {
		pts := make([]Point, n)
		copy(pts, b.Points[:cap(b.Points)]) // keep old strings for reuse
		b.Points = pts
	} else {
		b.Points = b.Points[:n]
	}
	var err error
	if v == codecV1 {
		err = d.pointsV1(b.Points, base)
	} else {
		err = d.pointsV2(b.Points, base)
	}
	if err != nil {
		b.Points = b.Points[:0]
		return err
	}
	if len(d.buf) != 0 {
		b.Points = b.Points[:0]
		return fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.buf))
	}
	return nil
}

func (d *decoder) pointsV1(pts []Point, base int64) error {
	for i := range pts {
		p := &pts[i]
		p.Tag = d.reuse(d.stringBytes(), p.Tag)
		p.Unit = d.reuse(d.stringBytes(), p.Unit)
		p.Quality = Quality(d.byte())
		k := d.byte()
		kind := Kind(k &^ 0x80)
		d.value(&p.Value, kind, k&0x80 != 0)
		p.Time = fromUnixNano(base + d.varint())
		if d.err != nil {
			return d.err
		}
	}
	return nil
}

func (d *decoder) pointsV2(pts []Point, base int64) error {
	var prevTag, prevUnit string
	for i := range pts {
		p := &pts[i]
		h := d.byte()
		if h&headReserved != 0 && d.err == nil {
			d.err = fmt.Errorf("%w: reserved bit in point head %#x", ErrCorrupt, h)
		}
		shared := d.uvarint()
		suffix := d.stringBytes()
		if d.err == nil && shared > uint64(len(prevTag)) {
			d.err = fmt.Errorf("%w: tag shares %d bytes of a %d-byte tag", ErrCorrupt, shared, len(prevTag))
		}
		if d.err != nil {
			return d.err
		}
		p.Tag = d.joinTag(prevTag[:shared], suffix, p.Tag)
		if h&headSameUnit != 0 {
			p.Unit = prevUnit
		} else {
			p.Unit = d.reuse(d.stringBytes(), p.Unit)
		}
		p.Quality = Good
		if h&headGood == 0 {
			p.Quality = Quality(d.byte())
		}
		d.value(&p.Value, Kind(h&headKind), h&headValue != 0)
		t := base
		if h&headBaseTime == 0 {
			t += d.varint()
		}
		p.Time = fromUnixNano(t)
		if d.err != nil {
			return d.err
		}
		prevTag, prevUnit = p.Tag, p.Unit
	}
	return nil
}

// value decodes a value of kind; flag is the bool/float32 bit.
func (d *decoder) value(v *Value, kind Kind, flag bool) {
	*v = Value{kind: kind}
	switch kind {
	case KindNone:
	case KindBool:
		if flag {
			v.bits = 1
		}
	case KindInt:
		v.bits = uint64(d.varint())
	case KindUint:
		v.bits = d.uvarint()
	case KindFloat:
		if flag {
			*v = Float32(math.Float32frombits(d.uint32le()))
		} else {
			v.bits = d.uint64le()
		}
	case KindString:
		v.str = d.string()
	default:
		if d.err == nil {
			d.err = fmt.Errorf("%w: unknown value kind %d", ErrCorrupt, kind)
		}
	}
	if kind != KindBool && kind != KindFloat && flag && d.err == nil {
		d.err = fmt.Errorf("%w: flag bits on value kind %s", ErrCorrupt, kind)
	}
}

// reuse returns old when it holds exactly the bytes s, else a copy of s.
func (d *decoder) reuse(s []byte, old string) string {
	if string(s) == old { // compiles to a comparison, no allocation
		return old
	}
	return d.copyString("", s)
}

// joinTag returns prefix+suffix, reusing old when it is that string.
func (d *decoder) joinTag(prefix string, suffix []byte, old string) string {
	if len(old) == len(prefix)+len(suffix) && old[:len(prefix)] == prefix && old[len(prefix):] == string(suffix) {
		return old
	}
	return d.copyString(prefix, suffix)
}

// copyString returns the string a+b, copied into the decoder's arena: the
// strings a decode creates share a few allocations instead of one each
// (120 new tags of a batch decoded into a fresh Batch: 1 instead of 120).
// Bytes given out are never written again, which is what makes the
// unsafe.String conversion sound.
func (d *decoder) copyString(a string, b []byte) string {
	n := len(a) + len(b)
	if n == 0 {
		return ""
	}
	if cap(d.arena)-len(d.arena) < n {
		// Room for this string and as much again as the input has left,
		// which the rest of a batch's strings rarely exceed (front-coded
		// tags can; then another, smaller block follows).
		d.arena = make([]byte, 0, max(n+len(d.buf), 64))
	}
	start := len(d.arena)
	d.arena = append(append(d.arena, a...), b...)
	return unsafe.String(&d.arena[start], n)
}

// BatchPointCount returns the number of points in an encoded batch without
// decoding it, for counting what a dropped record held.
func BatchPointCount(src []byte) (int, error) {
	d := decoder{buf: src}
	if v := d.byte(); v != codecV1 && v != codecV2 && d.err == nil {
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

// BatchDevice returns the device name of an encoded batch without decoding
// the rest, for accounting what a dropped record held.
func BatchDevice(src []byte) (string, error) {
	d := decoder{buf: src}
	if v := d.byte(); v != codecV1 && v != codecV2 && d.err == nil {
		return "", fmt.Errorf("%w: unknown codec version %d", ErrCorrupt, v)
	}
	name := d.stringBytes()
	if d.err != nil {
		return "", d.err
	}
	return string(name), nil
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
	buf   []byte
	err   error
	arena []byte // backs the strings it creates; see copyString
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
	return d.copyString("", d.stringBytes())
}

func (d *decoder) skipString() { d.stringBytes() }
