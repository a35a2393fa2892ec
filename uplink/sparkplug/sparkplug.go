// Package sparkplug publishes the gateway's telemetry as a Sparkplug B 3.0
// edge node (docs/payload-sparkplug.md). The gateway is the edge node
// spBv1.0/{group}/…/{node}; every device is a Sparkplug device.
//
// Format implements uplink.Format. Per connection:
//
//   - Will: bdSeq is incremented (mod 256) and written to Config.BdSeqFile
//     before CONNECT; the will is NDEATH (QoS 1, not retained) with that
//     bdSeq.
//   - The uplink subscribes NCMD, DCMD and, with a primary host, its STATE
//     topic; Online waits until the primary host says online, then
//     publishes NBIRTH (seq 0, bdSeq, Node Control/Rebirth) and the DBIRTH
//     of every device of Config.Catalog that is not down, listing all its
//     configured tags (values not yet read are null with Quality bad).
//   - A device's first record on a connection publishes its DBIRTH if it
//     has none yet (every metric the device has had so far: name, alias,
//     datatype, last value, properties engUnit and Quality), then the
//     record as DDATA (aliases only). A record with a new metric, or a
//     value of another type, publishes the device's DBIRTH again first.
//   - Device lifecycle: a live record in which every point is Bad for
//     no_connection or timeout (what the collector sends while it cannot
//     reach a device) publishes DDEATH (seq, no metrics) instead of DDATA;
//     its token is the DDEATH's, so the record leaves the buffer when that
//     message is out (QoS DataQoS). Further records while the device stays
//     down publish nothing. The next record with a reading publishes
//     DBIRTH (current values), then its DDATA.
//   - Records replayed from the backlog carry is_historical on every
//     metric and never publish DDEATH: a historical down record is DDATA
//     with null values and Quality bad. A historical record of a device
//     that is not born (also one that is down) publishes its DBIRTH first,
//     because DDATA is only valid after one; the next live down record
//     publishes DDEATH again.
//   - seq runs 0..255 over NBIRTH, DBIRTH, DDATA and DDEATH of the node;
//     NBIRTH is 0.
//   - NCMD Node Control/Rebirth = true publishes NBIRTH (seq 0, same bdSeq)
//     and the DBIRTH of every device born on this connection and every
//     catalog device that is not down.
//   - A primary host's STATE offline ends the connection (the broker sends
//     NDEATH); data stays in the buffer until the host is back.
//   - DCMD: each metric (by name, or by an alias of the device's birth)
//     becomes an uplink.WriteRequest (Source "sparkplug") with a value of
//     the metric's datatype (Boolean, integer types, Float, Double,
//     String, Text; any other is rejected as bad_request), submitted to
//     Config.Writes, the gateway's one write path. Sparkplug has no result
//     message: the result is logged (Info when done, Warn with its code),
//     and a write that was done shows in the device's next DDATA. A
//     retained DCMD is refused (bad_request, recorded, not written); a
//     retained NCMD or STATE is handled as any other (RetainedCommand).
//
// Births are QoS 0, as the specification requires. Data and DDEATH are
// QoS 0 by default (Config.DataQoS); see the QoS section of docs/payload-sparkplug.md
// for what that means for loss and how the buffer is drained.
//
// Format is safe for concurrent use: one mutex guards the node's state and
// is held across each Publish, so that messages reach the wire in seq order.
package sparkplug

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/sparkplug/sproto"
)

// Namespace is the Sparkplug B topic namespace.
const Namespace = "spBv1.0"

// Node metric names.
const (
	MetricBdSeq   = "bdSeq"
	MetricRebirth = "Node Control/Rebirth"
)

// Config configures a Format.
type Config struct {
	Group string // Sparkplug group id; required
	Node  string // edge node id: the gateway id; required
	// PrimaryHost is the host application id whose spBv1.0/STATE/{host}
	// must say online before NBIRTH; "" for none.
	PrimaryHost string
	// DataQoS is the QoS of DDATA: 0 (the specification's) or 1 (the
	// buffer forgets a record only after the broker's PUBACK).
	DataQoS byte
	// BdSeqFile keeps the last bdSeq across restarts; "" keeps it in
	// memory only (tests). The gateway puts it beside the buffer file.
	BdSeqFile string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Writes carries out DCMD writes; nil rejects them.
	Writes *uplink.Writes
	// Catalog lists the configured devices and their tags. Online births
	// every catalog device (right after NBIRTH, as the specification
	// orders) with all its tags, values not yet read being null and
	// Quality bad. nil: a device's birth lists the tags its records
	// brought so far. Tags not in the catalog are learned from the
	// records either way.
	Catalog []CatalogDevice
}

