package opcua

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
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
//     1; with queue_size N, sampling interval = poll/N and queue size N).
//     Notifications are buffered as they arrive and Read drains them: it
//     returns, per tag, the latest notification since the previous Read
//     (with queue_size, every one) with the server's source timestamp and
//     status code, and nothing for tags that did not change. A subscribed
//     tag is thus reported by exception by the server itself; a deadband
//     is asked of the server as a DataChangeFilter (absolute only) and
//     applied by the driver as well, which matters where the server
//     refused the filter and for percentages. max_silence still makes the
//     collector repeat the last reported value as a heartbeat only when
//     the driver hands it a point, so a silent subscribed tag stays silent
//     (its last value still holds).
//
// Recovery: when the connection or the session is lost the client's state
// leaves Connected, and the next Read of any group returns an error; the
// collector then closes the driver, reports the tags Bad and calls Connect
// with backoff. Connect builds a new client, resolves namespace URIs
// again, re-creates the subscriptions and checks every monitored item's
// result. A subscribe group also reads the server's state (i=2259) and
// asks whether its subscriptions still exist (SetPublishingMode) at most
// once per second through its Read, so a killed session or a subscription
// deleted by the server is noticed even when nothing changes.
type Driver struct {
	cfg     Config
	log     *slog.Logger
	timeout time.Duration
	groups  []*group
	polls   []time.Duration
	infos   [][]collector.TagInfo

	byName map[string]tagAt // every tag, for Write and ReadTag

	// cmu guards client and the tags' resolved ids against Write and
	// ReadTag, which run on other goroutines: Connect and Close take it
	// to change them (the collector's goroutine reads them without it).
	// Lock order: cmu, then mu.
	cmu    sync.RWMutex
	client *opcua.Client
	stop   context.CancelFunc // ends drain
	done   chan struct{}      // closed when drain has returned
	last   time.Time          // the last health check of a subscribe group

	noSubCheck bool   // the server lacks SetPublishingMode; see checkSubscriptions
	rejected   string // thumbprint of the server certificate refused by the last Connect
	hostWarned bool   // logged that the certificate does not name the url's host

	mu     sync.Mutex // guards subErr and every subscribe group's pending and codes
	subErr error      // a subscription failed; the next Read returns it
}

// tagAt is where a tag is: d.groups[group].tags[tag].
type tagAt struct{ group, tag int }

type tag struct {
	name   string
	unit   string
	node   Node
	filter collector.Filter
	id     *ua.NodeID // resolved at Connect; nil when it failed
	why    string     // why id is nil

	// subscribe groups only
	deadband Deadband
	queue    uint32          // the monitored item's queue size
	refused  bool            // the server refused its deadband filter once; not asked again
	last     telemetry.Point // the last point handed out (for the deadband)
	sent     bool            // last is set
}

