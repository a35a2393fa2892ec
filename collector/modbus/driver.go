package modbus

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/telemetry"
)

// Driver polls one Modbus device: Modbus TCP, RTU on a serial line, RTU
// through a TCP serial server, or ASCII. It implements collector.Driver and
// collector's optional Timeout method. Like every collector.Driver its
// Connect, Read and Close are called from one goroutine; Plan, Groups,
// Tags and Timeout may be called at any time, and Write and Inspect are
// safe to call from other goroutines while it polls (they take their turn
// on the link).
type Driver struct {
	ep      Endpoint
	unit    uint8
	timeout time.Duration // per request
	pause   time.Duration // between two requests of this device
	multi   bool          // write with FC15/FC16 only
	log     *slog.Logger
	groups  []group
	polls   []time.Duration
	plan    Plan
	maxReqs int            // most requests in one group
	byName  map[string]int // tag name -> index into tags
	tags    []*tag         // every tag once, for Write

	link      *link
	pk        mb.Packager  // goburrow's packager for the transport, with our unit id
	connected bool         // Connect succeeded and Close was not called since
	lastReq   atomic.Int64 // UnixNano when this device's last request ended

	infos [][]collector.TagInfo // per group, in Read's order
	state [][]reqState          // per group, per request
	last  [][]string            // per group, per tag: the last string read
}

// reqState remembers how a request's last answer failed, so the driver
// logs once per change, not once per poll.
type reqState struct{ failing telemetry.Quality }

// Option changes how New builds a Driver.
type Option func(*options)

type options struct {
	links *Links
	multi bool
}

// WithLinks makes the driver share its link with the other drivers built
// with the same Links: devices whose Endpoint.Link() is equal (one serial
// port, one TCP serial server, one Modbus TCP address) then use one
// connection and take turns on it. Without it each Driver has a link of its
// own.
func WithLinks(l *Links) Option { return func(o *options) { o.links = l } }

// WithMultipleWrites makes Write use function 15 (write multiple coils) and
// 16 (write multiple registers) even for one coil or register, for devices
// that do not implement functions 5 and 6.
func WithMultipleWrites() Option { return func(o *options) { o.multi = true } }

