package sparkplug

import (
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/sparkplug/sproto"
)

// retainedDCMD is the reason a retained DCMD's metrics are refused with.
const retainedDCMD = "retained DCMD is not carried out (the broker would deliver it again at every reconnect); publish commands with retain off, as Sparkplug requires"

// dcmdWrite is one metric of a DCMD: the write it asks for, or why it
// cannot be one (reason, for a RejectBadRequest).
type dcmdWrite struct {
	tag    string // the metric's name, or the name its alias has in the birth ("" when unknown)
	alias  uint64
	value  telemetry.Value
	reason string
}

// birthInfo resolves a DCMD metric against the device's birth: the name
// of an alias, and the datatype of a name. ok is false when the device's
// birth has no such metric.
type birthInfo interface {
	byAlias(alias uint64) (name string, dt sproto.DataType, ok bool)
	byName(name string) (dt sproto.DataType, ok bool)
}

// parseDCMD decodes a DCMD payload into one write per metric. A metric
// names its tag by name or by an alias of the device's birth; its value is
// read as its datatype (the metric's own, else the birth's): Boolean;
// Int8..Int64 and UInt8..UInt64; Float and Double; String and Text.
// Anything else, a null value, or a value field that does not fit the
// datatype is a write with a reason. An error means the payload is not a
// Sparkplug payload at all. parseDCMD only reads payload.
func parseDCMD(payload []byte, b birthInfo) ([]dcmdWrite, error) {
	var pl sproto.Payload
	if err := proto.Unmarshal(payload, &pl); err != nil {
		return nil, err
	}
	out := make([]dcmdWrite, 0, len(pl.GetMetrics()))
	for _, m := range pl.GetMetrics() {
		w := dcmdWrite{tag: m.GetName(), alias: m.GetAlias()}
		var dt sproto.DataType
		var known bool
		switch {
		case m.Name != nil && m.GetName() != "":
			dt, known = b.byName(w.tag)
		case m.Alias != nil:
			w.tag, dt, known = b.byAlias(w.alias)
			if !known {
				w.reason = fmt.Sprintf("alias %d is not in the device's birth", w.alias)
				out = append(out, w)
				continue
			}
		default:
			w.reason = "metric has neither a name nor an alias"
			out = append(out, w)
			continue
		}
		if m.Datatype != nil {
			dt = sproto.DataType(m.GetDatatype())
		} else if !known {
			w.reason = fmt.Sprintf("metric %q has no datatype and is not in the device's birth", w.tag)
			out = append(out, w)
			continue
		}
		w.value, w.reason = dcmdValue(m, dt)
		out = append(out, w)
	}
	return out, nil
}

// dcmdValue reads m's value as datatype dt.
func dcmdValue(m *sproto.Payload_Metric, dt sproto.DataType) (telemetry.Value, string) {
	if m.GetIsNull() || m.GetValue() == nil {
		return telemetry.Value{}, "metric has no value"
	}
	// Integers: Int8..UInt32 travel in int_value, 64-bit ones in
	// long_value; either is accepted for any integer type, checked against
	// the type's range.
	var u uint64
	var isInt bool
	switch v := m.GetValue().(type) {
	case *sproto.Payload_Metric_IntValue:
		u, isInt = uint64(v.IntValue), true
	case *sproto.Payload_Metric_LongValue:
		u, isInt = v.LongValue, true
	}
	mismatch := func() (telemetry.Value, string) {
		return telemetry.Value{}, fmt.Sprintf("value field does not fit datatype %s", dt)
	}
	switch dt {
	case sproto.DataType_Int8, sproto.DataType_Int16, sproto.DataType_Int32, sproto.DataType_Int64:
		if !isInt {
			return mismatch()
		}
		bits := map[sproto.DataType]uint{sproto.DataType_Int8: 8, sproto.DataType_Int16: 16, sproto.DataType_Int32: 32, sproto.DataType_Int64: 64}[dt]
		i, ok := signed(u, bits, m.GetValue())
		if !ok {
			return telemetry.Value{}, fmt.Sprintf("%d is out of range for %s", u, dt)
		}
		return telemetry.Int(i), ""
	case sproto.DataType_UInt8, sproto.DataType_UInt16, sproto.DataType_UInt32, sproto.DataType_UInt64:
		if !isInt {
			return mismatch()
		}
		bits := map[sproto.DataType]uint{sproto.DataType_UInt8: 8, sproto.DataType_UInt16: 16, sproto.DataType_UInt32: 32, sproto.DataType_UInt64: 64}[dt]
		if bits < 64 && u >= 1<<bits {
			return telemetry.Value{}, fmt.Sprintf("%d is out of range for %s", u, dt)
		}
		return telemetry.Uint(u), ""
	case sproto.DataType_Float:
		switch v := m.GetValue().(type) {
		case *sproto.Payload_Metric_FloatValue:
			return telemetry.Float32(v.FloatValue), ""
		case *sproto.Payload_Metric_DoubleValue:
			return telemetry.Float32(float32(v.DoubleValue)), ""
		}
		return mismatch()
	case sproto.DataType_Double:
		switch v := m.GetValue().(type) {
		case *sproto.Payload_Metric_FloatValue:
			return telemetry.Float(float64(v.FloatValue)), ""
		case *sproto.Payload_Metric_DoubleValue:
			return telemetry.Float(v.DoubleValue), ""
		}
		return mismatch()
	case sproto.DataType_Boolean:
		if v, ok := m.GetValue().(*sproto.Payload_Metric_BooleanValue); ok {
			return telemetry.Bool(v.BooleanValue), ""
		}
		return mismatch()
	case sproto.DataType_String, sproto.DataType_Text:
		if v, ok := m.GetValue().(*sproto.Payload_Metric_StringValue); ok {
			return telemetry.String(v.StringValue), ""
		}
		return mismatch()
	}
	return telemetry.Value{}, fmt.Sprintf("datatype %s cannot be written", dt)
}

