package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/telemetry"
)

// Driver collects from one OPC UA server. It implements collector.Driver
// and collector.Timeouter. Tags are grouped by poll interval and mode:
//
//   - a poll group is one batched Read request per poll, one point per tag;
//   - a subscribe group is one subscription (publishing interval = poll)
//     with a monitored item per tag (sampling interval = poll, queue size
//     1). Notifications are buffered as they arrive and Read drains them:
//     it returns, per tag, the latest notification since the previous Read
//     with the server's source timestamp and status code, and nothing for
//     tags that did not change. A subscribed tag is thus reported by
//     exception by the server itself; max_silence still makes the collector
//     repeat the last reported value as a heartbeat only when the driver
//     hands it a point, so a silent subscribed tag stays silent (its last
//     value still holds).
//
// Recovery: when the connection or the session is lost the client's state
// leaves Connected, and the next Read of any group returns an error; the
// collector then closes the driver, reports the tags Bad and calls Connect
// with backoff. Connect builds a new client, resolves namespace URIs
// again, re-creates the subscriptions and checks every monitored item's
// result. A subscribe group also reads the server's state (i=2259) at most
// once per second through its Read, so a dead session is noticed even when
// nothing changes.
type Driver struct {
	cfg     Config
	log     *slog.Logger
	timeout time.Duration
	groups  []*group
	polls   []time.Duration
	infos   [][]collector.TagInfo

	client *opcua.Client
	stop   context.CancelFunc // ends drain
	done   chan struct{}      // closed when drain has returned
	last   time.Time          // the last health check of a subscribe group

	rejected   string // thumbprint of the server certificate refused by the last Connect
	hostWarned bool   // logged that the certificate does not name the url's host

	mu     sync.Mutex // guards subErr and every subscribe group's pending and codes
	subErr error      // a subscription failed; the next Read returns it
}

type tag struct {
	name   string
	unit   string
	node   Node
	filter collector.Filter
	id     *ua.NodeID // resolved at Connect; nil when it failed
	why    string     // why id is nil
}

type group struct {
	poll    time.Duration
	mode    Mode
	tags    []tag
	req     *ua.ReadRequest     // poll: built at Connect
	pending []telemetry.Point   // subscribe: the latest notification per tag
	has     []bool              // subscribe: pending[i] is new since the last Read
	codes   []ua.StatusCode     // the last status per tag, to log changes once
	logged  []bool              // codes[i] was set once
	sub     *opcua.Subscription // subscribe: the current subscription
}

// New builds the driver for a validated cfg. It does no I/O. A nil log
// discards.
func New(device string, cfg Config, log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, log: log, timeout: cfg.Timeout}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	type key struct {
		poll time.Duration
		mode Mode
	}
	byKey := map[key]*group{}
	var errs []error
	for i := range cfg.Tags {
		ct := &cfg.Tags[i]
		n, err := ParseNode(ct.Node)
		if err != nil {
			errs = append(errs, fmt.Errorf("tag %q: %w", ct.Name, err))
			continue
		}
		p := ct.Poll
		if p <= 0 {
			p = cfg.Poll
		}
		if p <= 0 {
			errs = append(errs, fmt.Errorf("tag %q: no poll interval", ct.Name))
			continue
		}
		m := ct.Mode
		if m == ModeDefault {
			m = ModePoll
		}
		k := key{p, m}
		g := byKey[k]
		if g == nil {
			g = &group{poll: p, mode: m}
			byKey[k] = g
			d.groups = append(d.groups, g)
		}
		g.tags = append(g.tags, tag{name: ct.Name, unit: ct.Unit, node: n, filter: filter(ct)})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(d.groups) == 0 {
		return nil, errors.New("no tags")
	}
	slices.SortStableFunc(d.groups, func(a, b *group) int { return int(a.poll - b.poll) })
	for _, g := range d.groups {
		d.polls = append(d.polls, g.poll)
		infos := make([]collector.TagInfo, len(g.tags))
		for i, t := range g.tags {
			infos[i] = collector.TagInfo{Name: t.name, Unit: t.unit, Filter: t.filter}
		}
		d.infos = append(d.infos, infos)
		g.pending = make([]telemetry.Point, len(g.tags))
		g.has = make([]bool, len(g.tags))
		g.codes = make([]ua.StatusCode, len(g.tags))
		g.logged = make([]bool, len(g.tags))
	}
	return d, nil
}

