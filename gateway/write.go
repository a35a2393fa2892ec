package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fieldgate/fieldgate/audit"
	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
)

// defaultWriteTimeout bounds a write (and each read around it) on a driver
// that does not say how long its requests take.
const defaultWriteTimeout = 10 * time.Second

// writer is the gateway's one write path: every format's commands reach
// Write through the uplink's Writes queue. It checks, in this order, that
// the device and the tag exist, that the tag is writable, that the value's
// type fits the tag, that it lies within the tag's type and its min/max,
// and the tag's rate limit; then it reads the old value, writes with a
// timeout and, with verify: true, reads the value back and compares. Every
// attempt, carried out or not, gets exactly one audit entry and one count
// in fieldgate_writes_total.
//
// Write is called from the Writes goroutine only; Reject, observe and
// counts may be called from any goroutine.
type writer struct {
	devices map[string]*writeDevice
	audit   *audit.Log
	log     *slog.Logger

	mu     sync.Mutex           // guards counts, the tags' latest values and rate limits
	counts map[[2]string]uint64 // {device, result} → writes; device "" for unknown devices
}

// writeDevice is one device's writable side.
type writeDevice struct {
	name    string
	w       collector.Writer    // nil when the driver cannot write
	r       collector.TagReader // nil: old values come from the last reading
	timeout time.Duration
	tags    map[string]*writeTag // the writable tags only
	cfg     *config.Device       // to tell a tag that is not writable from one that does not exist
}

// tagKind is the kind of value a tag takes.
type tagKind uint8

const (
	kindAny    tagKind = iota // the driver decides (OPC UA: the server knows the type)
	kindBool                  // true or false
	kindInt                   // whole numbers, signed
	kindUint                  // whole numbers, not negative
	kindFloat                 // any number (float types, and scaled integers in engineering units)
	kindString                // text
)

// writeTag is one tag's write settings.
type writeTag struct {
	name     string
	writable bool
	kind     tagKind
	typ      string  // the configured type, for messages ("" for OPC UA)
	lo, hi   float64 // what the type holds, in engineering units; ±Inf when unbounded
	maxLen   int     // kindString: most bytes
	min, max *float64
	limit    *rateLimit // nil: none
	verify   bool
	tol      float64 // verify: the largest difference that counts as equal

	latest telemetry.Value // the last Good reading, for devices without a TagReader; guarded by writer.mu
}

// newWriter builds the write path of cfg's devices; drivers are matched by
// name.
func newWriter(cfg *config.Config, devs []collector.Device, al *audit.Log, log *slog.Logger) *writer {
	w := &writer{devices: map[string]*writeDevice{}, audit: al, log: log, counts: map[[2]string]uint64{}}
	drivers := map[string]collector.Driver{}
	for _, d := range devs {
		drivers[d.Name] = d.Driver
	}
	for i, d := range cfg.Devices {
		drv := drivers[d.Name]
		wd := &writeDevice{name: d.Name, timeout: defaultWriteTimeout, tags: map[string]*writeTag{}}
		wd.w, _ = drv.(collector.Writer)
		wd.r, _ = drv.(collector.TagReader)
		if to, ok := drv.(collector.Timeouter); ok && to.Timeout() > 0 {
			wd.timeout = to.Timeout()
		}
		wd.cfg = &cfg.Devices[i]
		// Settings are kept for writable tags only: a gateway reads
		// thousands of tags and writes a few.
		for i := range d.Tags {
			t := &d.Tags[i]
			if t.Writable {
				wd.tags[t.Name] = modbusWriteTag(t, writeLimit(t.Writable, t.RateLimit, t.Min, t.Max, t.Verify))
			}
		}
		for i := range d.OPCUATags {
			t := &d.OPCUATags[i]
			if !t.Writable {
				continue
			}
			wt := writeLimit(t.Writable, t.RateLimit, t.Min, t.Max, t.Verify)
			wt.name, wt.kind, wt.lo, wt.hi, wt.maxLen = t.Name, kindAny, math.Inf(-1), math.Inf(1), uplink.MaxCommandBytes
			wd.tags[t.Name] = wt
		}
		w.devices[d.Name] = wd
	}
	return w
}

