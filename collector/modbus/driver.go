package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/telemetry"
)

// ErrSchemeNotSupported is wrapped by New for a URL whose scheme names a
// transport this driver does not speak yet (rtu://, ascii://, rtuovertcp://).
var ErrSchemeNotSupported = errors.New("rtu/ascii not supported yet")

// Driver polls one Modbus TCP device. It implements collector.Driver and
// collector's optional Timeout method. Like every collector.Driver it is not
// safe for concurrent use; Plan, Groups and Tags may be called at any time.
type Driver struct {
	addr    string // host:port
	unit    uint8
	timeout time.Duration // per request
	log     *slog.Logger
	groups  []group
	polls   []time.Duration
	plan    Plan
	maxReqs int // most requests in one group

	handler *mb.TCPClientHandler // nil when not connected
	client  mb.Client
	infos   [][]collector.TagInfo // per group, in Read's order
	state   [][]reqState          // per group, per request
	last    [][]string            // per group, per tag: the last string read
}

// reqState remembers whether a request's last answer was an exception, so
// the driver logs once per change, not once per poll.
type reqState struct{ failing bool }

// New builds the driver for device and its read plan from cfg, which the
// config package has validated. It does no I/O. Defaults: timeout
// DefaultTimeout, max_gap DefaultMaxGap, order ABCD, a tag's poll interval
// cfg.Poll. The gateway passes a log that already carries the "device"
// attribute, and wraps New's errors with the device's name. A nil log
// discards.
func New(device string, cfg Config, log *slog.Logger) (*Driver, error) {
	addr, err := tcpAddress(cfg.URL)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{
		addr:    addr,
		unit:    cfg.Unit,
		timeout: cfg.Timeout,
		log:     log,
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
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
	d.plan.Device = device
	d.groups = plan(tags, polls, lim)
	d.state = make([][]reqState, len(d.groups))
	d.last = make([][]string, len(d.groups))
	for i := range d.groups {
		g := &d.groups[i]
		d.polls = append(d.polls, g.poll)
		d.state[i] = make([]reqState, len(g.reqs))
		d.last[i] = make([]string, len(g.tags))
		d.maxReqs = max(d.maxReqs, len(g.reqs))
		pg := PlanGroup{Poll: g.poll}
		infos := make([]collector.TagInfo, len(g.tags))
		for ti, t := range g.tags {
			pg.Tags = append(pg.Tags, t.name)
			infos[ti] = t.info()
		}
		d.infos = append(d.infos, infos)
		for _, r := range g.reqs {
			pr := Request{Table: r.table, Start: r.start, Count: r.count}
			for _, ti := range r.tags {
				pr.Tags = append(pr.Tags, g.tags[ti].name)
			}
			pg.Requests = append(pg.Requests, pr)
		}
		d.plan.Groups = append(d.plan.Groups, pg)
	}
	return d, nil
}

// tcpAddress turns tcp://host[:port] into host:port.
func tcpAddress(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("url %q: %w", raw, err)
	}
	switch u.Scheme {
	case "tcp":
	case "rtu", "ascii", "rtuovertcp", "rtu+tcp":
		return "", fmt.Errorf("url %q: %w", raw, ErrSchemeNotSupported)
	default:
		return "", fmt.Errorf("url %q: scheme must be tcp://", raw)
	}
	if u.Hostname() == "" {
		return "", fmt.Errorf("url %q: no host", raw)
	}
	port := u.Port()
	if port == "" {
		port = DefaultPort
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// Plan returns the read plan. The caller must not modify it.
func (d *Driver) Plan() Plan { return d.plan }

// Groups returns the poll interval of each group, shortest first.
func (d *Driver) Groups() []time.Duration { return d.polls }

// Tags returns the names and units of one group's tags in Read's order.
// The caller must not modify the slice.
func (d *Driver) Tags(group int) []collector.TagInfo { return d.infos[group] }

// Timeout returns the longest a Connect or a Read should take: the request
// timeout once per request of the largest group, plus one for a reconnect.
func (d *Driver) Timeout() time.Duration { return d.timeout * time.Duration(d.maxReqs+1) }

// Connect dials the device, dropping any previous connection. It gives up
// after the configured timeout or ctx's deadline, whichever comes first.
func (d *Driver) Connect(ctx context.Context) error {
	_ = d.Close()
	timeout, err := d.requestTimeout(ctx)
	if err != nil {
		return fmt.Errorf("connect %s: %w", d.addr, err)
	}
	h := mb.NewTCPClientHandler(d.addr)
	h.SlaveId = d.unit
	h.Timeout = timeout
	// Keep the connection across polls; goburrow closes it after this much
	// idle time and redials on the next request.
	h.IdleTimeout = max(time.Minute, 3*d.polls[len(d.polls)-1])
	if err := h.Connect(); err != nil {
		return fmt.Errorf("connect %s: %w", d.addr, err)
	}
	d.handler, d.client = h, mb.NewClient(h)
	return nil
}

// Close closes the connection. It is safe to call more than once.
func (d *Driver) Close() error {
	if d.handler == nil {
		return nil
	}
	err := d.handler.Close()
	d.handler, d.client = nil, nil
	return err
}

// requestTimeout returns the configured timeout, shortened to ctx's
// deadline, or ctx's error when it is done.
func (d *Driver) requestTimeout(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	t := d.timeout
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return 0, context.DeadlineExceeded
		}
		t = min(t, left)
	}
	return t, nil
}