type group struct {
	poll   time.Duration
	mode   Mode
	tags   []tag
	req    *ua.ReadRequest     // poll: built at Connect
	queued [][]telemetry.Point // subscribe: per tag, the notifications since the last Read, oldest first
	codes  []ua.StatusCode     // the last status per tag, to log changes once
	logged []bool              // codes[i] was set once
	sub    *opcua.Subscription // subscribe: the current subscription
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
	d := &Driver{cfg: cfg, log: log, timeout: cfg.Timeout, byName: map[string]tagAt{}}
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
		g.tags = append(g.tags, tag{name: ct.Name, unit: ct.Unit, node: n, filter: filter(ct), deadband: ct.Deadband, queue: max(ct.QueueSize, 1)})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(d.groups) == 0 {
		return nil, errors.New("no tags")
	}
	slices.SortStableFunc(d.groups, func(a, b *group) int { return int(a.poll - b.poll) })
	for gi, g := range d.groups {
		for ti, t := range g.tags {
			d.byName[t.name] = tagAt{gi, ti}
		}
		d.polls = append(d.polls, g.poll)
		infos := make([]collector.TagInfo, len(g.tags))
		for i, t := range g.tags {
			infos[i] = collector.TagInfo{Name: t.name, Unit: t.unit, Filter: t.filter}
		}
		d.infos = append(d.infos, infos)
		g.queued = make([][]telemetry.Point, len(g.tags))
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
	d.cmu.Lock()
	defer d.cmu.Unlock()
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

// errNoSubCheck says that the server cannot be asked whether its
// subscriptions exist; see checkSubscriptions.
var errNoSubCheck = errors.New("the server does not support SetPublishingMode")

// Connect opens a secure channel and a session, resolves the tags' node
// ids, and creates one subscription per subscribe group. A tag whose
// namespace URI the server does not know, or whose monitored item the
// server refused, is reported Bad (config, or device with the server's
// code) while the others are collected.
func (d *Driver) Connect(ctx context.Context) error {
	_ = d.Close()
	c, err := d.Dial(ctx, "fieldgate")
	if err != nil {
		return err
	}
	dctx, stop := context.WithCancel(context.Background())
	notes := make(chan *opcua.PublishNotificationData, 256)
	d.cmu.Lock()
	d.client, d.stop, d.done = c, stop, make(chan struct{})
	d.mu.Lock()
	d.subErr = nil
	d.mu.Unlock()
	ns := c.Namespaces()
	for _, g := range d.groups {
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
	}
	d.cmu.Unlock()
	go d.drain(dctx, notes)

	for gi, g := range d.groups {
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
	if err := d.checkSubscriptions(ctx); err != nil {
		_ = d.Close()
		if errors.Is(err, errNoSubCheck) {
			// gopcua v0.8.0's client drops the connection on any Bad
			// service result: connect again, without the check.
			return d.Connect(ctx)
		}
		return fmt.Errorf("connect %s: %w", d.cfg.URL, err)
	}
	d.last = time.Now()
	return nil
}

// Dial opens a secure channel and a session to the server the way
// Connect does (endpoint selection, the server certificate's trust check,
// the gateway's certificate and the user identity), with name as the
// application and session name, and returns the client: for one-off use
// such as fieldgate browse. It neither creates subscriptions nor changes
// what Read and Write use. The caller closes the client.
func (d *Driver) Dial(ctx context.Context, name string) (*opcua.Client, error) {
	opts, err := d.clientOptions(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", d.cfg.URL, err)
	}
	opts = append(opts, opcua.ApplicationName(name), opcua.SessionName(name))
	c, err := opcua.NewClient(d.cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", d.cfg.URL, err)
	}
	if err := c.Connect(ctx); err != nil {
		_ = c.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("connect %s: %w", d.cfg.URL, d.identityError(err))
	}
	return c, nil
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
// resolve. A tag with an absolute deadband asks the server for a
// DataChangeFilter; when the server refuses the filter, the item is
// created without one and the driver applies the deadband itself (it
// always does for a percentage, whose OPC UA meaning, a share of the
// engineering range, differs from fieldgate's).
func (d *Driver) subscribe(ctx context.Context, gi int, notes chan *opcua.PublishNotificationData) error {
	g := d.groups[gi]
	now := time.Now()
	d.mu.Lock()
	for i := range g.tags {
		t := &g.tags[i]
		g.queued[i] = g.queued[i][:0]
		t.sent = false
		if t.id == nil {
			g.queued[i] = append(g.queued[i], telemetry.Point{Tag: t.name, Unit: t.unit, Quality: telemetry.Bad | telemetry.ReasonConfig, Time: now})
		}
	}
	d.mu.Unlock()
	sub, err := d.client.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: g.poll}, notes)
	if err != nil {
		return err
	}
	g.sub = sub
	var idx []int
	for i, t := range g.tags {
		if t.id != nil {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	codes, err := d.monitor(ctx, gi, idx, true)
	if err != nil {
		return err
	}
	var retry []int
	for k, code := range codes {
		t := &g.tags[idx[k]]
		if serverFilter(t) && filterRefused(code) {
			t.refused = true
			d.log.Warn("the server refused the deadband filter; the gateway applies the deadband itself", "tag", t.name, "node", t.id.String(), "status", code.Error())
			retry = append(retry, idx[k])
		}
	}
	if len(retry) > 0 {
		again, err := d.monitor(ctx, gi, retry, false)
		if err != nil {
			return err
		}
		for k, code := range again {
			for j := range idx {
				if idx[j] == retry[k] {
					codes[j] = code
				}
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, code := range codes {
		if code == ua.StatusOK {
			continue
		}
		i := idx[k]
		t := &g.tags[i]
		d.log.Warn("monitored item refused", "tag", t.name, "node", t.id.String(), "code", fmt.Sprintf("0x%08X", uint32(code)), "status", code.Error())
		p := telemetry.Point{Tag: t.name, Unit: t.unit, Quality: Quality(code), Time: now}
		if p.Quality.IsGood() {
			p.Quality = telemetry.Bad | telemetry.ReasonDevice
		}
		g.queued[i] = append(g.queued[i][:0], p)
	}
	return nil
}

// serverFilter says whether t's monitored item asks the server for a
// deadband filter: an absolute deadband the server has not refused.
func serverFilter(t *tag) bool {
	return t.deadband.Value > 0 && !t.deadband.Percent && !t.refused
}

// filterRefused says whether a monitored item's status means the server
// does not take its filter.
func filterRefused(code ua.StatusCode) bool {
	switch code {
	case ua.StatusBadFilterNotAllowed, ua.StatusBadMonitoredItemFilterUnsupported, ua.StatusBadMonitoredItemFilterInvalid, ua.StatusBadDeadbandFilterInvalid:
		return true
	}
	return false
}

// monitor creates the monitored items of group gi's tags idx (sampling
// interval = poll, the tag's queue size, the server's deadband filter
// when withFilter and serverFilter) and returns each item's status.
func (d *Driver) monitor(ctx context.Context, gi int, idx []int, withFilter bool) ([]ua.StatusCode, error) {
	g := d.groups[gi]
	items := make([]*ua.MonitoredItemCreateRequest, 0, len(idx))
	for _, i := range idx {
		t := &g.tags[i]
		req := opcua.NewMonitoredItemCreateRequestWithDefaults(t.id, ua.AttributeIDValue, handle(gi, i))
		// With a queue the server samples queue times per publishing
		// interval, so that a publish carries up to queue changes.
		req.RequestedParameters.SamplingInterval = float64(g.poll) / float64(t.queue) / float64(time.Millisecond)
		req.RequestedParameters.QueueSize = t.queue
		if withFilter && serverFilter(t) {
			req.RequestedParameters.Filter = ua.NewExtensionObject(&ua.DataChangeFilter{
				Trigger:       ua.DataChangeTriggerStatusValue,
				DeadbandType:  uint32(ua.DeadbandTypeAbsolute),
				DeadbandValue: t.deadband.Value,
			})
		}
		items = append(items, req)
	}
	res, err := g.sub.Monitor(ctx, ua.TimestampsToReturnBoth, items...)
	if err != nil {
		return nil, err
	}
	if res.ResponseHeader != nil && res.ResponseHeader.ServiceResult != ua.StatusOK {
		return nil, res.ResponseHeader.ServiceResult
	}
	if len(res.Results) != len(items) {
		return nil, fmt.Errorf("server created %d monitored items, asked for %d", len(res.Results), len(items))
	}
	codes := make([]ua.StatusCode, len(items))
	for k, r := range res.Results {
		codes[k] = r.StatusCode
		if t := &g.tags[idx[k]]; r.StatusCode == ua.StatusOK && t.queue > 1 && r.RevisedQueueSize < t.queue {
			d.log.Warn("the server keeps fewer changes than queue_size", "tag", t.name, "queue_size", t.queue, "revised", r.RevisedQueueSize)
		}
		d.log.Debug("monitored item", "tag", g.tags[idx[k]].name, "status", r.StatusCode, "sampling", r.RevisedSamplingInterval, "queue", r.RevisedQueueSize)
	}
	return codes, nil
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
				d.queue(g, ti, d.point(g, ti, it.Value, now))
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

// queue keeps a subscribed tag's new point until Read takes it, unless
// the deadband drops it. A tag with queue size 1 keeps only the latest
// point; a larger queue keeps up to two publishes' worth (the collector
// reads about once per publishing interval), dropping the oldest. d.mu is
// held.
func (d *Driver) queue(g *group, ti int, p telemetry.Point) {
	t := &g.tags[ti]
	if t.deadband.Value > 0 && t.sent && within(t.last, p, t.deadband) {
		return
	}
	t.last, t.sent = p, true
	q := g.queued[ti]
	limit := t.queue
	if limit > 1 {
		limit *= 2
	}
	if uint32(len(q)) >= limit {
		q = append(q[:0], q[1:]...)
	}
	g.queued[ti] = append(q, p)
}

// within says whether p is within the deadband of the last point handed
// out, so that it is not reported: the same quality, numbers both, and
// |p-last| <= deadband (or <= deadband% of |last|). Any other change is
// reported.
func within(last, p telemetry.Point, db Deadband) bool {
	if p.Quality != last.Quality || !numeric(p.Value) || !numeric(last.Value) {
		return false
	}
	a, b := last.Value.AsFloat(), p.Value.AsFloat()
	limit := db.Value
	if db.Percent {
		limit = db.Value / 100 * math.Abs(a)
	}
	return math.Abs(b-a) <= limit // false for NaN
}

func numeric(v telemetry.Value) bool {
	k := v.Kind()
	return k == telemetry.KindInt || k == telemetry.KindUint || k == telemetry.KindFloat
}

// point converts one tag's data value. It logs the status code whenever it
// changes (telemetry keeps only its class).
func (d *Driver) point(g *group, ti int, dv *ua.DataValue, now time.Time) telemetry.Point {
	t := &g.tags[ti]
	if dv != nil {
		code := dv.Status
		if !g.logged[ti] || g.codes[ti] != code {
			if code != ua.StatusOK || g.logged[ti] {
				d.log.Info("tag status", "tag", t.name, "code", fmt.Sprintf("0x%08X", uint32(code)), "status", code.Error())
			}
			g.codes[ti], g.logged[ti] = code, true
		}
	}
	p, why := toPoint(t, dv, now)
	if why != "" {
		d.log.Warn("value not converted", "tag", t.name, "node", t.node.Text, "reason", why)
	}
	return p
}

// toPoint converts one tag's data value: the source timestamp (else the
// server's, else now), the status code's quality, and the value. why says
// why a Good value did not convert (the point is then bad:decode).
func toPoint(t *tag, dv *ua.DataValue, now time.Time) (p telemetry.Point, why string) {
	p = telemetry.Point{Tag: t.name, Unit: t.unit, Time: now}
	if dv == nil {
		p.Quality = telemetry.Bad | telemetry.ReasonBadResponse
		return p, ""
	}
	switch {
	case !dv.SourceTimestamp.IsZero():
		p.Time = dv.SourceTimestamp
	case !dv.ServerTimestamp.IsZero():
		p.Time = dv.ServerTimestamp
	}
	p.Quality = Quality(dv.Status)
	if p.Quality.Class() == telemetry.Bad {
		return p, ""
	}
	v, why, ok := Value(dv.Value)
	if !ok {
		p.Quality = telemetry.Bad | telemetry.ReasonDecode
		return p, why
	}
	p.Value = v
	return p, ""
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
		dst = append(dst, g.queued[i]...)
		g.queued[i] = g.queued[i][:0]
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
	if err := d.checkSubscriptions(ctx); err != nil {
		return err
	}
	d.last = time.Now()
	return nil
}

// checkSubscriptions asks the server whether the subscriptions still
// exist, with a SetPublishingMode request that enables publishing (which
// is on already): a subscription the server deleted answers
// BadSubscriptionIdInvalid, and the Read fails so that the collector
// reconnects and Connect re-creates it. Connect asks once too: a server
// without the service (gopcua's own) fails with errNoSubCheck and is not
// asked again; its subscriptions are then only checked through their
// status change notifications.
func (d *Driver) checkSubscriptions(ctx context.Context) error {
	if d.noSubCheck {
		return nil
	}
	var ids []uint32
	for _, g := range d.groups {
		if g.sub != nil {
			ids = append(ids, g.sub.SubscriptionID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	var res *ua.SetPublishingModeResponse
	err := d.client.Send(ctx, &ua.SetPublishingModeRequest{PublishingEnabled: true, SubscriptionIDs: ids}, func(r ua.Response) error {
		var ok bool
		if res, ok = r.(*ua.SetPublishingModeResponse); !ok {
			return fmt.Errorf("SetPublishingMode: got a %T", r)
		}
		return nil
	})
	if errors.Is(err, ua.StatusBadServiceUnsupported) || err == nil && res.ResponseHeader.ServiceResult == ua.StatusBadServiceUnsupported {
		d.noSubCheck = true
		d.log.Info("the server does not support SetPublishingMode; subscriptions are checked through their status notifications only")
		return errNoSubCheck
	}
	if err != nil {
		return fmt.Errorf("read %s: check subscriptions: %w", d.cfg.URL, err)
	}
	if sr := res.ResponseHeader.ServiceResult; sr != ua.StatusOK {
		return fmt.Errorf("read %s: check subscriptions: %s (0x%08X)", d.cfg.URL, sr.Error(), uint32(sr))
	}
	for k, code := range res.Results {
		if k < len(ids) && code != ua.StatusOK {
			return fmt.Errorf("read %s: subscription %d is gone from the server: %s (0x%08X)", d.cfg.URL, ids[k], code.Error(), uint32(code))
		}
	}
	return nil
}