// hasTag reports whether the device's config has a tag of that name.
func (d *writeDevice) hasTag(name string) bool {
	if d.cfg == nil {
		return false
	}
	for i := range d.cfg.Tags {
		if d.cfg.Tags[i].Name == name {
			return true
		}
	}
	for i := range d.cfg.OPCUATags {
		if d.cfg.OPCUATags[i].Name == name {
			return true
		}
	}
	return false
}

// writeLimit starts a writeTag with the settings every protocol shares.
func writeLimit(writable bool, rate string, min, max *float64, verify bool) *writeTag {
	t := &writeTag{writable: writable, min: min, max: max, verify: verify}
	if n, per, err := config.ParseRateLimit(rate); rate != "" && err == nil {
		t.limit = &rateLimit{n: n, per: per, text: rate}
	}
	return t
}

// modbusWriteTag completes t from a Modbus tag's type, scale and offset.
func modbusWriteTag(c *modbus.Tag, t *writeTag) *writeTag {
	t.name, t.typ = c.Name, c.Type.String()
	lo, hi := math.Inf(-1), math.Inf(1)
	switch c.Type {
	case modbus.TypeBool:
		t.kind = kindBool
		return t
	case modbus.TypeString:
		t.kind, t.maxLen = kindString, 2*int(c.Length)
		return t
	case modbus.TypeInt16:
		t.kind, lo, hi = kindInt, math.MinInt16, math.MaxInt16
	case modbus.TypeInt32:
		t.kind, lo, hi = kindInt, math.MinInt32, math.MaxInt32
	case modbus.TypeInt64:
		t.kind, lo, hi = kindInt, math.MinInt64, math.MaxInt64
	case modbus.TypeUint16:
		t.kind, lo, hi = kindUint, 0, math.MaxUint16
	case modbus.TypeUint32:
		t.kind, lo, hi = kindUint, 0, math.MaxUint32
	case modbus.TypeUint64:
		t.kind, lo, hi = kindUint, 0, math.MaxUint64
	case modbus.TypeBCD16:
		t.kind, lo, hi = kindUint, 0, 9999
	case modbus.TypeBCD32:
		t.kind, lo, hi = kindUint, 0, 99999999
	case modbus.TypeFloat32:
		t.kind, lo, hi = kindFloat, -math.MaxFloat32, math.MaxFloat32
		t.tol = 1e-6 // relative: float32 keeps about 7 digits
	default: // float64
		t.kind = kindFloat
		t.tol = 1e-12
	}
	if c.Scale == nil && c.ValueOffset == nil {
		t.lo, t.hi = lo, hi
		return t
	}
	// A scaled tag takes engineering units, any number; the raw value is
	// rounded for integer types, so read-back may differ by half a step.
	scale, add := 1.0, 0.0
	if c.Scale != nil {
		scale = *c.Scale
	}
	if c.ValueOffset != nil {
		add = *c.ValueOffset
	}
	if t.kind != kindFloat {
		t.tol = math.Abs(scale) / 2
	}
	t.kind = kindFloat
	t.lo, t.hi = lo*scale+add, hi*scale+add
	if t.lo > t.hi {
		t.lo, t.hi = t.hi, t.lo
	}
	return t
}

// rateLimit allows n accepted writes in any window of per.
type rateLimit struct {
	n    int
	per  time.Duration
	text string      // as configured, for messages
	at   []time.Time // the last accepted writes, oldest first, at most n
}

// allow reports whether a write at now keeps within the limit, and if not
// how long until one would; an allowed write is counted.
func (r *rateLimit) allow(now time.Time) (bool, time.Duration) {
	cutoff := now.Add(-r.per)
	i := 0
	for i < len(r.at) && !r.at[i].After(cutoff) {
		i++
	}
	r.at = r.at[i:]
	if len(r.at) >= r.n {
		return false, r.at[0].Sub(cutoff)
	}
	r.at = append(r.at, now)
	return true, 0
}