// CatalogDevice is one configured device and its tags.
type CatalogDevice struct {
	Name string
	Tags []CatalogTag
}

// CatalogTag is one configured tag. Kind is the kind of value the tag
// reads (with Float32 for a 32-bit float), which gives its Sparkplug
// datatype; KindNone (an OPC UA node, whose type is known once read)
// leaves the tag out of births until a record brings it.
type CatalogTag struct {
	Name    string
	Unit    string
	Kind    telemetry.Kind
	Float32 bool
}

// Validate reports every problem in c, joined.
func (c *Config) Validate() error {
	var errs []error
	id := func(field, v string, required bool) {
		switch {
		case v == "" && required:
			errs = append(errs, fmt.Errorf("%s: required", field))
		case strings.ContainsAny(v, "+#/\x00"):
			errs = append(errs, fmt.Errorf("%s: %q must not contain +, #, / or NUL", field, v))
		}
	}
	id("group", c.Group, true)
	id("node", c.Node, true)
	id("primary_host", c.PrimaryHost, false)
	if c.DataQoS > 1 {
		errs = append(errs, fmt.Errorf("data_qos: must be 0 or 1, got %d", c.DataQoS))
	}
	return errors.Join(errs...)
}

// Format is a Sparkplug B edge node; it implements uplink.Format. Create it
// with New. Safe for concurrent use.
type Format struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	nbirth  string
	ndeath  string
	ncmd    string
	dcmd    string // filter
	dprefix string // spBv1.0/{group}/
	state   string // "" without a primary host

	mu         sync.Mutex // guards what follows; held across Publish
	bdSeq      uint64     // of the current connection
	bdLoaded   bool
	seq        uint64 // the next message's seq
	nodeBorn   bool   // NBIRTH sent on this connection
	devices    map[string]*device
	order      []*device // creation order: births are reproducible
	nextAlias  uint64
	hostOnline bool
	hostWake   chan struct{} // closed and replaced when hostOnline changes
	scratch    []byte
	props      []byte
}

type device struct {
	name    string
	ddata   string
	dbirth  string
	ddeath  string
	metrics []*metric
	byTag   map[string]*metric
	born    bool // DBIRTH sent since the last NBIRTH, and no DDEATH since
	catalog bool // in Config.Catalog: born by Online
	// dead: the device's last live record said it is down (see down).
	// Kept across connections: it is the device's state, not the
	// session's.
	dead bool
}

type metric struct {
	tag   string
	alias uint64
	dt    sproto.DataType
	last  telemetry.Point
	hist  bool // last came from a historical record
}

// New returns a Format for cfg. log may be nil.
func New(cfg Config, log *slog.Logger) (*Format, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sparkplug: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	g := Namespace + "/" + cfg.Group + "/"
	f := &Format{
		cfg:      cfg,
		log:      log.With("component", "sparkplug"),
		now:      now,
		nbirth:   g + "NBIRTH/" + cfg.Node,
		ndeath:   g + "NDEATH/" + cfg.Node,
		ncmd:     g + "NCMD/" + cfg.Node,
		dcmd:     g + "DCMD/" + cfg.Node + "/+",
		dprefix:  g,
		devices:  make(map[string]*device),
		hostWake: make(chan struct{}),
	}
	if cfg.PrimaryHost != "" {
		f.state = Namespace + "/STATE/" + cfg.PrimaryHost
	}
	for _, cd := range cfg.Catalog {
		d := f.device(cd.Name)
		d.catalog = true
		for _, ct := range cd.Tags {
			dt := catalogType(ct)
			if _, dup := d.byTag[ct.Name]; dup || dt == sproto.DataType_Unknown {
				continue
			}
			f.nextAlias++
			m := &metric{tag: ct.Name, alias: f.nextAlias, dt: dt,
				last: telemetry.Point{Tag: ct.Name, Unit: ct.Unit, Quality: telemetry.Bad}}
			d.byTag[ct.Name] = m
			d.metrics = append(d.metrics, m)
		}
	}
	return f, nil
}

