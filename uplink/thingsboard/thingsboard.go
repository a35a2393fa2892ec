// Package thingsboard publishes the gateway's telemetry with ThingsBoard's
// MQTT gateway API (docs/payload-thingsboard.md). The gateway connects as
// one ThingsBoard gateway device (its access token is mqtt.username); every
// fieldgate device becomes a ThingsBoard device the gateway reports for.
//
// On each connection, before a device's first telemetry, Format publishes
// v1/gateway/connect {"device":NAME} and v1/gateway/attributes with the
// device's static info (the gateway id and each tag's unit); attributes
// are sent again when a tag with a new unit appears. Each record is one
// v1/gateway/telemetry message {NAME:[{"ts":ms,"values":{tag:value}}]},
// one entry per distinct timestamp. A clean stop publishes
// v1/gateway/disconnect for every connected device. All messages are QoS 1
// (Config.QoS): a record leaves the buffer after its PUBACK.
//
// Writes are ThingsBoard server-side RPC: Format subscribes v1/gateway/rpc,
// turns a request {"device":NAME,"data":{"id":N,"method":M,"params":P}}
// with method "set" (params {"tag":T,"value":V}) or "set_<tag>" (params
// the value) into an uplink.WriteRequest (Source "thingsboard") submitted to
// the gateway's Writes, and publishes the result on v1/gateway/rpc as
// {"device":NAME,"id":N,"data":{"success":true}} or
// {"device":NAME,"id":N,"data":{"success":false,"code":C,"error":REASON}}
// (see rpc.go and docs/payload-thingsboard.md).
//
// Format is safe for concurrent use.
package thingsboard

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
)

// ThingsBoard gateway API topics.
const (
	TopicConnect    = "v1/gateway/connect"
	TopicDisconnect = "v1/gateway/disconnect"
	TopicTelemetry  = "v1/gateway/telemetry"
	TopicAttributes = "v1/gateway/attributes"
	TopicRPC        = "v1/gateway/rpc" // requests from ThingsBoard and the gateway's replies
)

// Format is the ThingsBoard gateway API; it implements uplink.Format.
type Format struct {
	gateway string
	qos     byte
	writes  *uplink.Writes
	log     *slog.Logger

	mu      sync.Mutex
	devices map[string]*device
}

type device struct {
	connected bool              // connect sent on this connection
	units     map[string]string // tag -> unit, as last sent in attributes
	dirty     bool              // units changed since the attributes were sent
}