// Write carries out one request; see writer.
func (w *writer) Write(ctx context.Context, req uplink.WriteRequest) uplink.WriteResult {
	start := time.Now()
	e := audit.Entry{Time: start, Event: audit.EventWrite, Source: req.Source, Topic: req.Topic, ID: req.ID,
		Device: req.Device, Tag: req.Tag, New: req.Value}
	r := w.write(ctx, req, &e)
	e.Duration = time.Since(start)
	w.record(&e, r)
	return r
}

// Reject records a request answered without Write (uplink.Rejecter).
func (w *writer) Reject(req uplink.WriteRequest, r uplink.WriteResult) {
	e := audit.Entry{Event: audit.EventWrite, Source: req.Source, Topic: req.Topic, ID: req.ID,
		Device: req.Device, Tag: req.Tag, New: req.Value}
	w.record(&e, r)
}

func reject(code, format string, args ...any) uplink.WriteResult {
	return uplink.WriteResult{Code: code, Reason: fmt.Sprintf(format, args...)}
}

func (w *writer) write(ctx context.Context, req uplink.WriteRequest, e *audit.Entry) uplink.WriteResult {
	if err := w.audit.Err(); err != nil {
		// Only what leaves a trace is written; this attempt's own entry
		// may get through and clear the error for the next one.
		return reject(uplink.RejectAuditUnavailable, "the audit log cannot be written, so writes are refused: %v", err)
	}
	d := w.devices[req.Device]
	if d == nil {
		return reject(uplink.RejectUnknownDevice, "no device %q on this gateway", req.Device)
	}
	t := d.tags[req.Tag]
	if t == nil && !d.hasTag(req.Tag) {
		return reject(uplink.RejectUnknownTag, "device %s has no tag %q", d.name, req.Tag)
	}
	if t == nil || !t.writable {
		return reject(uplink.RejectNotWritable, "tag %s of %s is not writable (the config must say writable: true)", req.Tag, d.name)
	}
	v, r := t.check(req.Value)
	if !r.OK() {
		return r
	}
	e.New = v
	if d.w == nil {
		return reject(uplink.RejectNotWritable, "the driver of %s cannot write", d.name)
	}
	if t.limit != nil {
		w.mu.Lock()
		ok, wait := t.limit.allow(time.Now())
		w.mu.Unlock()
		if !ok {
			return reject(uplink.RejectRateLimited, "tag %s allows %s; the next write is possible in %v", t.name, t.limit.text, wait.Round(time.Millisecond))
		}
	}
	e.Old = w.old(ctx, d, t)

	wctx, cancel := context.WithTimeout(ctx, d.timeout)
	err := d.w.Write(wctx, t.name, v)
	cancel()
	switch {
	case errors.Is(err, collector.ErrValueType):
		return reject(uplink.RejectWrongType, "%v", err)
	case err != nil:
		return reject(uplink.FailDevice, "%v", err)
	}
	if t.verify {
		return w.verify(ctx, d, t, v)
	}
	return uplink.WriteResult{Code: uplink.WriteOK}
}

// old returns the tag's value before the write: read now when the driver
// can, else the last Good reading; none when neither is known.
func (w *writer) old(ctx context.Context, d *writeDevice, t *writeTag) telemetry.Value {
	if d.r == nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		return t.latest
	}
	rctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	p, err := d.r.ReadTag(rctx, t.name)
	if err != nil || !p.Quality.IsGood() {
		return telemetry.Value{}
	}
	return p.Value
}

// verify reads the tag back and compares it with what was written.
func (w *writer) verify(ctx context.Context, d *writeDevice, t *writeTag, want telemetry.Value) uplink.WriteResult {
	if d.r == nil {
		return reject(uplink.FailVerify, "the value was written, but the driver of %s cannot read it back", d.name)
	}
	rctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	p, err := d.r.ReadTag(rctx, t.name)
	switch {
	case err != nil:
		return reject(uplink.FailVerify, "the value was written, but reading it back failed: %v", err)
	case p.Quality.Class() == telemetry.Bad:
		return reject(uplink.FailVerify, "the value was written, but reading it back gave quality %s", p.Quality)
	case !t.same(p.Value, want):
		return reject(uplink.FailVerify, "wrote %v but read back %v", want, p.Value)
	}
	return uplink.WriteResult{Code: uplink.WriteOK}
}