// filter turns a tag's deadband, report and max_silence into the
// collector's report-by-exception filter, as for Modbus.
func filter(ct *Tag) collector.Filter {
	if ct.Report == ReportChange || ct.Report == ReportDefault && ct.Deadband.Value > 0 {
		return collector.Filter{OnChange: true, Deadband: ct.Deadband.Value, Percent: ct.Deadband.Percent, MaxSilence: max(ct.MaxSilence, 0)}
	}
	return collector.Filter{}
}

// Groups returns the interval of each group, shortest first.
func (d *Driver) Groups() []time.Duration { return d.polls }

// Tags returns one group's tags in Read's order.
func (d *Driver) Tags(group int) []collector.TagInfo { return d.infos[group] }

// Mode returns whether group is polled or subscribed.
func (d *Driver) Mode(group int) Mode { return d.groups[group].mode }

// Timeout is how long a Connect or a Read may take: a Connect makes
// several round trips (endpoints, channel, session, namespaces,
// subscriptions).
func (d *Driver) Timeout() time.Duration { return 4 * d.timeout }

// Close ends the session and the connection. It is safe to call more than
// once.
func (d *Driver) Close() error {
	if d.client == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	err := d.client.Close(ctx)
	cancel()
	d.stop()
	<-d.done
	d.client = nil
	for _, g := range d.groups {
		g.sub = nil
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("close %s: %w", d.cfg.URL, err)
	}
	return nil
}

// errNotConnected is returned by Read before Connect.
var errNotConnected = errors.New("not connected")

// Connect opens a secure channel and a session, resolves the tags' node
// ids, and creates one subscription per subscribe group. A tag whose
// namespace URI the server does not know, or whose monitored item the
// server refused, is reported Bad (config, or device with the server's
// code) while the others are collected.
func (d *Driver) Connect(ctx context.Context) error {
	_ = d.Close()
	opts, err := d.clientOptions(ctx)
	if err != nil {
		return fmt.Errorf("connect %s: %w", d.cfg.URL, err)
	}
	c, err := opcua.NewClient(d.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", d.cfg.URL, err)
	}
	if err := c.Connect(ctx); err != nil {
		_ = c.Close(context.Background())
		return fmt.Errorf("connect %s: %w", d.cfg.URL, d.identityError(err))
	}
	dctx, stop := context.WithCancel(context.Background())
	notes := make(chan *opcua.PublishNotificationData, 256)
	d.client, d.stop, d.done = c, stop, make(chan struct{})
	d.mu.Lock()
	d.subErr = nil
	d.mu.Unlock()
	go d.drain(dctx, notes)

	ns := c.Namespaces()
	for gi, g := range d.groups {
		for i := range g.tags {
			t := &g.tags[i]
			t.id, t.why = nil, ""
			id, err := t.node.Resolve(ns)
			if err != nil {
				t.why = err.Error()
				d.log.Warn("tag not resolved", "tag", t.name, "node", t.node.Text, "err", err)
				continue
			}
			t.id = id
		}
		if g.mode == ModePoll {
			g.req = &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
			for _, t := range g.tags {
				if t.id != nil {
					g.req.NodesToRead = append(g.req.NodesToRead, &ua.ReadValueID{NodeID: t.id, AttributeID: ua.AttributeIDValue})
				}
			}
			continue
		}
		if err := d.subscribe(ctx, gi, notes); err != nil {
			_ = d.Close()
			return fmt.Errorf("connect %s: subscribe (%s group): %w", d.cfg.URL, g.poll, err)
		}
	}
	d.last = time.Now()
	return nil
}

// identityError words a refused user identity (ActivateSession failing
// with BadUserAccessDenied or BadIdentityToken*) so that it names the
// user; other errors are returned as they are.
func (d *Driver) identityError(err error) error {
	var code ua.StatusCode
	if !errors.As(err, &code) {
		return err
	}
	var name string
	switch code {
	case ua.StatusBadUserAccessDenied:
		name = "BadUserAccessDenied"
	case ua.StatusBadIdentityTokenRejected:
		name = "BadIdentityTokenRejected"
	case ua.StatusBadIdentityTokenInvalid:
		name = "BadIdentityTokenInvalid"
	default:
		return err
	}
	if strings.EqualFold(d.cfg.Auth.Mode, "certificate") {
		return fmt.Errorf("the server refused the user certificate (%s): trust it on the server, or check that the user it maps to may log in: %w", name, err)
	}
	if strings.EqualFold(d.cfg.Auth.Mode, "username") {
		return fmt.Errorf("the server refused user %q (%s): wrong user name or password, or the user may not log in: %w", d.cfg.Auth.Username, name, err)
	}
	return fmt.Errorf("the server refused anonymous access (%s): set auth.mode username or certificate: %w", name, err)
}