// New builds the driver for device and its read plan from cfg, which the
// config package has validated. It does no I/O. Defaults: timeout
// DefaultTimeout, max_gap DefaultMaxGap, order ABCD, a tag's poll interval
// cfg.Poll. The gateway passes a log that already carries the "device"
// attribute, and wraps New's errors with the device's name. A nil log
// discards.
func New(device string, cfg Config, log *slog.Logger, opts ...Option) (*Driver, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	ep, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{
		ep:      ep,
		unit:    cfg.Unit,
		timeout: cfg.Timeout,
		pause:   max(cfg.Pause, 0),
		multi:   o.multi,
		log:     log,
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	switch ep.Transport {
	case TCP:
		h := mb.NewTCPClientHandler("")
		h.SlaveId = d.unit
		d.pk = h
	case RTU, RTUOverTCP:
		h := mb.NewRTUClientHandler("")
		h.SlaveId = d.unit
		d.pk = h
	case ASCII:
		h := mb.NewASCIIClientHandler("")
		h.SlaveId = d.unit
		d.pk = h
	}
	lim := limits{maxGap: DefaultMaxGap, maxRegisters: MaxRegistersPerRequest, maxBits: MaxBitsPerRequest}
	if cfg.MaxGap != nil {
		lim.maxGap = int(*cfg.MaxGap)
	}
	if cfg.MaxRegisters > 0 && cfg.MaxRegisters < MaxRegistersPerRequest {
		lim.maxRegisters = int(cfg.MaxRegisters)
	}
	if cfg.MaxBits > 0 && cfg.MaxBits < MaxBitsPerRequest {
		lim.maxBits = int(cfg.MaxBits)
	}
	var c *compiled
	key, shared := compiledKey{}, false
	if o.links != nil {
		key, shared = keyOf(cfg, lim)
	}
	if shared {
		c = o.links.compiled(key, cfg.Tags)
	}
	if c == nil {
		if c, err = compile(cfg, lim); err != nil {
			return nil, err
		}
		if shared {
			o.links.keep(key, c)
		}
	}
	if o.links != nil {
		if d.link, err = o.links.get(ep); err != nil {
			return nil, err
		}
	} else {
		d.link = newLink(ep, log)
	}
	d.link.budget.Add(int64(d.timeout + d.pause))
	d.groups, d.polls, d.infos, d.byName, d.tags, d.maxReqs = c.groups, c.polls, c.infos, c.byName, c.tags, c.maxReqs
	d.plan = Plan{Device: device, Groups: c.plan}
	d.state = make([][]reqState, len(d.groups))
	d.last = make([][]string, len(d.groups))
	for i := range d.groups {
		d.state[i] = make([]reqState, len(d.groups[i].reqs))
		d.last[i] = make([]string, len(d.groups[i].tags))
	}
	return d, nil
}

// compiled is what New makes of a device's tags: the poll groups, their
// requests and tags' decoding settings. It never changes after compile, so
// devices whose tags are the same (one device profile) share it through
// their Links: 100 devices of a 120-tag profile keep one copy instead of
// 100 (about 4 MiB).
type compiled struct {
	src     []Tag // the configured tags compiled (a copy)
	groups  []group
	polls   []time.Duration
	infos   [][]collector.TagInfo // per group, in Read's order
	byName  map[string]int        // tag name -> index into tags
	tags    []*tag                // every tag once, for Write
	plan    []PlanGroup
	maxReqs int // most requests in one group
}

// compiledKey identifies the input of compile: the configured tags (by a
// hash of their JSON form), the device's poll interval and request limits.
type compiledKey struct {
	tags [sha256.Size]byte
	poll time.Duration
	lim  limits
}

// keyOf returns cfg's compiledKey; false if it has none (tags that JSON
// cannot hold, such as a NaN scale, are compiled for each device).
func keyOf(cfg Config, lim limits) (compiledKey, bool) {
	b, err := json.Marshal(cfg.Tags)
	if err != nil {
		return compiledKey{}, false
	}
	return compiledKey{sha256.Sum256(b), cfg.Poll, lim}, true
}

// compile resolves cfg's tags and plans their requests.
func compile(cfg Config, lim limits) (*compiled, error) {
	tags := make([]tag, 0, len(cfg.Tags))
	polls := make([]time.Duration, 0, len(cfg.Tags))
	var errs []error
	for i := range cfg.Tags {
		t, err := resolve(&cfg.Tags[i], lim)
		if err != nil {
			errs = append(errs, fmt.Errorf("tag %q: %w", cfg.Tags[i].Name, err))
			continue
		}
		p := cfg.Tags[i].Poll
		if p <= 0 {
			p = cfg.Poll
		}
		if p <= 0 {
			errs = append(errs, fmt.Errorf("tag %q: no poll interval", cfg.Tags[i].Name))
			continue
		}
		tags = append(tags, t)
		polls = append(polls, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(tags) == 0 {
		return nil, errors.New("no tags")
	}
	c := &compiled{src: slices.Clone(cfg.Tags), groups: plan(tags, polls, lim), byName: map[string]int{}}
	for i := range c.groups {
		g := &c.groups[i]
		c.polls = append(c.polls, g.poll)
		c.maxReqs = max(c.maxReqs, len(g.reqs))
		pg := PlanGroup{Poll: g.poll}
		infos := make([]collector.TagInfo, len(g.tags))
		for ti := range g.tags {
			t := &g.tags[ti]
			pg.Tags = append(pg.Tags, t.name)
			infos[ti] = t.info()
			if _, dup := c.byName[t.name]; !dup {
				c.byName[t.name] = len(c.tags)
				c.tags = append(c.tags, t)
			}
		}
		c.infos = append(c.infos, infos)
		for _, r := range g.reqs {
			pr := Request{Table: r.table, Start: r.start, Count: r.count}
			for _, ti := range r.tags {
				pr.Tags = append(pr.Tags, g.tags[ti].name)
			}
			pg.Requests = append(pg.Requests, pr)
		}
		c.plan = append(c.plan, pg)
	}
	return c, nil
}

// Endpoint returns the device's parsed URL.
func (d *Driver) Endpoint() Endpoint { return d.ep }

// Plan returns the read plan. The caller must not modify it.
func (d *Driver) Plan() Plan { return d.plan }

// Groups returns the poll interval of each group, shortest first.
func (d *Driver) Groups() []time.Duration { return d.polls }

// Tags returns the names and units of one group's tags in Read's order.
// The caller must not modify the slice.
func (d *Driver) Tags(group int) []collector.TagInfo { return d.infos[group] }

// Timeout returns the longest a Connect or a Read should take: per request
// of the largest group the request timeout and the pause, plus one timeout
// for a reconnect; on a shared link also, per request, one turn of every
// other device built so far on that link (timeout plus pause), since each
// request may have to wait for one.
// DeadlineBound says that Read ends by its context's deadline on its own
// (collector.DeadlineBound): the wait for the link's turn, the pauses and
// every request are bounded by ctx.Deadline().
func (*Driver) DeadlineBound() {}

func (d *Driver) Timeout() time.Duration {
	n := time.Duration(d.maxReqs)
	others := time.Duration(d.link.budget.Load()) - d.timeout - d.pause
	return d.timeout*(n+1) + d.pause*n + others*n
}

// Connect opens the device's link, or joins it when another device has
// opened it already, dropping this driver's previous use of it. It gives up
// after the configured timeout or ctx's deadline, whichever comes first.
func (d *Driver) Connect(ctx context.Context) error {
	_ = d.Close()
	d.link.use()
	err := d.link.lock(ctx)
	if err == nil {
		err = d.link.openLocked(ctx, d.timeout)
		d.link.unlock()
	}
	if err != nil {
		_ = d.link.unuse()
		return fmt.Errorf("connect %s: %w", d.ep.Link(), err)
	}
	d.connected = true
	return nil
}

// Close leaves the link; the last device to leave closes it. It is safe to
// call more than once.
func (d *Driver) Close() error {
	if !d.connected {
		return nil
	}
	d.connected = false
	return d.link.unuse()
}

// errNotConnected is returned by Read before Connect.
var errNotConnected = errors.New("not connected")

// transact sends one request to the device in its turn on the link, after
// the device's pause since its previous request.
func (d *Driver) transact(ctx context.Context, fc byte, data []byte) (answer, error) {
	if err := d.waitPause(ctx); err != nil {
		return answer{}, err
	}
	if err := d.link.lock(ctx); err != nil {
		return answer{}, err
	}
	defer d.link.unlock()
	return d.transactLocked(ctx, fc, data)
}

// transactLocked is transact for a caller that holds the link's turn.
func (d *Driver) transactLocked(ctx context.Context, fc byte, data []byte) (answer, error) {
	if err := ctx.Err(); err != nil {
		return answer{}, err
	}
	a, err := d.link.transactLocked(ctx, d.pk, fc, data, d.timeout)
	d.lastReq.Store(time.Now().UnixNano())
	return a, err
}

// waitPause sleeps until the device's pause since its last request has
// passed. It runs before the device takes its turn, so other devices may
// use the link meanwhile.
func (d *Driver) waitPause(ctx context.Context) error {
	if d.pause <= 0 {
		return nil
	}
	last := d.lastReq.Load()
	if last == 0 {
		return nil
	}
	if wait := time.Until(time.Unix(0, last).Add(d.pause)); wait > 0 {
		return sleep(ctx, wait)
	}
	return nil
}

// readRequest reads the registers or bits of r and returns the answer and
// the data bytes (registers 2 bytes each high byte first; bits packed).
func (d *Driver) readRequest(ctx context.Context, r *request) (answer, []byte, error) {
	fc := Request{Table: r.table}.Function()
	var pdu [4]byte
	binary.BigEndian.PutUint16(pdu[0:], r.start)
	binary.BigEndian.PutUint16(pdu[2:], r.count)
	a, err := d.transact(ctx, fc, pdu[:])
	if err != nil {
		return a, nil, fmt.Errorf("read %s: %w", requestName(r), err)
	}
	want := 2 * int(r.count)
	if r.table.IsBit() {
		want = (int(r.count) + 7) / 8
	}
	if len(a.data) != 1+want || int(a.data[0]) != want {
		return a, nil, fmt.Errorf("read %s: %w", requestName(r), badResponse("%d data bytes, want %d", len(a.data)-1, want))
	}
	return a, a.data[1:], nil
}

// Read polls one group: one request after another, appending one point per
// tag to dst in the order of Tags(group).
//
// A request answered with an exception, a bad CRC or a wrong answer makes
// its tags Bad with that reason (exception, crc, bad_response); the others
// stay Good and the link is kept. On a serial bus (and through a serial
// server) a timeout means that this slave is silent: its request's tags and
// those of the group's remaining requests become Bad|timeout, so a dead
// slave costs one timeout per poll, and Read returns an error only when no
// request of the group was answered, so that the collector backs off this
// device alone. On Modbus TCP a timeout ends the read with an error. A
// broken connection always does.
func (d *Driver) Read(ctx context.Context, group int, dst []telemetry.Point) ([]telemetry.Point, error) {
	if !d.connected {
		return dst, errNotConnected
	}
	g := &d.groups[group]
	base := len(dst)
	dst = slices.Grow(dst, len(g.tags))[:base+len(g.tags)]
	pts := dst[base:]
	for i := range g.tags {
		pts[i] = telemetry.Point{Tag: g.tags[i].name, Unit: g.tags[i].unit}
	}
	answered := false
	for ri := range g.reqs {
		r := &g.reqs[ri]
		_, data, err := d.readRequest(ctx, r)
		now := time.Now()
		if err == nil {
			answered = true
			d.setFailing(group, ri, 0, nil)
			d.decodeRequest(group, r, data, pts, now)
			continue
		}
		why := reason(err)
		switch {
		case why == telemetry.ReasonTimeout && d.link.shared() && ctx.Err() == nil:
			if !answered {
				return dst[:base], err
			}
			d.setFailing(group, ri, why, err)
			for _, r := range g.reqs[ri:] {
				for _, ti := range r.tags {
					pts[ti].Quality = telemetry.Bad | why
					pts[ti].Time = now
				}
			}
			return dst, nil
		case why == telemetry.ReasonTimeout || why == telemetry.ReasonNoConnection:
			return dst[:base], err
		}
		answered = true
		d.setFailing(group, ri, why, err)
		for _, ti := range r.tags {
			pts[ti].Quality = telemetry.Bad | why
			pts[ti].Time = now
		}
	}
	return dst, nil
}

// setFailing records request ri's outcome and logs when it changes.
func (d *Driver) setFailing(group, ri int, why telemetry.Quality, err error) {
	st := &d.state[group][ri]
	if st.failing == why {
		return
	}
	r := &d.groups[group].reqs[ri]
	if why == 0 {
		d.log.Info("request answered again", "request", requestName(r))
	} else {
		d.log.Warn("request failed", "request", requestName(r), "reason", (telemetry.Bad | why).ReasonString(), "err", err)
	}
	st.failing = why
}

// decodeRequest fills the points of r's tags (pts is indexed like the
// group's tags) from the response data, remembering string values for the
// next poll.
func (d *Driver) decodeRequest(group int, r *request, data []byte, pts []telemetry.Point, now time.Time) {
	decodeInto(&d.groups[group], r, data, pts, now, d.last[group])
}

// decodeInto is decodeRequest for any caller: last holds the group's
// previous string values and is updated; nil means none.
func decodeInto(g *group, r *request, data []byte, pts []telemetry.Point, now time.Time, last []string) {
	want := 2 * int(r.count)
	if r.table.IsBit() {
		want = (int(r.count) + 7) / 8
	}
	for _, ti := range r.tags {
		p := &pts[ti]
		p.Time = now
		if len(data) != want {
			p.Quality = telemetry.Bad | telemetry.ReasonDecode
			continue
		}
		t := &g.tags[ti]
		rel := int(t.offset - r.start)
		if r.table.IsBit() {
			p.Value = telemetry.Bool(bitAt(data, rel))
			continue
		}
		prev := ""
		if last != nil {
			prev = last[ti]
		}
		v, q := decodeValue(t, data[2*rel:2*(rel+int(t.count))], prev)
		p.Value, p.Quality = v, q
		if v.Kind() == telemetry.KindString && last != nil {
			last[ti] = v.AsString()
		}
	}
}

// requestName names a request in logs and errors: "holding registers 0..9".
func requestName(r *request) string {
	what := map[Table]string{Coil: "coils", DiscreteInput: "discrete inputs", InputRegister: "input registers", HoldingRegister: "holding registers"}[r.table]
	return fmt.Sprintf("%s %d..%d", what, r.start, int(r.start)+int(r.count)-1)
}
