package opcua

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/telemetry"
)

// ErrNotConnected is wrapped by Write and ReadTag while the driver has no
// session: they never connect on their own (the collector does, with
// backoff), so the caller should try again later.
var ErrNotConnected = errors.New("not connected")

// Write sets a tag's node to v with a Write service call. It implements
// collector.Writer.
//
// The value is converted to the node's type, which Write first reads: the
// DataType attribute when it is a built-in type, else the type of the
// node's current value (for subtypes such as enumerations or
// UtcTime). A v that does not fit that type (a fraction for an integer,
// a number outside its range, a string for a number, a number for a bool
// other than 0 or 1) is an error wrapping collector.ErrValueType, and
// nothing is written. A write the server refuses is an error naming its
// status code (BadNotWritable, BadUserAccessDenied, ...), which it wraps
// as a ua.StatusCode; BadTypeMismatch and BadOutOfRange also wrap
// collector.ErrValueType.
//
// Write is safe to call from any goroutine while the collector polls: the
// gopcua client takes concurrent requests, and the driver holds its
// connection lock so that a reconnect waits for the write. It does not
// connect: while the driver is not connected it returns an error wrapping
// ErrNotConnected.
func (d *Driver) Write(ctx context.Context, tag string, v telemetry.Value) error {
	if err := d.write(ctx, tag, v); err != nil {
		return fmt.Errorf("write %s: %w", tag, err)
	}
	return nil
}

func (d *Driver) write(ctx context.Context, name string, v telemetry.Value) error {
	d.cmu.RLock()
	defer d.cmu.RUnlock()
	t, c, err := d.lookup(name)
	if err != nil {
		return err
	}
	typ, err := d.nodeType(ctx, c, t)
	if err != nil {
		return err
	}
	variant, err := toVariant(v, typ)
	if err != nil {
		return err
	}
	resp, err := c.Write(ctx, &ua.WriteRequest{NodesToWrite: []*ua.WriteValue{{
		NodeID:      t.id,
		AttributeID: ua.AttributeIDValue,
		Value:       &ua.DataValue{EncodingMask: ua.DataValueValue, Value: variant},
	}}})
	if err != nil {
		return refused(err)
	}
	if sr := resp.ResponseHeader.ServiceResult; sr != ua.StatusOK {
		return refused(sr)
	}
	if len(resp.Results) != 1 {
		return fmt.Errorf("the server answered %d results for one node", len(resp.Results))
	}
	if code := resp.Results[0]; code != ua.StatusOK && Quality(code).Class() != telemetry.Good {
		return refused(code)
	}
	return nil
}

// refused words a Bad status of a Write.
func refused(err error) error {
	var code ua.StatusCode
	if !errors.As(err, &code) {
		return err
	}
	if code == ua.StatusBadTypeMismatch || code == ua.StatusBadOutOfRange {
		return fmt.Errorf("the server refused the value: %w (%w)", code, collector.ErrValueType)
	}
	return fmt.Errorf("the server refused the write: %w", code)
}

// ReadTag reads one tag's node now, outside the poll schedule, and
// converts it as Read does (source timestamp, status code to quality). It
// implements collector.TagReader. Like Write it is safe to call from any
// goroutine while the collector polls, does not connect, and returns an
// error wrapping ErrNotConnected while the driver is not connected. A
// value the server refuses to read (a Bad status) or that does not
// convert gives a Bad point and no error.
func (d *Driver) ReadTag(ctx context.Context, name string) (telemetry.Point, error) {
	p, err := d.readTag(ctx, name)
	if err != nil {
		return p, fmt.Errorf("read %s: %w", name, err)
	}
	return p, nil
}

func (d *Driver) readTag(ctx context.Context, name string) (telemetry.Point, error) {
	d.cmu.RLock()
	defer d.cmu.RUnlock()
	t, c, err := d.lookup(name)
	if err != nil {
		p := telemetry.Point{Tag: name, Quality: telemetry.Bad | telemetry.ReasonNoConnection, Time: time.Now()}
		if t != nil {
			p.Unit = t.unit
		}
		return p, err
	}
	resp, err := c.Read(ctx, &ua.ReadRequest{
		TimestampsToReturn: ua.TimestampsToReturnBoth,
		NodesToRead:        []*ua.ReadValueID{{NodeID: t.id, AttributeID: ua.AttributeIDValue}},
	})
	now := time.Now()
	p := telemetry.Point{Tag: t.name, Unit: t.unit, Time: now, Quality: telemetry.Bad | telemetry.ReasonNoConnection}
	if err != nil {
		return p, err
	}
	if sr := resp.ResponseHeader.ServiceResult; sr != ua.StatusOK {
		return p, sr
	}
	if len(resp.Results) != 1 {
		return p, fmt.Errorf("the server answered %d results for one node", len(resp.Results))
	}
	p, why := toPoint(t, resp.Results[0], now)
	if why != "" {
		d.log.Warn("value not converted", "tag", t.name, "node", t.node.Text, "reason", why)
	}
	return p, nil
}

