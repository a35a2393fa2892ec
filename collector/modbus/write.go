package modbus

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Write sets a tag on the device: a coil with function 5 (or 15 with
// WithMultipleWrites), a one-register value of a holding register with
// function 6 (or 16), longer values and strings with function 16, all in
// the tag's type and byte order. A bool with bit on a holding register reads
// the register (function 3), changes the bit and writes it back (function
// 6), holding the link so that no other request of this gateway comes in
// between. Scale and value_offset are undone (raw = (v - value_offset) /
// scale, rounded for integer types); a value outside the type's range is an
// error, and nothing is written. Discrete inputs and input registers are
// read-only.
//
// Write is safe to call while the collector polls the device, and works
// whether or not the driver is connected (it opens the link for the write
// when needed). It honours ctx and the device's timeout; the error of a
// refused write wraps an *ExceptionError.
func (d *Driver) Write(ctx context.Context, name string, v telemetry.Value) error {
	if err := d.write(ctx, name, v); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func (d *Driver) write(ctx context.Context, name string, v telemetry.Value) error {
	i, ok := d.byName[name]
	if !ok {
		return fmt.Errorf("no tag %q on this device", name)
	}
	t := d.tags[i]
	switch t.table {
	case DiscreteInput:
		return fmt.Errorf("%s is a discrete input, which Modbus cannot write; only coils and holding registers are writable", modiconRange(t.table, t.offset, t.offset))
	case InputRegister:
		return fmt.Errorf("%s is an input register, which Modbus cannot write; only coils and holding registers are writable", modiconRange(t.table, t.offset, t.offset))
	}
	d.link.use()
	defer func() { _ = d.link.unuse() }()
	if t.table == Coil {
		on, err := boolOf(v)
		if err != nil {
			return err
		}
		if d.multi {
			b := byte(0)
			if on {
				b = 1
			}
			return d.writeMultiple(ctx, 15, t.offset, 1, []byte{b})
		}
		val := uint16(0)
		if on {
			val = 0xFF00
		}
		return d.writeSingle(ctx, 5, t.offset, val)
	}
	if t.typ == TypeBool && t.bit >= 0 {
		on, err := boolOf(v)
		if err != nil {
			return err
		}
		return d.writeBit(ctx, t, on)
	}
	regs, err := d.encode(t, v)
	if err != nil {
		return err
	}
	if len(regs) == 2 && !d.multi {
		return d.writeSingle(ctx, 6, t.offset, binary.BigEndian.Uint16(regs))
	}
	return d.writeMultiple(ctx, 16, t.offset, uint16(len(regs)/2), regs)
}

// encode returns the registers that hold v for tag t, in wire order.
func (d *Driver) encode(t *tag, v telemetry.Value) ([]byte, error) {
	switch t.typ {
	case TypeBool:
		on, err := boolOf(v)
		if err != nil {
			return nil, err
		}
		return AppendRegisters(nil, TypeBool, t.order, 1, telemetry.Bool(on))
	case TypeString:
		if v.Kind() != telemetry.KindString {
			return nil, fmt.Errorf("%v is not a string", v)
		}
		return AppendRegisters(nil, TypeString, t.order, t.count, v)
	}
	switch v.Kind() {
	case telemetry.KindInt, telemetry.KindUint, telemetry.KindFloat:
	case telemetry.KindBool:
		if v.AsBool() {
			v = telemetry.Int(1)
		} else {
			v = telemetry.Int(0)
		}
	default:
		return nil, fmt.Errorf("%v is not a number", v)
	}
	if t.scaled {
		f := v.AsFloat() - t.add
		if t.div != 0 {
			f *= t.div
		} else {
			f /= t.scale
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%v gives no raw value with scale %v and value_offset %v", v, t.scale, t.add)
		}
		if t.typ != TypeFloat32 && t.typ != TypeFloat64 {
			f = math.Round(f)
		}
		v = telemetry.Float(f)
	}
	return AppendRegisters(nil, t.typ, t.order, t.count, v)
}

// boolOf accepts a bool, or a number 0 or 1.
func boolOf(v telemetry.Value) (bool, error) {
	switch v.Kind() {
	case telemetry.KindBool:
		return v.AsBool(), nil
	case telemetry.KindInt, telemetry.KindUint, telemetry.KindFloat:
		switch v.AsFloat() {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
	}
	return false, fmt.Errorf("%v is not a bool (true, false, 0 or 1)", v)
}

// writeSingle writes one coil (function 5) or register (function 6) and
// checks the echo.
func (d *Driver) writeSingle(ctx context.Context, fc byte, addr, val uint16) error {
	var pdu [4]byte
	binary.BigEndian.PutUint16(pdu[0:], addr)
	binary.BigEndian.PutUint16(pdu[2:], val)
	a, err := d.transact(ctx, fc, pdu[:])
	if err != nil {
		return err
	}
	if string(a.data) != string(pdu[:]) {
		return badResponse("echo % x, want % x", a.data, pdu)
	}
	return nil
}

// writeMultiple writes n coils (function 15, values packed) or registers
// (function 16) from addr and checks the echo of address and quantity.
func (d *Driver) writeMultiple(ctx context.Context, fc byte, addr, n uint16, values []byte) error {
	pdu := make([]byte, 5, 5+len(values))
	binary.BigEndian.PutUint16(pdu[0:], addr)
	binary.BigEndian.PutUint16(pdu[2:], n)
	pdu[4] = byte(len(values))
	pdu = append(pdu, values...)
	a, err := d.transact(ctx, fc, pdu)
	if err != nil {
		return err
	}
	if string(a.data) != string(pdu[:4]) {
		return badResponse("echo % x, want % x", a.data, pdu[:4])
	}
	return nil
}

// writeBit sets one bit of a holding register: read, change, write back,
// in one turn on the link.
func (d *Driver) writeBit(ctx context.Context, t *tag, on bool) error {
	if err := d.waitPause(ctx); err != nil {
		return err
	}
	if err := d.link.lock(ctx); err != nil {
		return err
	}
	defer d.link.unlock()
	var pdu [5]byte
	binary.BigEndian.PutUint16(pdu[0:], t.offset)
	binary.BigEndian.PutUint16(pdu[2:], 1)
	a, err := d.transactLocked(ctx, 3, pdu[:4])
	if err != nil {
		return fmt.Errorf("read register for bit %d: %w", t.bit, err)
	}
	if len(a.data) != 3 || a.data[0] != 2 {
		return badResponse("read of one register returned % x", a.data)
	}
	reg := binary.BigEndian.Uint16(a.data[1:])
	if on {
		reg |= 1 << uint(t.bit)
	} else {
		reg &^= 1 << uint(t.bit)
	}
	if d.pause > 0 {
		if err := sleep(ctx, d.pause); err != nil {
			return err
		}
	}
	fc, req := byte(6), pdu[:4]
	binary.BigEndian.PutUint16(pdu[2:], reg)
	if d.multi {
		fc, req = 16, []byte{pdu[0], pdu[1], 0, 1, 2, byte(reg >> 8), byte(reg)}
	}
	a, err = d.transactLocked(ctx, fc, req)
	if err != nil {
		return err
	}
	if string(a.data) != string(req[:4]) {
		return badResponse("echo % x, want % x", a.data, req[:4])
	}
	return nil
}
