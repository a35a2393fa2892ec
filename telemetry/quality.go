package telemetry

import "strconv"

// Quality says how far a Point's value can be trusted. The top two bits are
// the class (Good, Uncertain, Bad); the low six bits are the reason.
// The zero Quality is Good.
type Quality uint8

// Quality classes.
const (
	Good      Quality = 0x00
	Uncertain Quality = 0x40
	Bad       Quality = 0x80

	classMask  Quality = 0xC0
	reasonMask Quality = 0x3F
)

// Reasons, combined with a class: for example Bad|ReasonTimeout.
const (
	ReasonNone         Quality = 0  // no particular reason
	ReasonNoConnection Quality = 1  // the device cannot be reached
	ReasonTimeout      Quality = 2  // the device did not answer in time
	ReasonException    Quality = 3  // the device answered with a protocol exception
	ReasonDecode       Quality = 4  // the answer could not be decoded as the tag's type
	ReasonConfig       Quality = 5  // the tag's configuration does not fit the device
	ReasonStale        Quality = 6  // the value was not refreshed when expected
	ReasonDevice       Quality = 7  // the device reported the value as not good
	ReasonCRC          Quality = 8  // the answer failed its checksum (Modbus RTU CRC, ASCII LRC)
	ReasonBadResponse  Quality = 9  // the answer did not match the request (wrong unit, function or length)
	ReasonClamped      Quality = 10 // the value was outside its configured range and was clamped
	reasonCount                = 11
)

var reasonNames = [...]string{"", "no_connection", "timeout", "exception", "decode", "config", "stale", "device", "crc", "bad_response", "clamped"}

// Class returns the quality's class: Good, Uncertain or Bad.
func (q Quality) Class() Quality {
	if q&classMask == classMask {
		return Bad // 0xC0 is reserved; treat it as Bad
	}
	return q & classMask
}

// Reason returns the quality's reason bits.
func (q Quality) Reason() Quality { return q & reasonMask }

// IsGood reports whether q is of class Good.
func (q Quality) IsGood() bool { return q.Class() == Good }

// ClassString returns "good", "uncertain" or "bad".
func (q Quality) ClassString() string {
	switch q.Class() {
	case Good:
		return "good"
	case Uncertain:
		return "uncertain"
	default:
		return "bad"
	}
}

// ReasonString returns the reason's snake_case name, or "" when there is none.
func (q Quality) ReasonString() string {
	r := q.Reason()
	if r < reasonCount {
		return reasonNames[r]
	}
	return "reason_" + strconv.Itoa(int(r))
}

// String returns the class, followed by ":" and the reason when there is one,
// e.g. "good" or "bad:timeout".
func (q Quality) String() string {
	if r := q.ReasonString(); r != "" {
		return q.ClassString() + ":" + r
	}
	return q.ClassString()
}