// New returns a Format for the gateway id gateway, publishing with qos
// (0 means 1). RPC writes go to writes (nil rejects them as
// writes_disabled); log may be nil.
func New(gateway string, qos byte, writes *uplink.Writes, log *slog.Logger) *Format {
	if qos == 0 {
		qos = 1
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Format{gateway: gateway, qos: qos, writes: writes, log: log.With("component", "thingsboard"),
		devices: make(map[string]*device)}
}

// Encode appends r's telemetry payload; it implements uplink.Encoder.
func (f *Format) Encode(dst []byte, _ string, r *telemetry.Record, _ bool) ([]byte, error) {
	return AppendTelemetry(dst, &r.Batch), nil
}

// Will returns no will: ThingsBoard tracks the gateway device's
// connection itself.
func (f *Format) Will() (uplink.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.devices {
		d.connected = false
	}
	return uplink.Message{}, nil
}

// Subscriptions returns the RPC topic.
func (f *Format) Subscriptions() []string { return []string{TopicRPC} }

// Online publishes nothing; devices connect with their first record.
func (f *Format) Online(context.Context, uplink.Publisher) (uplink.Token, error) { return nil, nil }

// Publish connects r's device (and sends its attributes) if needed, then
// publishes r's telemetry.
func (f *Format) Publish(p uplink.Publisher, dst []byte, r *telemetry.Record, _ bool) (uplink.Token, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := r.Batch.Device
	d := f.devices[name]
	if d == nil {
		d = &device{units: map[string]string{}, dirty: true}
		f.devices[name] = d
	}
	for i := range r.Batch.Points {
		pt := &r.Batch.Points[i]
		if pt.Unit != "" && d.units[pt.Tag] != pt.Unit {
			d.units[pt.Tag] = pt.Unit
			d.dirty = true
		}
	}
	if !d.connected {
		b := append([]byte(`{"device":`), jsonenc.AppendString(nil, name)...)
		p.Publish(uplink.Message{Topic: TopicConnect, QoS: f.qos, Payload: append(b, '}')})
		d.connected, d.dirty = true, true
	}
	if d.dirty {
		p.Publish(uplink.Message{Topic: TopicAttributes, QoS: f.qos, Payload: f.appendAttributes(nil, name, d)})
		d.dirty = false
	}
	payload := AppendTelemetry(dst, &r.Batch)
	return p.Publish(uplink.Message{Topic: TopicTelemetry, QoS: f.qos, Payload: payload}), payload, nil
}

// Offline disconnects every connected device; the token is the last one's.
func (f *Format) Offline(p uplink.Publisher) uplink.Token {
	f.mu.Lock()
	defer f.mu.Unlock()
	var tok uplink.Token
	names := make([]string, 0, len(f.devices))
	for n, d := range f.devices {
		if d.connected {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		b := append([]byte(`{"device":`), jsonenc.AppendString(nil, n)...)
		tok = p.Publish(uplink.Message{Topic: TopicDisconnect, QoS: f.qos, Payload: append(b, '}')})
		f.devices[n].connected = false
	}
	return tok
}

// appendAttributes appends {NAME:{"gateway":ID,"<tag>_unit":UNIT,...}}.
func (f *Format) appendAttributes(dst []byte, name string, d *device) []byte {
	dst = append(dst, '{')
	dst = jsonenc.AppendString(dst, name)
	dst = append(dst, `:{"gateway":`...)
	dst = jsonenc.AppendString(dst, f.gateway)
	tags := make([]string, 0, len(d.units))
	for t := range d.units {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	for _, t := range tags {
		dst = append(dst, ',')
		dst = jsonenc.AppendString(dst, t+"_unit")
		dst = append(dst, ':')
		dst = jsonenc.AppendString(dst, d.units[t])
	}
	return append(dst, "}}"...)
}

// AppendTelemetry appends b as a v1/gateway/telemetry payload:
// {DEVICE:[{"ts":ms,"values":{TAG:VALUE,...}},...]}, one entry per run of
// points with the same timestamp. A point that is not good adds
// "<tag>_quality":"bad"|"uncertain" beside its value; a point without a
// value (or NaN, infinity) has only that.
func AppendTelemetry(dst []byte, b *telemetry.Batch) []byte {
	dst = append(dst, '{')
	dst = jsonenc.AppendString(dst, b.Device)
	dst = append(dst, ":["...)
	for i := 0; i < len(b.Points); {
		ts := b.Points[i].Time
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"ts":`...)
		dst = appendInt(dst, unixMilli(&b.Points[i]))
		dst = append(dst, `,"values":{`...)
		first := true
		for ; i < len(b.Points) && b.Points[i].Time.Equal(ts); i++ {
			pt := &b.Points[i]
			q := pt.Quality
			if !pt.Value.IsNone() {
				mark := len(dst)
				if !first {
					dst = append(dst, ',')
				}
				dst = jsonenc.AppendString(dst, pt.Tag)
				dst = append(dst, ':')
				var ok bool
				if dst, ok = jsonenc.AppendValue(dst, pt.Value); !ok {
					dst = dst[:mark] // NaN or infinity: report as bad, without a value
					if q.IsGood() {
						q = telemetry.Bad | telemetry.ReasonDecode
					}
				} else {
					first = false
				}
			}
			if !q.IsGood() || pt.Value.IsNone() {
				if !first {
					dst = append(dst, ',')
				}
				dst = jsonenc.AppendString(dst, pt.Tag+"_quality")
				dst = append(dst, ':', '"')
				dst = append(dst, q.ClassString()...)
				dst = append(dst, '"')
				first = false
			}
		}
		dst = append(dst, "}}"...)
	}
	return append(dst, "]}"...)
}

func unixMilli(p *telemetry.Point) int64 {
	if p.Time.IsZero() {
		return 0
	}
	return p.Time.UnixMilli()
}

func appendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }
