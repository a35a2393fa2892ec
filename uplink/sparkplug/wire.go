package sparkplug

import (
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink/sparkplug/sproto"
)

// The payloads are appended field by field with protowire rather than
// built as sproto structs and marshalled: the hot path (DDATA) then does
// not allocate. Field numbers are those of sproto/sparkplug_b.proto; the
// tests decode every message with the generated code and with Eclipse
// Tahu's JavaScript decoder.
const (
	fPayloadTimestamp = 1
	fPayloadMetrics   = 2
	fPayloadSeq       = 3

	fMetricName         = 1
	fMetricAlias        = 2
	fMetricTimestamp    = 3
	fMetricDatatype     = 4
	fMetricIsHistorical = 5
	fMetricIsNull       = 7
	fMetricProperties   = 9
	fMetricLongValue    = 11
	fMetricFloatValue   = 12
	fMetricDoubleValue  = 13
	fMetricBooleanValue = 14
	fMetricStringValue  = 15

	fPropKeys   = 1
	fPropValues = 2

	fPropValueType        = 1
	fPropValueIntValue    = 3
	fPropValueStringValue = 8
)

// Quality property values, as Ignition and other Tahu hosts read the
// "Quality" metric property (OPC DA quality codes).
const (
	qualityGood      = 192
	qualityUncertain = 64
	qualityBad       = 0
)

// metricValue is what a metric line carries.
type metricValue struct {
	name    string // "" in DDATA (alias only)
	alias   uint64 // 0: none
	ts      time.Time
	dt      sproto.DataType // 0: omitted (DDATA)
	hist    bool
	v       telemetry.Value
	unit    string // birth only
	quality telemetry.Quality
	props   bool // write the properties: births always, data when not good
}

// appendMetric appends one Payload.metrics entry; scratch is reused.
func appendMetric(dst []byte, m *metricValue, scratch *[]byte, props *[]byte) []byte {
	b := (*scratch)[:0]
	if m.name != "" {
		b = protowire.AppendTag(b, fMetricName, protowire.BytesType)
		b = protowire.AppendString(b, m.name)
	}
	if m.alias != 0 {
		b = protowire.AppendTag(b, fMetricAlias, protowire.VarintType)
		b = protowire.AppendVarint(b, m.alias)
	}
	if !m.ts.IsZero() {
		b = protowire.AppendTag(b, fMetricTimestamp, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.ts.UnixMilli()))
	}
	if m.dt != sproto.DataType_Unknown {
		b = protowire.AppendTag(b, fMetricDatatype, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.dt))
	}
	if m.hist {
		b = protowire.AppendTag(b, fMetricIsHistorical, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if m.props {
		p := appendProps((*props)[:0], m.unit, m.quality)
		*props = p
		b = protowire.AppendTag(b, fMetricProperties, protowire.BytesType)
		b = protowire.AppendBytes(b, p)
	}
	b = appendValue(b, m.v, m.dt)
	*scratch = b
	dst = protowire.AppendTag(dst, fPayloadMetrics, protowire.BytesType)
	return protowire.AppendBytes(dst, b)
}

// appendValue appends the value field, or is_null for no value.
func appendValue(b []byte, v telemetry.Value, dt sproto.DataType) []byte {
	switch v.Kind() {
	case telemetry.KindBool:
		b = protowire.AppendTag(b, fMetricBooleanValue, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
	case telemetry.KindInt:
		b = protowire.AppendTag(b, fMetricLongValue, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(v.AsInt())) // two's complement, as the spec says
	case telemetry.KindUint:
		b = protowire.AppendTag(b, fMetricLongValue, protowire.VarintType)
		return protowire.AppendVarint(b, v.AsUint())
	case telemetry.KindFloat:
		if v.IsFloat32() || dt == sproto.DataType_Float {
			b = protowire.AppendTag(b, fMetricFloatValue, protowire.Fixed32Type)
			return protowire.AppendFixed32(b, math.Float32bits(float32(v.AsFloat())))
		}
		b = protowire.AppendTag(b, fMetricDoubleValue, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v.AsFloat()))
	case telemetry.KindString:
		b = protowire.AppendTag(b, fMetricStringValue, protowire.BytesType)
		return protowire.AppendString(b, v.AsString())
	}
	b = protowire.AppendTag(b, fMetricIsNull, protowire.VarintType)
	return protowire.AppendVarint(b, 1)
}

// appendProps appends a PropertySet: engUnit (if unit is set) and Quality.
func appendProps(b []byte, unit string, q telemetry.Quality) []byte {
	if unit != "" {
		b = protowire.AppendTag(b, fPropKeys, protowire.BytesType)
		b = protowire.AppendString(b, "engUnit")
	}
	b = protowire.AppendTag(b, fPropKeys, protowire.BytesType)
	b = protowire.AppendString(b, "Quality")
	if unit != "" {
		// PropertyValue{type: String, string_value: unit}
		n := protowire.SizeTag(fPropValueType) + protowire.SizeVarint(uint64(sproto.DataType_String)) +
			protowire.SizeTag(fPropValueStringValue) + protowire.SizeBytes(len(unit))
		b = protowire.AppendTag(b, fPropValues, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = protowire.AppendTag(b, fPropValueType, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(sproto.DataType_String))
		b = protowire.AppendTag(b, fPropValueStringValue, protowire.BytesType)
		b = protowire.AppendString(b, unit)
	}
	code := uint64(qualityCode(q))
	n := protowire.SizeTag(fPropValueType) + protowire.SizeVarint(uint64(sproto.DataType_Int32)) +
		protowire.SizeTag(fPropValueIntValue) + protowire.SizeVarint(code)
	b = protowire.AppendTag(b, fPropValues, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = protowire.AppendTag(b, fPropValueType, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(sproto.DataType_Int32))
	b = protowire.AppendTag(b, fPropValueIntValue, protowire.VarintType)
	return protowire.AppendVarint(b, code)
}

func qualityCode(q telemetry.Quality) int {
	switch q.Class() {
	case telemetry.Good:
		return qualityGood
	case telemetry.Uncertain:
		return qualityUncertain
	}
	return qualityBad
}

// dataType is the Sparkplug type of a value; KindNone gives Unknown.
func dataType(v telemetry.Value) sproto.DataType {
	switch v.Kind() {
	case telemetry.KindBool:
		return sproto.DataType_Boolean
	case telemetry.KindInt:
		return sproto.DataType_Int64
	case telemetry.KindUint:
		return sproto.DataType_UInt64
	case telemetry.KindFloat:
		if v.IsFloat32() {
			return sproto.DataType_Float
		}
		return sproto.DataType_Double
	case telemetry.KindString:
		return sproto.DataType_String
	}
	return sproto.DataType_Unknown
}

// appendHeader starts a payload: timestamp and (if withSeq) seq.
func appendHeader(dst []byte, now time.Time, seq uint64, withSeq bool) []byte {
	dst = protowire.AppendTag(dst, fPayloadTimestamp, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(now.UnixMilli()))
	if withSeq {
		dst = protowire.AppendTag(dst, fPayloadSeq, protowire.VarintType)
		dst = protowire.AppendVarint(dst, seq)
	}
	return dst
}