// subscribe creates group gi's subscription and monitored items, and
// marks Bad the tags whose item the server refused or that did not
// resolve.
func (d *Driver) subscribe(ctx context.Context, gi int, notes chan *opcua.PublishNotificationData) error {
	g := d.groups[gi]
	now := time.Now()
	d.mu.Lock()
	for i, t := range g.tags {
		g.has[i] = false
		if t.id == nil {
			g.pending[i] = telemetry.Point{Tag: t.name, Unit: t.unit, Quality: telemetry.Bad | telemetry.ReasonConfig, Time: now}
			g.has[i] = true
		}
	}
	d.mu.Unlock()
	sub, err := d.client.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: g.poll}, notes)
	if err != nil {
		return err
	}
	g.sub = sub
	var items []*ua.MonitoredItemCreateRequest
	var idx []int
	for i, t := range g.tags {
		if t.id == nil {
			continue
		}
		req := opcua.NewMonitoredItemCreateRequestWithDefaults(t.id, ua.AttributeIDValue, handle(gi, i))
		req.RequestedParameters.SamplingInterval = float64(g.poll) / float64(time.Millisecond)
		req.RequestedParameters.QueueSize = 1
		items = append(items, req)
		idx = append(idx, i)
	}
	if len(items) == 0 {
		return nil
	}
	res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, items...)
	if err != nil {
		return err
	}
	if res.ResponseHeader != nil && res.ResponseHeader.ServiceResult != ua.StatusOK {
		return res.ResponseHeader.ServiceResult
	}
	if len(res.Results) != len(items) {
		return fmt.Errorf("server created %d monitored items, asked for %d", len(res.Results), len(items))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, r := range res.Results {
		if r.StatusCode == ua.StatusOK {
			continue
		}
		i := idx[k]
		t := &g.tags[i]
		d.log.Warn("monitored item refused", "tag", t.name, "node", t.id.String(), "code", fmt.Sprintf("0x%08X", uint32(r.StatusCode)), "status", r.StatusCode.Error())
		g.pending[i] = telemetry.Point{Tag: t.name, Unit: t.unit, Quality: Quality(r.StatusCode), Time: now}
		if Quality(r.StatusCode).IsGood() {
			g.pending[i].Quality = telemetry.Bad | telemetry.ReasonDevice
		}
		g.has[i] = true
	}
	return nil
}

// handle is a monitored item's client handle: its group and tag index.
func handle(gi, ti int) uint32 { return uint32(gi)<<20 | uint32(ti) }

// drain takes notifications from the client as they arrive and keeps the
// latest per tag until Read takes them.
func (d *Driver) drain(ctx context.Context, notes chan *opcua.PublishNotificationData) {
	defer close(d.done)
	for {
		var n *opcua.PublishNotificationData
		select {
		case <-ctx.Done():
			return
		case n = <-notes:
		}
		if n == nil {
			continue
		}
		d.mu.Lock()
		switch v := n.Value.(type) {
		case *ua.DataChangeNotification:
			now := time.Now()
			for _, it := range v.MonitoredItems {
				if it == nil {
					continue
				}
				gi, ti := int(it.ClientHandle>>20), int(it.ClientHandle&(1<<20-1))
				if gi >= len(d.groups) || ti >= len(d.groups[gi].tags) {
					continue
				}
				g := d.groups[gi]
				g.pending[ti] = d.point(g, ti, it.Value, now)
				g.has[ti] = true
			}
		case *ua.StatusChangeNotification:
			if v.Status != ua.StatusOK && d.subErr == nil {
				d.subErr = fmt.Errorf("subscription %d: status %s (0x%08X)", n.SubscriptionID, v.Status.Error(), uint32(v.Status))
			}
		default:
			if n.Error != nil && d.subErr == nil && ctx.Err() == nil {
				d.subErr = fmt.Errorf("subscription %d: %w", n.SubscriptionID, n.Error)
			}
		}
		d.mu.Unlock()
	}
}