// same reports whether a value read back matches the one written, within
// the tag's tolerance for numbers.
func (t *writeTag) same(got, want telemetry.Value) bool {
	num := func(v telemetry.Value) bool {
		k := v.Kind()
		return k == telemetry.KindInt || k == telemetry.KindUint || k == telemetry.KindFloat
	}
	switch {
	case num(got) && num(want):
		if got.Kind() != telemetry.KindFloat && want.Kind() != telemetry.KindFloat {
			return got.String() == want.String() // exact, whether int or uint
		}
		tol := t.tol
		if t.kind == kindAny {
			tol = 1e-6 // the server may hold a float32
		}
		g, w := got.AsFloat(), want.AsFloat()
		diff := math.Abs(g - w)
		if t.kind == kindFloat && t.typ != "float32" && t.typ != "float64" {
			return diff <= tol+1e-9*math.Max(1, math.Abs(w)) // a scaled integer: half a raw step
		}
		return diff <= tol*math.Max(1, math.Abs(w))
	case got.Kind() == telemetry.KindString && want.Kind() == telemetry.KindString:
		return strings.TrimRight(got.AsString(), "\x00 ") == strings.TrimRight(want.AsString(), "\x00 ")
	case got.Kind() == telemetry.KindBool && want.Kind() == telemetry.KindBool:
		return got.AsBool() == want.AsBool()
	}
	return got.Equal(want)
}

// check returns the value to write for v, or why it does not fit the tag:
// wrong_type or out_of_range. A whole float (12.0) becomes an int for an
// integer tag.
func (t *writeTag) check(v telemetry.Value) (telemetry.Value, uplink.WriteResult) {
	ok := uplink.WriteResult{Code: uplink.WriteOK}
	k := v.Kind()
	numeric := k == telemetry.KindInt || k == telemetry.KindUint || k == telemetry.KindFloat
	switch t.kind {
	case kindBool:
		if k != telemetry.KindBool {
			return v, reject(uplink.RejectWrongType, "tag %s is a bool; send true or false, not %s", t.name, describe(v))
		}
		return v, ok
	case kindString:
		if k != telemetry.KindString {
			return v, reject(uplink.RejectWrongType, "tag %s is a string; send text, not %s", t.name, describe(v))
		}
		if n := len(v.AsString()); n > t.maxLen {
			return v, reject(uplink.RejectOutOfRange, "the text is %d bytes, longer than the %d bytes tag %s holds", n, t.maxLen, t.name)
		}
		return v, ok
	case kindAny:
		if !numeric && (t.min != nil || t.max != nil) {
			return v, reject(uplink.RejectWrongType, "tag %s has a min/max, so it takes numbers, not %s", t.name, describe(v))
		}
		if !numeric {
			return v, ok
		}
	case kindInt, kindUint, kindFloat:
		if !numeric {
			return v, reject(uplink.RejectWrongType, "tag %s is %s; send a number, not %s", t.name, t.typ, describe(v))
		}
	}
	if t.kind == kindInt || t.kind == kindUint {
		if k == telemetry.KindFloat {
			switch f := v.AsFloat(); {
			case f != math.Trunc(f):
				return v, reject(uplink.RejectWrongType, "tag %s is %s, which holds whole numbers; %v is not one", t.name, t.typ, v)
			case f >= math.MinInt64 && f < -math.MinInt64:
				v = telemetry.Int(int64(f))
			case f >= 0 && f < 2*-math.MinInt64:
				v = telemetry.Uint(uint64(f))
			default:
				return v, reject(uplink.RejectOutOfRange, "%v is beyond what tag %s can hold (%s)", v, t.name, t.typ)
			}
		}
		if v.Kind() == telemetry.KindUint && t.typ == "int64" && v.AsUint() > math.MaxInt64 {
			return v, reject(uplink.RejectOutOfRange, "%v is above %d, the most tag %s can hold (int64)", v, int64(math.MaxInt64), t.name)
		}
	}
	f := v.AsFloat() // exact enough: the bounds of 64-bit types are powers of two
	if t.kind != kindAny {
		switch {
		case f < t.lo:
			return v, reject(uplink.RejectOutOfRange, "%v is below %g, the least tag %s can hold (%s)", v, t.lo, t.name, t.typ)
		case f > t.hi:
			return v, reject(uplink.RejectOutOfRange, "%v is above %g, the most tag %s can hold (%s)", v, t.hi, t.name, t.typ)
		}
	}
	switch {
	case t.min != nil && f < *t.min:
		return v, reject(uplink.RejectOutOfRange, "%v is below min %g", v, *t.min)
	case t.max != nil && f > *t.max:
		return v, reject(uplink.RejectOutOfRange, "%v is above max %g", v, *t.max)
	}
	return v, ok
}

