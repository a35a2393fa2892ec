package modbus

import (
	"fmt"
	"math"

	"github.com/fieldgate/fieldgate/telemetry"
)

// fromBCD returns the number held by the low n packed BCD digits of u (the
// most significant digit in the highest nibble), and false when a nibble is
// above 9.
func fromBCD(u uint64, n int) (uint64, bool) {
	var v uint64
	for i := n - 1; i >= 0; i-- {
		d := u >> (4 * uint(i)) & 0xF
		if d > 9 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// toBCD packs v into n BCD digits; v must be below 10^n.
func toBCD(v uint64, n int) uint64 {
	var u uint64
	for i := range n {
		u |= (v % 10) << (4 * uint(i))
		v /= 10
	}
	return u
}

// bcdBits returns v as the packed BCD bits of type t (TypeBCD16 or
// TypeBCD32), checking that it is a whole number with at most 4 or 8 digits.
func bcdBits(t Type, v telemetry.Value) (uint64, error) {
	digits := 4 * int(t.Registers())
	limit := uint64(math.Pow10(digits)) // 10000 or 100000000
	var u uint64
	switch v.Kind() {
	case telemetry.KindInt:
		if v.AsInt() < 0 {
			return 0, fmt.Errorf("%v does not fit %s (0..%d): %w", v, t, limit-1, errRange)
		}
		u = uint64(v.AsInt())
	case telemetry.KindFloat:
		f := v.AsFloat()
		if f != math.Trunc(f) || f < 0 || f >= float64(limit) {
			return 0, fmt.Errorf("%v does not fit %s (0..%d): %w", v, t, limit-1, errRange)
		}
		u = uint64(f)
	default:
		u = v.AsUint()
	}
	if u >= limit {
		return 0, fmt.Errorf("%d does not fit %s (0..%d): %w", u, t, limit-1, errRange)
	}
	return toBCD(u, digits), nil
}
