package modbus

import (
	"errors"
	"fmt"
	"math"

	"github.com/fieldgate/fieldgate/collector"
)

// resolve checks a configured tag and works out what it reads.
func resolve(ct *Tag, lim limits) (tag, error) {
	t := tag{name: ct.Name, unit: ct.Unit, typ: ct.Type, order: ct.Order, bit: -1}
	switch {
	case ct.Address != 0:
		tb, off, err := ParseModicon(ct.Address)
		if err != nil {
			return t, err
		}
		t.table, t.offset = tb, off
	case ct.Table != TableNone && ct.Offset != nil:
		t.table, t.offset = ct.Table, *ct.Offset
	default:
		return t, errors.New("set address, or table and offset")
	}
	if t.order == OrderNone {
		t.order = ABCD
	}
	limit := lim.maxRegisters
	if t.table.IsBit() {
		limit = lim.maxBits
		if t.typ == TypeNone {
			t.typ = TypeBool
		}
		if t.typ != TypeBool {
			return t, fmt.Errorf("type %s cannot be read from %s; use bool", t.typ, t.table)
		}
		if ct.Bit != nil {
			return t, fmt.Errorf("bit applies to registers, not to %s", t.table)
		}
		t.count = 1
	} else {
		switch t.typ {
		case TypeNone:
			t.typ = TypeUint16
			t.count = 1
		case TypeBool:
			t.count = 1
			if ct.Bit != nil {
				if *ct.Bit > 15 {
					return t, fmt.Errorf("bit %d: must be 0..15", *ct.Bit)
				}
				t.bit = int8(*ct.Bit)
			}
		case TypeString:
			if ct.Length == 0 {
				return t, errors.New("type string needs length (registers)")
			}
			t.count = ct.Length
		default:
			t.count = t.typ.Registers()
		}
	}
	if int(t.count) > limit {
		return t, fmt.Errorf("%d %s exceed the %d a request may read", t.count, t.table, limit)
	}
	if t.end() > 1<<16 {
		return t, fmt.Errorf("offset %d + %d runs past the end of %s", t.offset, t.count, t.table)
	}
	if (ct.Scale != nil || ct.ValueOffset != nil) && t.typ != TypeBool && t.typ != TypeString {
		t.scaled, t.scale = true, 1
		if ct.Scale != nil {
			t.scale = *ct.Scale
		}
		if inv := 1 / t.scale; t.scale != 0 && t.scale < 1 && inv == math.Round(inv) && inv <= 1e15 {
			t.div = inv
		}
		if ct.ValueOffset != nil {
			t.add = *ct.ValueOffset
		}
	}
	return t, nil
}

// info is what the collector knows of the tag.
func (t *tag) info() collector.TagInfo {
	return collector.TagInfo{Name: t.name, Unit: t.unit}
}
