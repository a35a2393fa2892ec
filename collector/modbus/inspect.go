package modbus

import (
	"context"
	"slices"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Inspection is what one request of a device's read plan returned, for
// commissioning (fieldgate read): the request, the answer as it came off the
// wire and what the driver made of it.
type Inspection struct {
	Group   int     // index into Plan().Groups
	Request Request // as in Plan().Groups[Group].Requests
	// Frame is the whole answer as received: the MBAP header, the RTU
	// frame with its CRC, or the ASCII line. Nil when none came.
	Frame []byte
	// Data is the registers or bits the answer carried, as they arrived:
	// two bytes per register, high byte first; bits packed eight to a byte,
	// first bit in the lowest. Nil when the request failed.
	Data []byte
	// Points are the request's tags, in the order of Request.Tags, decoded
	// as Read decodes them (Bad with the request's reason when it failed).
	Points []telemetry.Point
	// Err is why the request failed: an *ExceptionError, a *ResponseError,
	// a timeout (it has a Timeout() method that returns true) or a
	// connection error. Nil on success.
	Err error
}

// Quality returns the quality the request's tags got: Good, or Bad with
// the reason (exception, crc, bad_response, timeout, no_connection).
func (in *Inspection) Quality() telemetry.Quality {
	if in.Err == nil {
		return telemetry.Good
	}
	return telemetry.Bad | reason(in.Err)
}

// Inspect reads every request of every group once and returns one
// Inspection per request, in plan order. A request that fails is reported
// in its Inspection and Inspect goes on with the next, except when the link
// broke (nothing more can be read) or ctx is done: then it returns the
// inspections so far and the error. Each request waits at most the
// device's timeout. Inspect does not change what Read reports (string
// history, logged failures), is safe to call while the collector polls, and
// works with or without Connect.
func (d *Driver) Inspect(ctx context.Context) ([]Inspection, error) {
	d.link.use()
	defer func() { _ = d.link.unuse() }()
	var out []Inspection
	for gi := range d.groups {
		g := &d.groups[gi]
		pts := make([]telemetry.Point, len(g.tags))
		for ri := range g.reqs {
			r := &g.reqs[ri]
			a, data, err := d.readRequest(ctx, r)
			now := time.Now()
			in := Inspection{Group: gi, Request: d.plan.Groups[gi].Requests[ri], Err: err}
			if a.frame != nil {
				in.Frame = a.frame
			}
			for _, ti := range r.tags {
				pts[ti] = telemetry.Point{Tag: g.tags[ti].name, Unit: g.tags[ti].unit, Time: now}
			}
			if err == nil {
				in.Data = slices.Clone(data)
				decodeInto(g, r, data, pts, now, nil)
			} else {
				for _, ti := range r.tags {
					pts[ti].Quality = telemetry.Bad | reason(err)
				}
			}
			for _, ti := range r.tags {
				in.Points = append(in.Points, pts[ti])
			}
			out = append(out, in)
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			if err != nil && reason(err) == telemetry.ReasonNoConnection {
				return out, err
			}
		}
	}
	return out, nil
}