// point converts one tag's data value. It logs the status code whenever it
// changes (telemetry keeps only its class).
func (d *Driver) point(g *group, ti int, dv *ua.DataValue, now time.Time) telemetry.Point {
	t := &g.tags[ti]
	p := telemetry.Point{Tag: t.name, Unit: t.unit, Time: now}
	if dv == nil {
		p.Quality = telemetry.Bad | telemetry.ReasonBadResponse
		return p
	}
	switch {
	case !dv.SourceTimestamp.IsZero():
		p.Time = dv.SourceTimestamp
	case !dv.ServerTimestamp.IsZero():
		p.Time = dv.ServerTimestamp
	}
	code := dv.Status
	if !g.logged[ti] || g.codes[ti] != code {
		if code != ua.StatusOK || g.logged[ti] {
			d.log.Info("tag status", "tag", t.name, "code", fmt.Sprintf("0x%08X", uint32(code)), "status", code.Error())
		}
		g.codes[ti], g.logged[ti] = code, true
	}
	p.Quality = Quality(code)
	if p.Quality.Class() == telemetry.Bad {
		return p
	}
	v, why, ok := Value(dv.Value)
	if !ok {
		d.log.Warn("value not converted", "tag", t.name, "node", t.node.Text, "reason", why)
		p.Quality = telemetry.Bad | telemetry.ReasonDecode
		return p
	}
	p.Value = v
	return p
}

// Read collects one group; see Driver for what it returns.
func (d *Driver) Read(ctx context.Context, group int, dst []telemetry.Point) ([]telemetry.Point, error) {
	if d.client == nil {
		return dst, errNotConnected
	}
	if s := d.client.State(); s != opcua.Connected {
		return dst, fmt.Errorf("read %s: connection %s", d.cfg.URL, s)
	}
	g := d.groups[group]
	if g.mode == ModeSubscribe {
		return d.readSubscribed(ctx, g, dst)
	}
	now := time.Now()
	base := len(dst)
	dst = slices.Grow(dst, len(g.tags))
	var res []*ua.DataValue
	if len(g.req.NodesToRead) > 0 {
		resp, err := d.client.Read(ctx, g.req)
		if err != nil {
			return dst[:base], fmt.Errorf("read %s: %w", d.cfg.URL, err)
		}
		if sr := resp.ResponseHeader.ServiceResult; sr != ua.StatusOK {
			return dst[:base], fmt.Errorf("read %s: %s (0x%08X)", d.cfg.URL, sr.Error(), uint32(sr))
		}
		if len(resp.Results) != len(g.req.NodesToRead) {
			return dst[:base], fmt.Errorf("read %s: %d results for %d nodes", d.cfg.URL, len(resp.Results), len(g.req.NodesToRead))
		}
		res = resp.Results
		now = time.Now()
	}
	k := 0
	for i := range g.tags {
		t := &g.tags[i]
		if t.id == nil {
			dst = append(dst, telemetry.Point{Tag: t.name, Unit: t.unit, Quality: telemetry.Bad | telemetry.ReasonConfig, Time: now})
			continue
		}
		dst = append(dst, d.point(g, i, res[k], now))
		k++
	}
	return dst, nil
}

// readSubscribed hands out the notifications buffered since the last
// Read, after checking the subscriptions and, at most once a second, the
// session.
func (d *Driver) readSubscribed(ctx context.Context, g *group, dst []telemetry.Point) ([]telemetry.Point, error) {
	d.mu.Lock()
	err := d.subErr
	d.mu.Unlock()
	if err != nil {
		return dst, fmt.Errorf("read %s: %w", d.cfg.URL, err)
	}
	if time.Since(d.last) >= time.Second {
		if err := d.check(ctx); err != nil {
			return dst, err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range g.tags {
		if g.has[i] {
			dst = append(dst, g.pending[i])
			g.has[i] = false
		}
	}
	return dst, nil
}

// check reads the server's state: it fails when the session is gone or
// the server is not running.
func (d *Driver) check(ctx context.Context) error {
	resp, err := d.client.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{{NodeID: ua.NewNumericNodeID(0, id.Server_ServerStatus_State), AttributeID: ua.AttributeIDValue}}})
	if err != nil {
		return fmt.Errorf("read %s: server state: %w", d.cfg.URL, err)
	}
	if sr := resp.ResponseHeader.ServiceResult; sr != ua.StatusOK {
		return fmt.Errorf("read %s: server state: %s (0x%08X)", d.cfg.URL, sr.Error(), uint32(sr))
	}
	if len(resp.Results) == 1 && resp.Results[0].Status == ua.StatusOK && resp.Results[0].Value != nil {
		if s, ok := resp.Results[0].Value.Value().(int32); ok && ua.ServerState(s) != ua.ServerStateRunning {
			return fmt.Errorf("read %s: server state %s", d.cfg.URL, ua.ServerState(s))
		}
	}
	d.last = time.Now()
	return nil
}
