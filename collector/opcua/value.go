package opcua

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Quality maps an OPC UA status code to a telemetry quality: the severity
// bits (the top two) give Good, Uncertain or Bad; anything not Good gets
// the reason ReasonDevice (the server said so). The original code is
// logged by the driver when a tag's status changes.
func Quality(s ua.StatusCode) telemetry.Quality {
	switch uint32(s) >> 30 {
	case 0:
		return telemetry.Good
	case 1:
		return telemetry.Uncertain | telemetry.ReasonDevice
	default:
		return telemetry.Bad | telemetry.ReasonDevice
	}
}

// Value converts an OPC UA variant to a telemetry value. Integers keep
// their sign (SByte..Int64 -> Int, Byte..UInt64 -> Uint), Float is a
// float32 value, Double a float64; String, XmlElement, LocalizedText
// (text only), QualifiedName (ns:name), Guid, NodeId and ExpandedNodeId
// (their string form), DateTime (RFC 3339 in UTC, nanoseconds), and
// ByteString (lower-case hex) are strings; a StatusCode is its Uint code.
// Arrays, matrices, structures (ExtensionObject) and the remaining types
// are not converted: ok is false and why says what it was.
func Value(v *ua.Variant) (val telemetry.Value, why string, ok bool) {
	if v == nil || v.Type() == ua.TypeIDNull {
		return val, "no value (null)", false
	}
	if v.Has(ua.VariantArrayValues) {
		return val, fmt.Sprintf("an array of %s (%d elements); arrays are not supported", v.Type(), v.ArrayLength()), false
	}
	switch x := v.Value().(type) {
	case bool:
		return telemetry.Bool(x), "", true
	case int8:
		return telemetry.Int(int64(x)), "", true
	case int16:
		return telemetry.Int(int64(x)), "", true
	case int32:
		return telemetry.Int(int64(x)), "", true
	case int64:
		return telemetry.Int(x), "", true
	case uint8:
		return telemetry.Uint(uint64(x)), "", true
	case uint16:
		return telemetry.Uint(uint64(x)), "", true
	case uint32:
		return telemetry.Uint(uint64(x)), "", true
	case uint64:
		return telemetry.Uint(x), "", true
	case float32:
		return telemetry.Float32(x), "", true
	case float64:
		return telemetry.Float(x), "", true
	case string:
		return telemetry.String(x), "", true
	case ua.XMLElement:
		return telemetry.String(string(x)), "", true
	case []byte:
		return telemetry.String(hex.EncodeToString(x)), "", true
	case time.Time:
		return telemetry.String(x.UTC().Format(time.RFC3339Nano)), "", true
	case *ua.GUID:
		if x == nil {
			return val, "a null Guid", false
		}
		return telemetry.String(x.String()), "", true
	case *ua.NodeID:
		if x == nil {
			return val, "a null NodeId", false
		}
		return telemetry.String(x.String()), "", true
	case *ua.ExpandedNodeID:
		if x == nil {
			return val, "a null ExpandedNodeId", false
		}
		return telemetry.String(x.String()), "", true
	case *ua.LocalizedText:
		if x == nil {
			return telemetry.String(""), "", true
		}
		return telemetry.String(x.Text), "", true
	case *ua.QualifiedName:
		if x == nil {
			return telemetry.String(""), "", true
		}
		return telemetry.String(fmt.Sprintf("%d:%s", x.NamespaceIndex, x.Name)), "", true
	case ua.StatusCode:
		return telemetry.Uint(uint64(x)), "", true
	}
	return val, fmt.Sprintf("a value of type %s, which has no telemetry form", v.Type()), false
}
