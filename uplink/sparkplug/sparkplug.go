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
//     publishes NBIRTH (seq 0, bdSeq, Node Control/Rebirth).
//   - The first record of a device on a connection publishes a DBIRTH with
//     every metric the device has had so far (name, alias, datatype, last
//     value, properties engUnit and Quality), then the record as DDATA
//     (aliases only). A record with a new metric, or a value of another
//     type, publishes the device's DBIRTH again first.
//   - seq runs 0..255 over NBIRTH, DBIRTH and DDATA of the node; NBIRTH is 0.
//   - NCMD Node Control/Rebirth = true publishes NBIRTH (seq 0, same bdSeq)
//     and the DBIRTH of every device born on this connection.
//   - A primary host's STATE offline ends the connection (the broker sends
//     NDEATH); data stays in the buffer until the host is back.
//   - DCMD (writes) are refused with a logged reason until writes exist.
//   - Records replayed from the backlog carry is_historical on every metric.
//
// Births are QoS 0, as the specification requires. Data is QoS 0 by
// default (Config.DataQoS); see the QoS section of docs/payload-sparkplug.md
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
	metrics []*metric
	byTag   map[string]*metric
	born    bool // DBIRTH sent since the last NBIRTH
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
	return f, nil
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
	return f.publishNBirth(p), nil
}

// Publish publishes r as DDATA, preceded by the device's DBIRTH when the
// device is not born on this connection or r brings a metric its birth
// lacks.
func (f *Format) Publish(p uplink.Publisher, dst []byte, r *telemetry.Record, historical bool) (uplink.Token, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.nodeBorn {
		return nil, nil, errors.New("sparkplug: publish before NBIRTH")
	}
	d := f.device(r.Batch.Device)
	if f.learn(d, &r.Batch, historical) || !d.born {
		f.publishDBirth(p, d)
	}
	payload := f.appendDData(dst, d, &r.Batch, historical)
	return p.Publish(uplink.Message{Topic: d.ddata, QoS: f.cfg.DataQoS, Payload: payload}), payload, nil
}

// Command handles NCMD (rebirth), DCMD (refused) and the primary host's
// STATE.
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
					f.publishNBirth(p)
					for _, d := range born {
						f.publishDBirth(p, d)
					}
				}
				f.mu.Unlock()
				return nil
			}
		}
		f.log.Warn("NCMD without a known metric ignored")
		return nil
	default: // DCMD
		var pl sproto.Payload
		_ = proto.Unmarshal(payload, &pl)
		var names []string
		for _, m := range pl.GetMetrics() {
			names = append(names, m.GetName())
		}
		f.log.Warn("DCMD refused: writes are not supported yet", "topic", topic, "metrics", names)
		return nil
	}
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

func (f *Format) publishDBirth(p uplink.Publisher, d *device) {
	b := appendHeader(nil, f.now(), f.nextSeq(), true)
	for _, m := range d.metrics {
		b = appendMetric(b, &metricValue{
			name: m.tag, alias: m.alias, ts: m.last.Time, dt: m.dt, hist: m.hist,
			v: m.last.Value, unit: m.last.Unit, quality: m.last.Quality, props: true,
		}, &f.scratch, &f.props)
	}
	d.born = true
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
