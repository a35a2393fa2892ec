package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a number of bytes, written in the config as a plain number
// or with a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB
// (powers of 1024), e.g. 1GiB, 256MiB, 500MB, 1048576.
type ByteSize int64

var byteUnits = []struct {
	name string
	size int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// UnmarshalText parses a size such as 1GiB, 500MB, 1.5GiB or 1048576. Units
// are case-insensitive; a space may separate number and unit.
func (s *ByteSize) UnmarshalText(b []byte) error {
	text := strings.TrimSpace(string(b))
	num := text
	mult := int64(1)
	lower := strings.ToLower(text)
	for _, u := range byteUnits {
		if strings.HasSuffix(lower, strings.ToLower(u.name)) {
			num = strings.TrimSpace(text[:len(text)-len(u.name)])
			mult = u.size
			break
		}
	}
	bad := fmt.Errorf("%q is not a byte size; use a number of bytes or a number with a unit, e.g. 256MiB, 1GiB, 500MB", text)
	if num == "" || strings.ContainsAny(num, "+-") {
		return bad
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/mult {
			return fmt.Errorf("%q is too large", text)
		}
		*s = ByteSize(n * mult)
		return nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(num, "xXpP") {
		return bad
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return fmt.Errorf("%q is too large", text)
	}
	*s = ByteSize(v)
	return nil
}

// String returns the size with the largest unit that divides it exactly
// (binary units first), e.g. 1GiB, 500MB, 1000001B.
func (s ByteSize) String() string {
	if s == 0 {
		return "0B"
	}
	for _, u := range byteUnits {
		if int64(s)%u.size == 0 && (int64(s) >= u.size || -int64(s) >= u.size) {
			return strconv.FormatInt(int64(s)/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText returns String.
func (s ByteSize) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Secret is a string that is never printed: fmt, encoding/json and yaml
// show "[redacted]" (or "" when empty). Use string(s) for the value.
type Secret string

const redacted = "[redacted]"

// String returns "[redacted]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString makes %#v redact too.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// MarshalText returns String, so that encoders redact.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
