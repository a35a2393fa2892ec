package modbus

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Config is one Modbus device connection as written in the gateway's YAML
// file under devices[i].modbus, plus the device's tags. The config package
// decodes and validates it; New trusts a validated Config.
type Config struct {
	URL     string        `yaml:"url"`     // tcp://host:port (port defaults to 502)
	Unit    uint8         `yaml:"unit"`    // unit (slave) id, 0..247; 1 when unset
	Timeout time.Duration `yaml:"timeout"` // per request; 1s when unset
	// MaxGap is the most unused registers (or bits) a merged request may
	// read between two tags. 0 merges only adjacent tags.
	MaxGap *uint16 `yaml:"max_gap"`
	// MaxRegisters and MaxBits lower the per-request limits below the
	// protocol's 125 registers and 2000 bits, for devices that need it.
	MaxRegisters uint16 `yaml:"max_registers"`
	MaxBits      uint16 `yaml:"max_bits"`
	// Pause is the quiet time between two requests to this device, for
	// devices that drop requests that come too fast. 0: none.
	Pause time.Duration `yaml:"pause"`

	// Filled from the device entry, not from the modbus: section.
	Poll time.Duration `yaml:"-"` // the device's default poll interval
	Tags []Tag         `yaml:"-"`
}

// Protocol limits per request.
const (
	MaxRegistersPerRequest = 125
	MaxBitsPerRequest      = 2000
	DefaultPort            = "502"
	DefaultTimeout         = time.Second
	DefaultMaxGap          = 10
)

// Tag is one value read from a device.
type Tag struct {
	Name string `yaml:"name"`
	// Address is a Modicon number (1-based: 1–9999 coils, 10001–19999
	// discrete inputs, 30001–39999 input registers, 40001–49999 holding
	// registers; six-digit forms up to 465536). Set either Address, or
	// Table and Offset.
	Address uint32   `yaml:"address"`
	Table   Table    `yaml:"table"`
	Offset  *uint16  `yaml:"offset"` // zero-based protocol address within Table
	Type    Type     `yaml:"type"`
	Order   Order    `yaml:"order"`  // byte/word order for multi-register types; ABCD when unset
	Bit     *uint8   `yaml:"bit"`    // for type bool on a register: bit 0 (LSB) .. 15
	Length  uint16   `yaml:"length"` // registers, for type string
	Scale   *float64 `yaml:"scale"`
	// ValueOffset is added after Scale: value = raw*scale + value_offset.
	// (The key offset is the register address within a table.)
	ValueOffset *float64      `yaml:"value_offset"`
	Unit        string        `yaml:"unit"`
	Description string        `yaml:"description"` // free text for people; not sent
	Poll        time.Duration `yaml:"poll"`        // overrides the device's poll interval
	// Clamp limits the value after scale and value_offset: a reading outside
	// [min, max] is replaced by the bound and marked Uncertain.
	Clamp *Clamp `yaml:"clamp"`
	// Deadband, Report and MaxSilence control report-by-exception; see
	// collector.Filter.
	Deadband   Deadband      `yaml:"deadband"`
	Report     Report        `yaml:"report"`
	MaxSilence time.Duration `yaml:"max_silence"`

	// Writable allows cloud-to-device writes of the tag (coils and holding
	// registers only); off by default. Min, Max, RateLimit and Verify
	// need it.
	Writable bool `yaml:"writable" json:",omitempty"`
	// Min and Max bound the values a write may set, in engineering units
	// (after scale and value_offset); numeric types only. They do not
	// limit what is read (see Clamp).
	Min *float64 `yaml:"min" json:",omitempty"`
	Max *float64 `yaml:"max" json:",omitempty"`
	// RateLimit caps the writes accepted for the tag: N per second,
	// minute or hour, written 1/s, 10/min or 100/h. Empty: no cap.
	RateLimit string `yaml:"rate_limit" json:",omitempty"`
	// Verify reads the tag back after each write and compares it with
	// the value written.
	Verify bool `yaml:"verify" json:",omitempty"`
}

// Clamp is the range a tag's value is held to.
type Clamp struct {
	Min *float64 `yaml:"min"`
	Max *float64 `yaml:"max"`
}

// Deadband is how far a numeric value must move from the last reported one
// before it is reported again: an absolute amount ("0.5") or a percentage of
// the last reported value ("2%"). The zero Deadband reports every change.
type Deadband struct {
	Value   float64
	Percent bool
}

// UnmarshalText accepts a non-negative number, optionally followed by %.
func (d *Deadband) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return fmt.Errorf("%q is not a deadband; use a non-negative number (0.5) or a percentage (2%%)", b)
	}
	*d = Deadband{Value: v, Percent: pct}
	return nil
}

// MarshalText returns the deadband as written in a config.
func (d Deadband) MarshalText() ([]byte, error) {
	s := strconv.FormatFloat(d.Value, 'g', -1, 64)
	if d.Percent {
		s += "%"
	}
	return []byte(s), nil
}

// Report says when a tag's value is sent.
type Report uint8

// The report modes. ReportDefault is "always" for a tag without a deadband
// and "change" for a tag with one.
const (
	ReportDefault Report = iota
	ReportAlways         // every poll
	ReportChange         // when the value (beyond the deadband) or the quality changes, and at least every max_silence
)

var reportNames = [...]string{"", "always", "change"}

func (r Report) String() string {
	if int(r) < len(reportNames) {
		return reportNames[r]
	}
	return fmt.Sprintf("report(%d)", uint8(r))
}

