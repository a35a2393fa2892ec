package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Defaults for Device fields left zero and drivers without Timeout.
const (
	DefaultBackoffMin = time.Second
	DefaultBackoffMax = time.Minute
	DefaultTimeout    = 10 * time.Second
)

// Collector polls a fixed set of devices, one goroutine per device, and
// hands every batch to its Sink. Status is safe for concurrent use; Run is
// called once.
type Collector struct {
	devs []*device
	sink Sink
	log  *slog.Logger
}

// DeviceStatus is a snapshot of one device's health.
type DeviceStatus struct {
	Name         string
	Up           bool      // connected, and the last read succeeded
	Since        time.Time // when Up last changed (zero before the first attempt)
	LastError    string    // the last connect or read error, kept after recovery
	Polls        uint64    // Read calls made
	PollErrors   uint64    // failed Read and Connect calls
	SkippedTicks uint64    // poll ticks dropped because a read was still running or late
	LastPoll     time.Time // end of the last successful Read
}

// device is one Device and its status.
type device struct {
	Device
	log     *slog.Logger
	timeout time.Duration

	mu sync.Mutex // guards st
	st DeviceStatus
}

// New returns a collector for devs that sends batches to sink. Device
// names must be unique. log gets a "device" attribute per device; nil
// discards.
func New(devs []Device, sink Sink, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Collector{sink: sink, log: log}
	for _, dv := range devs {
		d := &device{Device: dv, log: log.With("device", dv.Name), timeout: DefaultTimeout}
		if t, ok := dv.Driver.(Timeouter); ok && t.Timeout() > 0 {
			d.timeout = t.Timeout()
		}
		if d.BackoffMin <= 0 {
			d.BackoffMin = DefaultBackoffMin
		}
		if d.BackoffMax <= 0 {
			d.BackoffMax = DefaultBackoffMax
		}
		d.BackoffMax = max(d.BackoffMax, d.BackoffMin)
		d.st.Name = dv.Name
		c.devs = append(c.devs, d)
	}
	return c
}

// Status returns the status of every device, in New's order.
func (c *Collector) Status() []DeviceStatus {
	out := make([]DeviceStatus, len(c.devs))
	for i, d := range c.devs {
		d.mu.Lock()
		out[i] = d.st
		d.mu.Unlock()
	}
	return out
}

// Run polls every device until ctx is done, then closes the drivers and
// returns nil once every device goroutine has exited. Devices that fail are
// retried forever; Run returns early only when the Sink fails, with a
// *DeviceError wrapping the Sink's error.
func (c *Collector) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, d := range c.devs {
		g.Go(func() error { return c.runDevice(ctx, d) })
	}
	return g.Wait()
}

// groupState is one poll group's schedule.
type groupState struct {
	period  time.Duration
	next    time.Time // when the next tick is due
	tags    []TagInfo
	rbe     exceptions // report-by-exception state of tags
	overrun bool       // the last read took longer than period
}

// poller is the state of one device goroutine.
type poller struct {
	c       *Collector
	d       *device
	groups  []groupState
	conn    bool              // the driver is connected
	up      bool              // connected and the last read succeeded
	known   bool              // up or down was decided once
	reason  telemetry.Quality // why the tags are Bad while down
	backoff time.Duration     // the next reconnect wait, before jitter
	retryAt time.Time         // when down: the next connect attempt
	batch   telemetry.Batch
	rctx    boundCtx // the context of reads by a DeadlineBound driver
}

// boundCtx is a context whose deadline is only reported (Deadline, Err),
// never acted on: Done is its parent's. The collector reuses one per
// device for the reads of a DeadlineBound driver.
type boundCtx struct {
	context.Context
	dl time.Time
}

func (c *boundCtx) Deadline() (time.Time, bool) {
	if dl, ok := c.Context.Deadline(); ok && dl.Before(c.dl) {
		return dl, true
	}
	return c.dl, true
}