// lookup finds a tag and the current client; d.cmu is held (read).
func (d *Driver) lookup(name string) (*tag, *opcua.Client, error) {
	at, ok := d.byName[name]
	if !ok {
		return nil, nil, fmt.Errorf("no tag %q on this device", name)
	}
	t := &d.groups[at.group].tags[at.tag]
	if d.client == nil || d.client.State() != opcua.Connected {
		return t, nil, fmt.Errorf("%s: %w (the collector reconnects with backoff)", d.cfg.URL, ErrNotConnected)
	}
	if t.id == nil {
		return t, nil, fmt.Errorf("node %s: %s", t.node.Text, t.why)
	}
	return t, d.client, nil
}

// nodeType returns the built-in type a write to t's node must have: its
// DataType attribute when that is a built-in type (i=1..i=25), else the
// type of its current value.
func (d *Driver) nodeType(ctx context.Context, c *opcua.Client, t *tag) (ua.TypeID, error) {
	resp, err := c.Read(ctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{
		{NodeID: t.id, AttributeID: ua.AttributeIDDataType},
		{NodeID: t.id, AttributeID: ua.AttributeIDValue},
	}})
	if err != nil {
		return 0, fmt.Errorf("read the node's type: %w", err)
	}
	if sr := resp.ResponseHeader.ServiceResult; sr != ua.StatusOK {
		return 0, fmt.Errorf("read the node's type: %w", sr)
	}
	if len(resp.Results) != 2 {
		return 0, fmt.Errorf("read the node's type: %d results for 2", len(resp.Results))
	}
	if dt := resp.Results[0]; dt.Status == ua.StatusOK && dt.Value != nil {
		if id, ok := dt.Value.Value().(*ua.NodeID); ok && id.Namespace() == 0 && id.IntID() >= uint32(ua.TypeIDBoolean) && id.IntID() <= uint32(ua.TypeIDDiagnosticInfo) {
			return ua.TypeID(id.IntID()), nil
		}
	}
	if cur := resp.Results[1]; cur.Value != nil && cur.Value.Type() != ua.TypeIDNull {
		if cur.Value.Has(ua.VariantArrayValues) {
			return 0, fmt.Errorf("the node holds an array of %s, which fieldgate does not write (%w)", typeName(cur.Value.Type()), collector.ErrValueType)
		}
		return cur.Value.Type(), nil
	}
	if s := resp.Results[0].Status; s != ua.StatusOK {
		return 0, fmt.Errorf("read the node's type: %w", s)
	}
	return 0, fmt.Errorf("the node's data type is not a built-in type and it has no value to take the type from (%w)", collector.ErrValueType)
}