// UnmarshalText accepts always or change.
func (r *Report) UnmarshalText(b []byte) error {
	switch strings.ToLower(string(b)) {
	case "always":
		*r = ReportAlways
	case "change":
		*r = ReportChange
	default:
		return fmt.Errorf("%q is not a report mode; use always or change", b)
	}
	return nil
}

// MarshalText returns the mode's config name.
func (r Report) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// Table is one of the four Modbus data tables.
type Table uint8

// The Modbus tables. TableNone means "not set".
const (
	TableNone Table = iota
	Coil
	DiscreteInput
	InputRegister
	HoldingRegister
)

var tableNames = [...]string{"", "coil", "discrete", "input", "holding"}

// TableNames lists the names a config may use for Table.
var TableNames = tableNames[1:]

func (t Table) String() string {
	if int(t) < len(tableNames) {
		return tableNames[t]
	}
	return fmt.Sprintf("table(%d)", uint8(t))
}

// IsBit reports whether the table holds single bits (coils, discrete inputs).
func (t Table) IsBit() bool { return t == Coil || t == DiscreteInput }

// UnmarshalText accepts coil, discrete, input or holding (any case).
func (t *Table) UnmarshalText(b []byte) error {
	s := strings.ToLower(string(b))
	for i, n := range tableNames {
		if i > 0 && n == s {
			*t = Table(i)
			return nil
		}
	}
	return fmt.Errorf("%q is not a table; use one of %s", b, strings.Join(TableNames, ", "))
}

// MarshalText returns the table's config name.
func (t Table) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Type is how a tag's registers or bits are decoded.
type Type uint8

// The tag types. TypeNone means "not set".
const (
	TypeNone Type = iota
	TypeBool
	TypeInt16
	TypeUint16
	TypeInt32
	TypeUint32
	TypeInt64
	TypeUint64
	TypeFloat32
	TypeFloat64
	TypeString
	TypeBCD16 // 4 packed BCD digits in one register (0..9999)
	TypeBCD32 // 8 packed BCD digits in two registers (0..99999999), word order as for uint32
)

var typeNames = [...]string{"", "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "bcd16", "bcd32"}

// TypeNames lists the names a config may use for Type.
var TypeNames = typeNames[1:]

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Registers returns how many 16-bit registers one value of t takes; 0 for
// bool (a bit, or one bit of a register) and string (see Tag.Length).
func (t Type) Registers() uint16 {
	switch t {
	case TypeInt16, TypeUint16, TypeBCD16:
		return 1
	case TypeInt32, TypeUint32, TypeFloat32, TypeBCD32:
		return 2
	case TypeInt64, TypeUint64, TypeFloat64:
		return 4
	}
	return 0
}

// UnmarshalText accepts the names in TypeNames (any case).
func (t *Type) UnmarshalText(b []byte) error {
	s := strings.ToLower(string(b))
	for i, n := range typeNames {
		if i > 0 && n == s {
			*t = Type(i)
			return nil
		}
	}
	return fmt.Errorf("%q is not a type; use one of %s", b, strings.Join(TypeNames, ", "))
}

// MarshalText returns the type's config name.
func (t Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Order is the byte and word order of a multi-register value, written as
// the positions of bytes A (most significant) to D as they arrive:
// ABCD is big-endian (the Modbus default), CDAB swaps words, BADC swaps
// bytes within words, DCBA is little-endian. For 64-bit values the same
// pattern extends over four registers.
type Order uint8

// The byte orders. OrderNone means "not set" and decodes as ABCD.
const (
	OrderNone Order = iota
	ABCD
	CDAB
	BADC
	DCBA
)

var orderNames = [...]string{"", "ABCD", "CDAB", "BADC", "DCBA"}

// OrderNames lists the names a config may use for Order.
var OrderNames = orderNames[1:]

func (o Order) String() string {
	if int(o) < len(orderNames) {
		return orderNames[o]
	}
	return fmt.Sprintf("order(%d)", uint8(o))
}

// UnmarshalText accepts ABCD, CDAB, BADC or DCBA (any case).
func (o *Order) UnmarshalText(b []byte) error {
	s := strings.ToUpper(string(b))
	for i, n := range orderNames {
		if i > 0 && n == s {
			*o = Order(i)
			return nil
		}
	}
	return fmt.Errorf("%q is not a byte order; use one of %s", b, strings.Join(OrderNames, ", "))
}

// MarshalText returns the order's config name.
func (o Order) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// ParseModicon splits a Modicon address into its table and zero-based
// offset: 1–9999 coils, 10001–19999 discrete inputs, 30001–39999 input
// registers, 40001–49999 holding registers, and the six-digit forms
// 000001–065536, 100001–165536, 300001–365536, 400001–465536.
func ParseModicon(addr uint32) (Table, uint16, error) {
	type span struct {
		lo, hi uint32
		t      Table
	}
	for _, s := range [...]span{
		{1, 9999, Coil}, {10001, 19999, DiscreteInput}, {30001, 39999, InputRegister}, {40001, 49999, HoldingRegister},
		{100001, 165536, DiscreteInput}, {300001, 365536, InputRegister}, {400001, 465536, HoldingRegister},
	} {
		if addr >= s.lo && addr <= s.hi {
			return s.t, uint16(addr - s.lo), nil
		}
	}
	return TableNone, 0, fmt.Errorf("%d is not a Modicon address; use 1-9999 (coils), 10001-19999 (discrete inputs), 30001-39999 (input registers), 40001-49999 (holding registers), the six-digit forms up to 465536, or table and offset", addr)
}