// catalogType is the Sparkplug datatype of a catalog tag.
func catalogType(t CatalogTag) sproto.DataType {
	switch t.Kind {
	case telemetry.KindBool:
		return dataType(telemetry.Bool(false))
	case telemetry.KindInt:
		return dataType(telemetry.Int(0))
	case telemetry.KindUint:
		return dataType(telemetry.Uint(0))
	case telemetry.KindFloat:
		if t.Float32 {
			return dataType(telemetry.Float32(0))
		}
		return dataType(telemetry.Float(0))
	case telemetry.KindString:
		return dataType(telemetry.String(""))
	}
	return sproto.DataType_Unknown
}

// Encode appends r as a DDATA payload, learning its metrics and taking the
// next seq; it implements uplink.Encoder (benchmarks use it). The uplink
// calls Publish instead.
func (f *Format) Encode(dst []byte, _ string, r *telemetry.Record, historical bool) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.device(r.Batch.Device)
	f.learn(d, &r.Batch, historical)
	return f.appendDData(dst, d, &r.Batch, historical), nil
}

// Will increments and stores bdSeq and returns NDEATH. A new connection
// starts: the node and its devices are unborn.
func (f *Format) Will() (uplink.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.bdLoaded {
		last, ok, err := readBdSeq(f.cfg.BdSeqFile)
		if err != nil {
			return uplink.Message{}, err
		}
		f.bdSeq = 255 // so that a first start uses 0
		if ok {
			f.bdSeq = last
		}
		f.bdLoaded = true
	}
	next := (f.bdSeq + 1) % 256
	if err := writeBdSeq(f.cfg.BdSeqFile, next); err != nil {
		return uplink.Message{}, err
	}
	f.bdSeq = next
	f.nodeBorn = false
	for _, d := range f.order {
		d.born = false
	}
	return uplink.Message{Topic: f.ndeath, QoS: 1, Payload: f.appendNDeath(nil)}, nil
}

// Subscriptions returns NCMD, DCMD and the primary host's STATE topic.
func (f *Format) Subscriptions() []string {
	s := []string{f.ncmd, f.dcmd}
	if f.state != "" {
		s = append(s, f.state)
	}
	return s
}

