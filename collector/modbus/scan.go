package modbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/telemetry"
)

// ScanResult is a unit id that answered a Scan.
type ScanResult struct {
	Unit uint8
	// Frame is the whole answer as received.
	Frame []byte
	// Data is the probe's registers or bits when the unit answered them.
	Data []byte
	// Err is nil when the unit answered the probe, an *ExceptionError when
	// it refused it (it is there, but has no such register: try another
	// probe), or a *ResponseError when its answer was garbled (a CRC error:
	// check the line's settings).
	Err error
}

// DefaultProbe is what Scan reads when its probe is the zero Request:
// holding register 0 (40001).
var DefaultProbe = Request{Table: HoldingRegister, Start: 0, Count: 1}

// Scan looks for devices behind url (any form ParseURL accepts) by sending
// the probe read to each unit id in units, one after another, waiting at
// most timeout for each. A unit that answers, with data or with an
// exception, is there and is reported, in the order of units. Silence, and
// the exceptions 0A and 0B with which a Modbus TCP gateway says that it got
// no answer behind it, mean no device. Scan returns early, with the results
// so far, when ctx is done or the link cannot be opened or breaks. It uses
// a connection of its own.
func Scan(ctx context.Context, url string, units []uint8, timeout time.Duration, probe Request) ([]ScanResult, error) {
	ep, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if probe.Count == 0 {
		probe = DefaultProbe
	}
	fc := probe.Function()
	if fc == 0 {
		return nil, fmt.Errorf("probe table %v: use coil, discrete, input or holding", probe.Table)
	}
	l := newLink(ep, nil)
	l.use()
	defer func() { _ = l.unuse() }()
	pdu := []byte{byte(probe.Start >> 8), byte(probe.Start), byte(probe.Count >> 8), byte(probe.Count)}
	var out []ScanResult
	for _, u := range units {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		var pk mb.Packager
		switch ep.Transport {
		case TCP:
			h := mb.NewTCPClientHandler("")
			h.SlaveId = u
			pk = h
		case ASCII:
			h := mb.NewASCIIClientHandler("")
			h.SlaveId = u
			pk = h
		default:
			h := mb.NewRTUClientHandler("")
			h.SlaveId = u
			pk = h
		}
		if err := l.lock(ctx); err != nil {
			return out, err
		}
		a, err := l.transactLocked(ctx, pk, fc, pdu, timeout)
		l.unlock()
		var ex *ExceptionError
		switch {
		case err == nil:
			data := a.data
			if len(data) > 0 {
				data = data[1:]
			}
			out = append(out, ScanResult{Unit: u, Frame: a.frame, Data: data})
		case errors.As(err, &ex):
			if ex.Code == 0x0A || ex.Code == 0x0B {
				continue
			}
			out = append(out, ScanResult{Unit: u, Frame: a.frame, Err: err})
		case reason(err) == telemetry.ReasonCRC || reason(err) == telemetry.ReasonBadResponse:
			out = append(out, ScanResult{Unit: u, Frame: a.frame, Err: err})
		case isTimeout(err) && ctx.Err() == nil:
			// silent: no device with this id
		default:
			return out, fmt.Errorf("scan %s unit %d: %w", ep.Link(), u, err)
		}
	}
	return out, nil
}