func (c *boundCtx) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// runDevice is one device's goroutine. All scheduling happens here: a
// single timer wakes it for the earliest due tick or reconnect (ticks fall
// on the clock's multiples of each group's period: alignedStart); reads run
// inline, so a group's ticks that pass during its own read are skipped and
// counted, and other groups' due ticks run late, once.
func (c *Collector) runDevice(ctx context.Context, d *device) error {
	defer func() { _ = d.Driver.Close() }()
	p := &poller{c: c, d: d, backoff: d.BackoffMin, batch: telemetry.Batch{Device: d.Name}}
	now := time.Now()
	for i, period := range d.Driver.Groups() {
		period = max(period, time.Millisecond)
		tags := d.Driver.Tags(i)
		p.groups = append(p.groups, groupState{
			period: period,
			next:   alignedStart(now, period, d.PollOffset),
			tags:   tags,
			rbe:    newExceptions(tags),
		})
	}
	p.retryAt = now
	timer := time.NewTimer(0)
	defer timer.Stop()
	due := make([]int, 0, len(p.groups))
	for {
		now = time.Now()
		badSent := false
		if !p.conn && !now.Before(p.retryAt) {
			sent, err := p.connect(ctx)
			if err != nil || ctx.Err() != nil {
				return p.stopErr(ctx, err)
			}
			badSent = sent
			now = time.Now()
		}
		due = due[:0]
		for i := range p.groups {
			g := &p.groups[i]
			if now.Before(g.next) {
				continue
			}
			late := int64(now.Sub(g.next) / g.period) // ticks beyond the one we run
			g.next = g.next.Add(time.Duration(late+1) * g.period)
			if p.conn && late > 0 {
				p.update(func(st *DeviceStatus) { st.SkippedTicks += uint64(late) })
			}
			due = append(due, i)
		}
		for _, i := range due {
			var err error
			switch {
			case p.conn:
				var sent bool
				sent, err = p.read(ctx, i)
				badSent = badSent || sent
			case !badSent:
				err = p.sendBad(ctx, i, time.Now())
			}
			if err != nil || ctx.Err() != nil {
				return p.stopErr(ctx, err)
			}
		}
		wake := time.Time{}
		for i := range p.groups {
			if wake.IsZero() || p.groups[i].next.Before(wake) {
				wake = p.groups[i].next
			}
		}
		if !p.conn && (wake.IsZero() || p.retryAt.Before(wake)) {
			wake = p.retryAt
		}
		if wake.IsZero() {
			<-ctx.Done() // nothing to poll
			return nil
		}
		timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

// alignedStart returns the poll instant of a group with the given period
// that is due first: the last multiple of period on the clock (since the
// zero time, so 1s polls fall on whole UTC seconds and 1m polls on whole
// minutes) at or before now. It is due at once, and the ticks after it
// fall on the clock's multiples of period, so every device with the same
// interval polls at the same instants: their readings carry comparable
// timestamps, and the gateway handles each tick as one burst (one buffer
// commit and one wake-up for many devices instead of one per device, which
// costs about a third less CPU at 100 devices; docs/benchmarks.md).
//
// offset moves the instants that far past the multiples (modulo period).
//
// The result keeps now's monotonic clock reading, so a step of the wall
// clock later does not move the schedule.
func alignedStart(now time.Time, period, offset time.Duration) time.Time {
	offset %= period
	if offset < 0 {
		offset += period
	}
	shifted := now.Add(-offset)
	return now.Add(-shifted.Sub(shifted.Truncate(period)))
}

// stopErr turns the error that ended a device goroutine into Run's result:
// nil when ctx was cancelled, else a *DeviceError.
func (p *poller) stopErr(ctx context.Context, err error) error {
	if ctx.Err() != nil || err == nil {
		return nil
	}
	return &DeviceError{Device: p.d.Name, Err: err}
}

// connect makes one connect attempt. On failure it reports the device
// down; sent says whether it sent Bad batches. The error is the Sink's.
func (p *poller) connect(ctx context.Context) (sent bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, p.d.timeout)
	cerr := p.d.Driver.Connect(cctx)
	cancel()
	if ctx.Err() != nil {
		return false, nil
	}
	if cerr != nil {
		_ = p.d.Driver.Close() // drop whatever a half-done Connect left
		p.update(func(st *DeviceStatus) { st.PollErrors++ })
		return p.down(ctx, fmt.Errorf("connect: %w", cerr))
	}
	p.conn = true
	p.d.log.Debug("connected")
	return false, nil
}

// read polls group i. A read error reports the device down; sent says
// whether Bad batches went out. The error is the Sink's.
func (p *poller) read(ctx context.Context, i int) (sent bool, err error) {
	g := &p.groups[i]
	start := time.Now()
	var pts []telemetry.Point
	var rerr error
	if _, ok := p.d.Driver.(DeadlineBound); ok {
		p.rctx = boundCtx{Context: ctx, dl: start.Add(p.d.timeout)}
		pts, rerr = p.d.Driver.Read(&p.rctx, i, p.batch.Points[:0])
		p.rctx.Context = nil
	} else {
		rctx, cancel := context.WithTimeout(ctx, p.d.timeout)
		pts, rerr = p.d.Driver.Read(rctx, i, p.batch.Points[:0])
		cancel()
	}
	end := time.Now()
	p.batch.Points = pts
	if ctx.Err() != nil {
		return false, nil
	}
	// Ticks of this group that came while it was reading are skipped.
	var skipped uint64
	for !end.Before(g.next) {
		skipped++
		g.next = g.next.Add(g.period)
	}
	if over := end.Sub(start) > g.period; over != g.overrun {
		g.overrun = over
		if over {
			p.d.log.Warn("poll overran its interval", "interval", g.period, "took", end.Sub(start))
		}
	}
	p.update(func(st *DeviceStatus) {
		st.Polls++
		st.SkippedTicks += skipped
		if rerr == nil {
			st.LastPoll = end
		} else {
			st.PollErrors++
		}
	})
	if rerr != nil {
		_ = p.d.Driver.Close()
		p.conn = false
		return p.down(ctx, fmt.Errorf("read: %w", rerr))
	}
	p.setUp()
	p.batch.Points = g.rbe.apply(p.batch.Points, end)
	return false, p.send(ctx)
}

// setUp records a successful read: the device is up, and the backoff
// starts over. (Not a successful connect: a device that accepts connections
// but fails every read must keep backing off.)
func (p *poller) setUp() {
	p.backoff = p.d.BackoffMin
	if p.up {
		return
	}
	p.up, p.known = true, true
	for i := range p.groups {
		p.groups[i].rbe.reset() // every tag reports when a device comes back
	}
	now := time.Now()
	p.update(func(st *DeviceStatus) { st.Up, st.Since = true, now })
	p.d.log.Info("device up")
}

// down records a failed connect or read: it logs on the state change,
// schedules the next connect attempt, and on the change sends a Bad batch
// for every group.
func (p *poller) down(ctx context.Context, err error) (sent bool, serr error) {
	now := time.Now()
	p.reason = telemetry.Bad | telemetry.ReasonNoConnection
	var te interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &te) && te.Timeout()) {
		p.reason = telemetry.Bad | telemetry.ReasonTimeout
	}
	wait := p.backoff/2 + rand.N(p.backoff/2+1)
	p.retryAt = now.Add(wait)
	p.backoff = min(2*p.backoff, p.d.BackoffMax)
	derr := &DeviceError{Device: p.d.Name, Err: err}
	changed := p.up || !p.known
	p.up, p.known = false, true
	p.update(func(st *DeviceStatus) {
		st.LastError = derr.Error()
		if changed {
			st.Up, st.Since = false, now
		}
	})
	if !changed {
		return false, nil
	}
	p.d.log.Warn("device down", "err", err, "next_retry", wait)
	for i := range p.groups {
		if err := p.sendBad(ctx, i, now); err != nil {
			return true, err
		}
	}
	return true, nil
}

// sendBad sends group i with every tag Bad for the current reason. Tags
// with report-by-exception report the first Bad point (a change of
// quality), and then again only at their max_silence heartbeat.
func (p *poller) sendBad(ctx context.Context, i int, now time.Time) error {
	g := &p.groups[i]
	pts := p.batch.Points[:0]
	for _, t := range g.tags {
		pts = append(pts, telemetry.Point{Tag: t.Name, Unit: t.Unit, Quality: p.reason, Time: now})
	}
	p.batch.Points = g.rbe.apply(pts, now)
	return p.send(ctx)
}

// send hands the batch to the Sink; a batch that report-by-exception
// emptied is not sent.
func (p *poller) send(ctx context.Context) error {
	if len(p.batch.Points) == 0 {
		return nil
	}
	if err := p.c.sink(ctx, &p.batch); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}

// update changes the device's status under its lock.
func (p *poller) update(f func(*DeviceStatus)) {
	p.d.mu.Lock()
	f(&p.d.st)
	p.d.mu.Unlock()
}