// describe names a value's kind for a message: "the string \"on\"".
func describe(v telemetry.Value) string {
	switch v.Kind() {
	case telemetry.KindBool:
		return "the bool " + v.String()
	case telemetry.KindString:
		s := v.AsString()
		if len(s) > 32 {
			s = s[:32] + "..."
		}
		return "the string " + strconv.Quote(s)
	case telemetry.KindNone:
		return "no value"
	}
	return "the number " + v.String()
}

// record writes e's audit entry with result r, counts it and logs it.
func (w *writer) record(e *audit.Entry, r uplink.WriteResult) {
	e.Result, e.Reason = r.Code, r.Reason
	_ = w.audit.Write(*e) // a failure is logged by the audit log and refuses the next write
	dev := e.Device
	if w.devices[dev] == nil {
		dev = "" // a name from outside: not a metric label
	}
	w.mu.Lock()
	w.counts[[2]string{dev, r.Code}]++
	w.mu.Unlock()
	attrs := []any{"device", e.Device, "tag", e.Tag, "value", e.New, "source", e.Source, "id", e.ID, "result", r.Code}
	if r.OK() {
		w.log.Info("write done", append(attrs, "old", e.Old, "duration", e.Duration)...)
	} else {
		w.log.Warn("write refused or failed", append(attrs, "reason", r.Reason)...)
	}
}

// observe keeps the last Good value of the writable tags of devices whose
// driver cannot read one tag, as their writes' old value. It is called for
// every committed batch and costs one map lookup for other devices.
func (w *writer) observe(b *telemetry.Batch) {
	d := w.devices[b.Device]
	if d == nil || d.r != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range b.Points {
		p := &b.Points[i]
		if t := d.tags[p.Tag]; t != nil && t.writable && p.Quality.IsGood() {
			v := p.Value
			if v.Kind() == telemetry.KindString {
				v = telemetry.String(strings.Clone(v.AsString())) // the batch is reused
			}
			t.latest = v
		}
	}
}

// eachCount calls fn with every {device, result} count.
func (w *writer) eachCount(fn func(device, result string, n uint64)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, n := range w.counts {
		fn(k[0], k[1], n)
	}
}

// defaultDropInterval is how often the buffer's drop counters are checked
// for the audit log.
const defaultDropInterval = 10 * time.Second

func (g *Gateway) dropInterval() time.Duration {
	if g.opts.DropAuditInterval > 0 {
		return g.opts.DropAuditInterval
	}
	return defaultDropInterval
}

// auditDrops writes one buffer_drop audit entry per device whose dropped
// readings grew, every interval and once more when ctx is done, so the
// entries are bounded whatever the drop rate.
func (g *Gateway) auditDrops(ctx context.Context, interval time.Duration) {
	last := map[string]bufferDrops{}
	check := func() {
		for dev, d := range g.queue.DroppedByDevice() {
			p := last[dev]
			if d.Records <= p.Records && d.Points <= p.Points {
				continue
			}
			_ = g.audit.Write(audit.Entry{Event: audit.EventBufferDrop, Device: dev,
				Records: d.Records - min(p.Records, d.Records), Points: d.Points - min(p.Points, d.Points)})
			last[dev] = bufferDrops{d.Records, d.Points}
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			check()
			return
		case <-t.C:
			check()
		}
	}
}

type bufferDrops struct{ Records, Points uint64 }
