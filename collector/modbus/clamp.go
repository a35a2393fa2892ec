package modbus

import (
	"errors"
	"fmt"
	"math"

	"github.com/fieldgate/fieldgate/telemetry"
)

// clampRange is a tag's clamp with its bounds prepared for each kind of
// value the tag can decode to, so that applying it is a pair of compares.
//
// Scaled values (scale or value_offset set) and floats are clamped as
// float64 to [lo, hi]; a float32 value is replaced by the float32 nearest
// its bound on the inside of the range, so it keeps its kind and precision.
// NaN is not a number to bound and passes unchanged.
//
// Unscaled integer types are clamped in their own kind, to the whole
// numbers inside the range: signed types to [ceil(min), floor(max)],
// unsigned types (and BCD) to [ceil(max(min, 0)), floor(max)]. A range that
// holds no such whole number is a configuration error.
type clampRange struct {
	on         bool
	lo, hi     float64 // -Inf, +Inf when unbounded
	lo32, hi32 float32 // lo and hi rounded inwards to float32
	loI, hiI   int64
	loU, hiU   uint64
}

// apply holds v to the range: the value itself and Good when inside, else
// the bound it passed and Uncertain|ReasonClamped.
func (c *clampRange) apply(v telemetry.Value) (telemetry.Value, telemetry.Quality) {
	const clamped = telemetry.Uncertain | telemetry.ReasonClamped
	switch v.Kind() {
	case telemetry.KindInt:
		switch i := v.AsInt(); {
		case i < c.loI:
			return telemetry.Int(c.loI), clamped
		case i > c.hiI:
			return telemetry.Int(c.hiI), clamped
		}
	case telemetry.KindUint:
		switch u := v.AsUint(); {
		case u < c.loU:
			return telemetry.Uint(c.loU), clamped
		case u > c.hiU:
			return telemetry.Uint(c.hiU), clamped
		}
	case telemetry.KindFloat:
		f := v.AsFloat()
		switch {
		case f < c.lo && v.IsFloat32():
			return telemetry.Float32(c.lo32), clamped
		case f < c.lo:
			return telemetry.Float(c.lo), clamped
		case f > c.hi && v.IsFloat32():
			return telemetry.Float32(c.hi32), clamped
		case f > c.hi:
			return telemetry.Float(c.hi), clamped
		}
	}
	return v, telemetry.Good
}

// newClamp prepares c for a tag of type typ, scaled or not.
func newClamp(c *Clamp, typ Type, scaled bool) (clampRange, error) {
	r := clampRange{on: true, lo: math.Inf(-1), hi: math.Inf(1)}
	if c == nil || (c.Min == nil && c.Max == nil) {
		return clampRange{}, nil
	}
	if c.Min != nil {
		r.lo = *c.Min
	}
	if c.Max != nil {
		r.hi = *c.Max
	}
	switch {
	case math.IsNaN(r.lo) || math.IsNaN(r.hi):
		return r, errors.New("clamp: min and max must be numbers")
	case r.lo > r.hi:
		return r, fmt.Errorf("clamp: min %g is above max %g", r.lo, r.hi)
	case typ == TypeBool || typ == TypeString:
		return r, fmt.Errorf("clamp applies to numbers, not to type %s", typ)
	}
	r.lo32, r.hi32 = float32(r.lo), float32(r.hi)
	if float64(r.lo32) < r.lo {
		r.lo32 = math.Nextafter32(r.lo32, float32(math.Inf(1)))
	}
	if float64(r.hi32) > r.hi {
		r.hi32 = math.Nextafter32(r.hi32, float32(math.Inf(-1)))
	}
	if scaled {
		return r, nil
	}
	lo, hi := math.Ceil(r.lo), math.Floor(r.hi)
	switch typ {
	case TypeInt16, TypeInt32, TypeInt64:
		if lo > hi || lo >= 0x1p63 || hi < -0x1p63 {
			return r, fmt.Errorf("clamp [%g, %g] holds no whole number for type %s", r.lo, r.hi, typ)
		}
		r.loI, r.hiI = satInt64(lo), satInt64(hi)
	case TypeUint16, TypeUint32, TypeUint64, TypeBCD16, TypeBCD32:
		lo = max(lo, 0)
		if lo > hi || lo >= 0x1p64 {
			return r, fmt.Errorf("clamp [%g, %g] holds no whole number for unsigned type %s", r.lo, r.hi, typ)
		}
		r.loU, r.hiU = satUint64(lo), satUint64(hi)
	}
	return r, nil
}

// satInt64 converts a whole or infinite f to int64, saturating.
func satInt64(f float64) int64 {
	switch {
	case f >= 0x1p63:
		return math.MaxInt64
	case f < -0x1p63:
		return math.MinInt64
	}
	return int64(f)
}

// satUint64 converts a whole, non-negative or infinite f to uint64, saturating.
func satUint64(f float64) uint64 {
	if f >= 0x1p64 {
		return math.MaxUint64
	}
	return uint64(f)
}