// errNotConnected is returned by Read before Connect.
var errNotConnected = errors.New("not connected")

// Read polls one group: one request after another, appending one point per
// tag to dst in the order of Tags(group). A request the device answers with
// an exception makes its tags Bad|ReasonException and the others stay Good;
// a timeout or a connection error ends the read with an error.
func (d *Driver) Read(ctx context.Context, group int, dst []telemetry.Point) ([]telemetry.Point, error) {
	if d.client == nil {
		return dst, errNotConnected
	}
	g := &d.groups[group]
	base := len(dst)
	dst = slices.Grow(dst, len(g.tags))[:base+len(g.tags)]
	pts := dst[base:]
	for i := range g.tags {
		pts[i] = telemetry.Point{Tag: g.tags[i].name, Unit: g.tags[i].unit}
	}
	for ri := range g.reqs {
		r := &g.reqs[ri]
		data, err := d.request(ctx, r)
		now := time.Now()
		st := &d.state[group][ri]
		if err != nil {
			var ex *mb.ModbusError
			if !errors.As(err, &ex) {
				return dst[:base], err
			}
			if !st.failing {
				st.failing = true
				d.log.Warn("request refused", "request", requestName(r), "err", err)
			}
			for _, ti := range r.tags {
				pts[ti].Quality = telemetry.Bad | telemetry.ReasonException
				pts[ti].Time = now
			}
			continue
		}
		if st.failing {
			st.failing = false
			d.log.Info("request answered again", "request", requestName(r))
		}
		d.decodeRequest(group, r, data, pts, now)
	}
	return dst, nil
}

// decodeRequest fills the points of r's tags from the response data.
func (d *Driver) decodeRequest(group int, r *request, data []byte, pts []telemetry.Point, now time.Time) {
	g := &d.groups[group]
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
		v, ok := decode(t, data[2*rel:2*(rel+int(t.count))], d.last[group][ti])
		if !ok {
			p.Quality = telemetry.Bad | telemetry.ReasonDecode
			continue
		}
		if v.Kind() == telemetry.KindString {
			d.last[group][ti] = v.AsString()
		}
		p.Value = v
	}
}

// request sends one read request.
func (d *Driver) request(ctx context.Context, r *request) ([]byte, error) {
	timeout, err := d.requestTimeout(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", requestName(r), err)
	}
	d.handler.Timeout = timeout
	var data []byte
	switch r.table {
	case Coil:
		data, err = d.client.ReadCoils(r.start, r.count)
	case DiscreteInput:
		data, err = d.client.ReadDiscreteInputs(r.start, r.count)
	case InputRegister:
		data, err = d.client.ReadInputRegisters(r.start, r.count)
	default:
		data, err = d.client.ReadHoldingRegisters(r.start, r.count)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", requestName(r), err)
	}
	return data, nil
}

// requestName names a request in logs and errors: "holding registers 0..9".
func requestName(r *request) string {
	what := map[Table]string{Coil: "coils", DiscreteInput: "discrete inputs", InputRegister: "input registers", HoldingRegister: "holding registers"}[r.table]
	return fmt.Sprintf("%s %d..%d", what, r.start, int(r.start)+int(r.count)-1)
}
