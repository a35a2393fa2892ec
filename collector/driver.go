package collector

import (
	"context"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Driver reads one device connection. The collector calls its methods from a
// single goroutine, in this order: Groups (any time), then Connect, any
// number of Read, and Close; after a failed Read it may call Close and
// Connect again. A Driver is not safe for concurrent use.
type Driver interface {
	// Groups returns the poll interval of each poll group; Read's group
	// argument indexes this slice. It does no I/O and never changes.
	Groups() []time.Duration
	// Connect opens the connection. It honours ctx's deadline.
	Connect(ctx context.Context) error
	// Read polls every tag of one group and appends one point per tag to
	// dst. A tag the device refused (an exception, a bad value) gets a point
	// with Bad quality and Read goes on; an error is returned only when the
	// connection itself failed, and then the collector reconnects.
	Read(ctx context.Context, group int, dst []telemetry.Point) ([]telemetry.Point, error)
	// Tags returns the names and units of one group's tags, in the order
	// Read appends them, so the collector can report them Bad while the
	// device is down.
	Tags(group int) []TagInfo
	// Close releases the connection. It is safe to call more than once.
	Close() error
}

// TagInfo names one tag of a poll group.
type TagInfo struct {
	Name   string
	Unit   string
	Filter Filter // report-by-exception; the zero Filter reports every reading
}

// Filter is a tag's report-by-exception setting, applied by the collector
// between the driver and the sink, for polled and for Bad points alike.
// With OnChange set a point is reported when
//   - it is the tag's first since the collector started or since the device
//     came back up (so every tag reports after an outage);
//   - its quality differs from the last reported one (class or reason: a tag
//     going Bad, or a clamp starting, reports at once);
//   - MaxSilence (if not 0) has passed since the tag was last reported: a
//     heartbeat that reports the current reading, also while the device is
//     down;
//   - its value moved from the last reported value (not the last reading)
//     by more than the deadband: |v-last| > Deadband, or with Percent
//     |v-last| > Deadband/100 * |last|, so from 0 any change counts. Bool
//     and string values, a zero Deadband, NaN and a change of kind report
//     on any change.
//
// Other points are dropped, and a batch left empty is not sent at all.
type Filter struct {
	OnChange   bool    // false: report every reading (the fields below are unused)
	Deadband   float64 // absolute, or percent of the last reported value's magnitude when Percent
	Percent    bool
	MaxSilence time.Duration // 0: no heartbeat
}

// Device is one device the collector polls.
type Device struct {
	Name   string
	Driver Driver
	// BackoffMin and BackoffMax bound the wait between reconnect attempts:
	// it starts at BackoffMin, doubles after each failed attempt up to
	// BackoffMax, and is jittered down by up to half. Zero means
	// DefaultBackoffMin and DefaultBackoffMax.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// PollOffset moves every poll instant this far past the clock's
	// multiples of its interval (alignedStart), e.g. to keep a device off
	// the instants another master polls it at. It is taken modulo each
	// group's period.
	PollOffset time.Duration
}

// Timeouter is implemented by drivers that know how long a Connect or a
// Read may take. The collector runs each call under a context with that
// timeout; for drivers without it, DefaultTimeout.
type Timeouter interface {
	Timeout() time.Duration
}

// DeadlineBound is implemented by drivers whose Read ends by its
// context's deadline on its own: every wait and every I/O it makes is
// bounded by ctx.Deadline(), not only by ctx.Done(). For them the
// collector passes a context that carries the read's deadline without a
// timer to close Done at it (context.WithTimeout for every read is an
// allocation, a runtime timer and a child registration: about 3 % of the
// gateway's CPU at 2 000 reads a second). Err reports
// context.DeadlineExceeded once the deadline has passed, as usual. The
// driver must not keep the context after Read returns.
type DeadlineBound interface {
	DeadlineBound()
}

// Sink takes each batch a device produces. It is called from the device's
// goroutine and may block (the buffer returns after its commit); the batch
// and its Points are only valid during the call.
type Sink func(ctx context.Context, b *telemetry.Batch) error

// Writer is implemented by drivers that can set a tag on the device. Unlike
// the Driver methods, Write may be called from any goroutine while the
// collector polls: the driver serialises it with its own requests. It
// converts v to the tag's type (undoing scale and offset); a v that does
// not fit the tag's type or range is an error wrapping ErrValueType, and
// nothing is written.
type Writer interface {
	Write(ctx context.Context, tag string, v telemetry.Value) error
}

// TagReader is implemented by drivers that can read one tag now, outside
// the poll schedule (for a write's old value and read-back check). Like
// Write it may be called from any goroutine while the collector polls.
type TagReader interface {
	ReadTag(ctx context.Context, tag string) (telemetry.Point, error)
}