// toVariant converts v to a variant of the built-in type typ, or fails
// with an error wrapping collector.ErrValueType.
func toVariant(v telemetry.Value, typ ua.TypeID) (*ua.Variant, error) {
	bad := func(why string) error {
		return fmt.Errorf("cannot write %s %v to a node of type %s: %s (%w)", v.Kind(), v, typeName(typ), why, collector.ErrValueType)
	}
	num := v.Kind() == telemetry.KindInt || v.Kind() == telemetry.KindUint || v.Kind() == telemetry.KindFloat
	switch typ {
	case ua.TypeIDBoolean:
		switch {
		case v.Kind() == telemetry.KindBool:
			return ua.MustVariant(v.AsBool()), nil
		case num && (v.AsFloat() == 0 || v.AsFloat() == 1):
			return ua.MustVariant(v.AsFloat() == 1), nil
		}
		return nil, bad("use true, false, 0 or 1")
	case ua.TypeIDSByte, ua.TypeIDInt16, ua.TypeIDInt32, ua.TypeIDInt64:
		if !num {
			return nil, bad("a number is needed")
		}
		i, err := toInt(v)
		if err != nil {
			return nil, bad(err.Error())
		}
		lo, hi := intRange(typ)
		if i < lo || i > hi {
			return nil, bad(fmt.Sprintf("outside %d..%d", lo, hi))
		}
		switch typ {
		case ua.TypeIDSByte:
			return ua.MustVariant(int8(i)), nil
		case ua.TypeIDInt16:
			return ua.MustVariant(int16(i)), nil
		case ua.TypeIDInt32:
			return ua.MustVariant(int32(i)), nil
		}
		return ua.MustVariant(i), nil
	case ua.TypeIDByte, ua.TypeIDUint16, ua.TypeIDUint32, ua.TypeIDUint64:
		if !num {
			return nil, bad("a number is needed")
		}
		u, err := toUint(v)
		if err != nil {
			return nil, bad(err.Error())
		}
		hi := uintMax(typ)
		if u > hi {
			return nil, bad(fmt.Sprintf("outside 0..%d", hi))
		}
		switch typ {
		case ua.TypeIDByte:
			return ua.MustVariant(uint8(u)), nil
		case ua.TypeIDUint16:
			return ua.MustVariant(uint16(u)), nil
		case ua.TypeIDUint32:
			return ua.MustVariant(uint32(u)), nil
		}
		return ua.MustVariant(u), nil
	case ua.TypeIDFloat:
		if !num {
			return nil, bad("a number is needed")
		}
		f := v.AsFloat()
		if math.Abs(f) > math.MaxFloat32 {
			return nil, bad("outside the range of a 32-bit float")
		}
		return ua.MustVariant(float32(f)), nil
	case ua.TypeIDDouble:
		if !num {
			return nil, bad("a number is needed")
		}
		return ua.MustVariant(v.AsFloat()), nil
	case ua.TypeIDString:
		if v.Kind() != telemetry.KindString {
			return nil, bad("a string is needed")
		}
		return ua.MustVariant(v.AsString()), nil
	}
	return nil, bad("fieldgate writes Boolean, integer, Float, Double and String nodes only")
}

// toInt returns v as an int64: integers as they are, floats only without
// a fraction.
func toInt(v telemetry.Value) (int64, error) {
	switch v.Kind() {
	case telemetry.KindInt:
		return v.AsInt(), nil
	case telemetry.KindUint:
		if v.AsUint() > math.MaxInt64 {
			return 0, errors.New("too large")
		}
		return int64(v.AsUint()), nil
	}
	f := v.AsFloat()
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return 0, errors.New("not a finite number")
	case f != math.Trunc(f):
		return 0, errors.New("an integer type takes no fraction")
	case f < -(1<<63) || f >= 1<<63:
		return 0, errors.New("too large")
	}
	return int64(f), nil
}

// toUint returns v as a uint64: non-negative integers, floats only
// without a fraction.
func toUint(v telemetry.Value) (uint64, error) {
	switch v.Kind() {
	case telemetry.KindUint:
		return v.AsUint(), nil
	case telemetry.KindInt:
		if v.AsInt() < 0 {
			return 0, errors.New("an unsigned type takes no negative number")
		}
		return uint64(v.AsInt()), nil
	}
	f := v.AsFloat()
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return 0, errors.New("not a finite number")
	case f != math.Trunc(f):
		return 0, errors.New("an integer type takes no fraction")
	case f < 0:
		return 0, errors.New("an unsigned type takes no negative number")
	case f >= 1<<64:
		return 0, errors.New("too large")
	}
	return uint64(f), nil
}

func intRange(t ua.TypeID) (lo, hi int64) {
	switch t {
	case ua.TypeIDSByte:
		return math.MinInt8, math.MaxInt8
	case ua.TypeIDInt16:
		return math.MinInt16, math.MaxInt16
	case ua.TypeIDInt32:
		return math.MinInt32, math.MaxInt32
	}
	return math.MinInt64, math.MaxInt64
}

func uintMax(t ua.TypeID) uint64 {
	switch t {
	case ua.TypeIDByte:
		return math.MaxUint8
	case ua.TypeIDUint16:
		return math.MaxUint16
	case ua.TypeIDUint32:
		return math.MaxUint32
	}
	return math.MaxUint64
}

// typeName is a built-in type's name as OPC UA writes it (UInt16, not
// Uint16).
func typeName(t ua.TypeID) string {
	names := [...]string{"Null", "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
		"Float", "Double", "String", "DateTime", "Guid", "ByteString", "XmlElement", "NodeId", "ExpandedNodeId",
		"StatusCode", "QualifiedName", "LocalizedText", "ExtensionObject", "DataValue", "Variant", "DiagnosticInfo"}
	if int(t) < len(names) {
		return names[t]
	}
	return fmt.Sprintf("type %d", t)
}
