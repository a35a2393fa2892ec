package collector

import (
	"errors"
	"strconv"
)

// DeviceError is the error the collector reports for one device: a failed
// connect or read (in Status and logs), or a sink failure that stopped Run.
// Classify it with errors.As.
type DeviceError struct {
	Device string // the device's name
	Err    error  // what went wrong
}

// Error returns "device NAME: ERR".
func (e *DeviceError) Error() string {
	return "device " + strconv.Quote(e.Device) + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *DeviceError) Unwrap() error { return e.Err }

// ErrValueType is wrapped by a Writer's error when the value cannot be
// written to the tag: wrong kind (a string for a number), a fraction for an
// integer type, or outside what the tag's type can hold.
var ErrValueType = errors.New("value does not fit the tag's type")