// signed reads u as a signed integer of bits bits. In int_value (32 bits)
// a negative IntN arrives either zero-extended from N bits (0xFF for int8
// -1) or sign-extended to 32 bits (0xFFFFFFFF); both are accepted. In
// long_value it is sign-extended to 64 bits.
func signed(u uint64, bits uint, v any) (int64, bool) {
	if bits == 64 {
		return int64(u), true
	}
	width := uint(32)
	if _, ok := v.(*sproto.Payload_Metric_LongValue); ok {
		width = 64
	}
	half := uint64(1) << (bits - 1)
	switch {
	case u < half: // non-negative
		return int64(u), true
	case u < 2*half: // zero-extended negative
		return int64(u) - int64(2*half), true
	}
	// sign-extended negative: the bits above bits-1 are all ones up to width
	var top uint64 = math.MaxUint64
	if width == 32 {
		top = math.MaxUint32
	}
	if u <= top && u >= top-half+1 {
		return int64(u-top) - 1, true
	}
	return 0, false
}

// birth is the birthInfo of a device; the caller holds f.mu.
type birth struct{ d *device }

func (b birth) byAlias(alias uint64) (string, sproto.DataType, bool) {
	if b.d == nil {
		return "", 0, false
	}
	for _, m := range b.d.metrics {
		if m.alias == alias {
			return m.tag, m.dt, true
		}
	}
	return "", 0, false
}

func (b birth) byName(name string) (sproto.DataType, bool) {
	if b.d == nil {
		return 0, false
	}
	if m, ok := b.d.byTag[name]; ok {
		return m.dt, true
	}
	return 0, false
}

// handleDCMD handles a DCMD on topic: every metric becomes a WriteRequest
// submitted to Config.Writes. Sparkplug has no result message: results
// are logged, and a successful write shows in the next DDATA.
func (f *Format) handleDCMD(topic string, payload []byte) { f.handleDCMDMessage(topic, payload, false) }

// handleDCMDMessage handles a DCMD (see handleDCMD). A retained one is
// refused: each metric is recorded as bad_request and nothing is written.
func (f *Format) handleDCMDMessage(topic string, payload []byte, retained bool) {
	prefix := f.dcmd[:len(f.dcmd)-1] // the filter ends in "+"
	id, ok := strings.CutPrefix(topic, prefix)
	if !ok || id == "" || strings.Contains(id, "/") {
		f.log.Warn("message on an unexpected topic ignored", "topic", topic)
		return
	}
	f.mu.Lock()
	var d *device
	for _, x := range f.order {
		if uplink.TopicLevel(x.name) == id {
			d = x
			break
		}
	}
	name := id
	if d != nil {
		name = d.name
	}
	writes, err := parseDCMD(payload, birth{d})
	f.mu.Unlock()
	if err != nil {
		f.log.Warn("DCMD rejected", "code", uplink.RejectBadRequest, "topic", topic, "err", err)
		f.cfg.Writes.Reject(uplink.WriteRequest{Source: "sparkplug", Topic: topic, Device: name},
			uplink.WriteResult{Code: uplink.RejectBadRequest, Reason: "not a Sparkplug B payload: " + err.Error()})
		return
	}
	if retained {
		f.log.Warn("retained DCMD refused", "code", uplink.RejectBadRequest, "topic", topic, "metrics", len(writes))
	}
	for _, w := range writes {
		req := uplink.WriteRequest{Source: "sparkplug", Topic: topic, Device: name, Tag: w.tag, Value: w.value}
		if retained {
			f.cfg.Writes.Reject(req, uplink.WriteResult{Code: uplink.RejectBadRequest, Reason: retainedDCMD})
			continue
		}
		if w.reason != "" {
			f.log.Warn("DCMD metric rejected", "code", uplink.RejectBadRequest, "device", name,
				"tag", w.tag, "alias", w.alias, "reason", w.reason)
			f.cfg.Writes.Reject(req, uplink.WriteResult{Code: uplink.RejectBadRequest, Reason: w.reason}) // for the audit log
			continue
		}
		f.cfg.Writes.Submit(req, func(r uplink.WriteResult) {
			if r.OK() {
				f.log.Info("DCMD write done", "device", req.Device, "tag", req.Tag, "value", req.Value)
				return
			}
			f.log.Warn("DCMD write rejected", "code", r.Code, "reason", r.Reason,
				"device", req.Device, "tag", req.Tag, "value", req.Value)
		})
	}
}