// Online waits for the primary host (if configured), then publishes NBIRTH.
func (f *Format) Online(ctx context.Context, p uplink.Publisher) (uplink.Token, error) {
	if f.state != "" {
		logged := false
		for {
			f.mu.Lock()
			on, wake := f.hostOnline, f.hostWake
			f.mu.Unlock()
			if on {
				break
			}
			if !logged {
				f.log.Info("waiting for the primary host to be online", "host", f.cfg.PrimaryHost)
				logged = true
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.publishBirths(p, nil), nil
}

// Publish publishes r as DDATA, preceded by the device's DBIRTH when the
// device is not born on this connection or r brings a metric its birth
// lacks. A live record that says the device is down (see down) publishes
// DDEATH instead, once; while the device stays down its records publish
// nothing and the returned token is already done.
func (f *Format) Publish(p uplink.Publisher, dst []byte, r *telemetry.Record, historical bool) (uplink.Token, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.nodeBorn {
		return nil, nil, errors.New("sparkplug: publish before NBIRTH")
	}
	d := f.device(r.Batch.Device)
	changed := f.learn(d, &r.Batch, historical)
	if !historical && down(&r.Batch) {
		if !d.dead {
			f.log.Info("device down: DDEATH", "device", d.name)
		}
		d.dead = true
		if !d.born {
			// Hosts already see the device offline (no DBIRTH on this
			// connection, or a DDEATH sent): nothing to say.
			return doneToken{}, dst[:0], nil
		}
		d.born = false
		payload := f.appendDDeath(dst)
		return p.Publish(uplink.Message{Topic: d.ddeath, QoS: f.cfg.DataQoS, Payload: payload}), payload, nil
	}
	if changed || !d.born {
		if d.dead && !historical {
			f.log.Info("device up: DBIRTH", "device", d.name)
		}
		f.publishDBirth(p, d)
	}
	payload := f.appendDData(dst, d, &r.Batch, historical)
	return p.Publish(uplink.Message{Topic: d.ddata, QoS: f.cfg.DataQoS, Payload: payload}), payload, nil
}

// down reports whether b says its device cannot be reached: every point
// Bad for no_connection or timeout, which is what the collector sends for
// a device it cannot connect to or read (collector.poller.down). A device
// that answers with exceptions or undecodable data is up, with Bad points.
func down(b *telemetry.Batch) bool {
	for i := range b.Points {
		q := b.Points[i].Quality
		if q.Class() != telemetry.Bad || (q.Reason() != telemetry.ReasonNoConnection && q.Reason() != telemetry.ReasonTimeout) {
			return false
		}
	}
	return len(b.Points) > 0
}

// doneToken is the token of a record that needs no message.
type doneToken struct{}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (doneToken) Done() <-chan struct{} { return closed }
func (doneToken) Error() error          { return nil }

// Command handles NCMD (rebirth), DCMD (writes, see handleDCMD) and the
// primary host's STATE.
func (f *Format) Command(p uplink.Publisher, topic string, payload []byte) error {
	switch {
	case topic == f.state:
		on := hostOnline(payload)
		f.mu.Lock()
		was, born := f.hostOnline, f.nodeBorn
		if on != was {
			f.hostOnline = on
			close(f.hostWake)
			f.hostWake = make(chan struct{})
		}
		f.mu.Unlock()
		if !on && born {
			return fmt.Errorf("primary host %q is offline", f.cfg.PrimaryHost)
		}
		return nil
	case topic == f.ncmd:
		var pl sproto.Payload
		if err := proto.Unmarshal(payload, &pl); err != nil {
			f.log.Warn("undecodable NCMD ignored", "err", err)
			return nil
		}
		for _, m := range pl.GetMetrics() {
			if m.GetName() == MetricRebirth && m.GetBooleanValue() {
				f.log.Info("rebirth requested")
				f.mu.Lock()
				if f.nodeBorn {
					var born []*device
					for _, d := range f.order {
						if d.born {
							born = append(born, d)
						}
					}
					f.publishBirths(p, born)
				}
				f.mu.Unlock()
				return nil
			}
		}
		f.log.Warn("NCMD without a known metric ignored")
		return nil
	default: // DCMD
		f.handleDCMD(topic, payload)
		return nil
	}
}

// RetainedCommand handles a retained message on a subscribed topic
// (uplink.RetainedCommander). A retained DCMD is refused (see handleDCMDMessage):
// the broker would deliver it again at every reconnect, and Sparkplug
// requires commands to be published with retain off. STATE is retained by
// design, and a retained NCMD rebirth only repeats the births at each
// connection: both are handled as by Command.
func (f *Format) RetainedCommand(p uplink.Publisher, topic string, payload []byte) error {
	if topic == f.state || topic == f.ncmd {
		return f.Command(p, topic, payload)
	}
	f.handleDCMDMessage(topic, payload, true)
	return nil
}

// Offline publishes NDEATH (QoS 1) before a clean DISCONNECT.
func (f *Format) Offline(p uplink.Publisher) uplink.Token {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodeBorn = false
	return p.Publish(uplink.Message{Topic: f.ndeath, QoS: 1, Payload: f.appendNDeath(nil)})
}

// hostOnline reads a STATE payload: 3.0 JSON {"online":true,...}, or the
// 2.2 plain ONLINE/OFFLINE.
func hostOnline(b []byte) bool {
	var st struct {
		Online bool `json:"online"`
	}
	if json.Unmarshal(b, &st) == nil {
		return st.Online
	}
	return strings.EqualFold(strings.TrimSpace(string(b)), "ONLINE")
}

func (f *Format) nextSeq() uint64 {
	s := f.seq
	f.seq = (f.seq + 1) % 256
	return s
}

// device returns the state of the named device, created on first use.
func (f *Format) device(name string) *device {
	if d, ok := f.devices[name]; ok {
		return d
	}
	id := uplink.TopicLevel(name)
	d := &device{
		name:   name,
		ddata:  f.dprefix + "DDATA/" + f.cfg.Node + "/" + id,
		dbirth: f.dprefix + "DBIRTH/" + f.cfg.Node + "/" + id,
		ddeath: f.dprefix + "DDEATH/" + f.cfg.Node + "/" + id,
		byTag:  make(map[string]*metric),
	}
	f.devices[name] = d
	f.order = append(f.order, d)
	return d
}

// learn records b's points as the metrics' last values and reports
// whether b has a metric the device's birth lacks or a value of another
// type. A metric first seen without a value is born as Double.
func (f *Format) learn(d *device, b *telemetry.Batch, hist bool) (changed bool) {
	for i := range b.Points {
		pt := &b.Points[i]
		dt := dataType(pt.Value)
		m, ok := d.byTag[pt.Tag]
		if !ok {
			if dt == sproto.DataType_Unknown {
				dt = sproto.DataType_Double
			}
			f.nextAlias++
			m = &metric{tag: pt.Tag, alias: f.nextAlias, dt: dt}
			d.byTag[pt.Tag] = m
			d.metrics = append(d.metrics, m)
			changed = true
		} else if dt != sproto.DataType_Unknown && dt != m.dt {
			m.dt = dt
			changed = true
		} else if pt.Unit != m.last.Unit {
			changed = true
		}
		m.last = *pt
		m.hist = hist
	}
	return changed
}

func (f *Format) publishNBirth(p uplink.Publisher) uplink.Token {
	f.seq = 0
	now := f.now()
	b := appendHeader(nil, now, f.nextSeq(), true)
	b = appendMetric(b, &metricValue{name: MetricBdSeq, ts: now, dt: sproto.DataType_UInt64, v: telemetry.Uint(f.bdSeq)}, &f.scratch, &f.props)
	b = appendMetric(b, &metricValue{name: MetricRebirth, ts: now, dt: sproto.DataType_Boolean, v: telemetry.Bool(false)}, &f.scratch, &f.props)
	f.nodeBorn = true
	for _, d := range f.order {
		d.born = false
	}
	return p.Publish(uplink.Message{Topic: f.nbirth, QoS: 0, Payload: b})
}

// publishBirths publishes NBIRTH, then the DBIRTH of the devices in born
// and of every catalog device that is not down; it returns NBIRTH's token.
func (f *Format) publishBirths(p uplink.Publisher, born []*device) uplink.Token {
	tok := f.publishNBirth(p)
	for _, d := range f.order {
		if slices.Contains(born, d) || (d.catalog && !d.dead) {
			f.publishDBirth(p, d)
		}
	}
	return tok
}

func (f *Format) publishDBirth(p uplink.Publisher, d *device) {
	b := appendHeader(nil, f.now(), f.nextSeq(), true)
	for _, m := range d.metrics {
		b = appendMetric(b, &metricValue{
			name: m.tag, alias: m.alias, ts: m.last.Time, dt: m.dt, hist: m.hist,
			v: m.last.Value, unit: m.last.Unit, quality: m.last.Quality, props: true,
		}, &f.scratch, &f.props)
	}
	d.born, d.dead = true, false
	p.Publish(uplink.Message{Topic: d.dbirth, QoS: 0, Payload: b})
}

func (f *Format) appendDData(dst []byte, d *device, b *telemetry.Batch, hist bool) []byte {
	dst = appendHeader(dst, f.now(), f.nextSeq(), true)
	for i := range b.Points {
		pt := &b.Points[i]
		m := d.byTag[pt.Tag]
		dst = appendMetric(dst, &metricValue{
			alias: m.alias, ts: pt.Time, hist: hist, v: pt.Value, quality: pt.Quality,
			props: !pt.Quality.IsGood(), // DDATA carries no datatype, as the spec recommends
		}, &f.scratch, &f.props)
	}
	return dst
}

// appendDDeath appends a DDEATH payload: timestamp and seq, no metrics
// (the specification requires seq; bdSeq belongs to NBIRTH/NDEATH only).
func (f *Format) appendDDeath(dst []byte) []byte {
	return appendHeader(dst, f.now(), f.nextSeq(), true)
}

func (f *Format) appendNDeath(dst []byte) []byte {
	now := f.now()
	dst = appendHeader(dst, now, 0, false)
	return appendMetric(dst, &metricValue{name: MetricBdSeq, ts: now, dt: sproto.DataType_UInt64, v: telemetry.Uint(f.bdSeq)}, &f.scratch, &f.props)
}

// readBdSeq reads the last bdSeq from path; ok is false when there is none.
func readBdSeq(path string) (last uint64, ok bool, err error) {
	if path == "" {
		return 0, false, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read bdSeq: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 8)
	if err != nil {
		// A torn or foreign file: start again; hosts accept any bdSeq in an
		// NBIRTH, they only match it with the NDEATH.
		return 0, false, nil
	}
	return n, true, nil
}

// writeBdSeq stores n in path atomically (write, fsync, rename).
func writeBdSeq(path string, n uint64) error {
	if path == "" {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write bdSeq: %w", err)
	}
	_, err = tmp.WriteString(strconv.FormatUint(n, 10) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write bdSeq: %w", err)
	}
	return nil
}
