package modbus

import (
	"errors"
	"fmt"
	"math"

	"github.com/fieldgate/fieldgate/collector"
)

// resolve checks a configured tag and works out what it reads.
func resolve(ct *Tag, lim limits) (tag, error) {
	t := tag{name: ct.Name, unit: ct.Unit, desc: ct.Description, typ: ct.Type, order: ct.Order, bit: -1}
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
	var err error
	if t.clamp, err = newClamp(ct.Clamp, t.typ, t.scaled); err != nil {
		return t, err
	}
	if t.filter, err = filter(ct); err != nil {
		return t, err
	}
	return t, nil
}

// filter turns a tag's deadband, report and max_silence into the
// collector's report-by-exception filter. report: change, or a deadband
// above zero with report unset, reports on change (beyond the deadband, of
// the quality, or after max_silence); otherwise every reading is reported
// and max_silence has nothing to do. report: always with a deadband is a
// contradiction: the config rejects it, and so does New.
func filter(ct *Tag) (collector.Filter, error) {
	switch {
	case ct.Report == ReportAlways && ct.Deadband.Value > 0:
		return collector.Filter{}, errors.New("a deadband needs report: change (report: always sends every reading)")
	case ct.Report == ReportChange, ct.Report == ReportDefault && ct.Deadband.Value > 0:
		return collector.Filter{
			OnChange:   true,
			Deadband:   ct.Deadband.Value,
			Percent:    ct.Deadband.Percent,
			MaxSilence: max(ct.MaxSilence, 0),
		}, nil
	}
	return collector.Filter{}, nil
}

// info is what the collector knows of the tag.
func (t *tag) info() collector.TagInfo {
	return collector.TagInfo{Name: t.name, Unit: t.unit, Filter: t.filter}
}
