package modbus_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/telemetry"
)

func write(t *testing.T, d *modbus.Driver, tag string, v telemetry.Value) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.Write(ctx, tag, v)
}

// writeTags are tags of every writable kind; writeCases what is written to
// them and read back.
func writeTags() ([]modbus.Tag, []want) {
	var tags []modbus.Tag
	var wants []want
	next := uint16(0)
	for _, ty := range types {
		for _, o := range orders {
			name := ty.typ.String() + "_" + o.String()
			tags = append(tags, modbus.Tag{Name: name, Table: modbus.HoldingRegister, Offset: off(next), Type: ty.typ, Order: o})
			wants = append(wants, want{name, ty.v, telemetry.Good})
			next += ty.typ.Registers()
		}
	}
	scale, add := 0.1, -40.0
	tags = append(tags,
		modbus.Tag{Name: "str", Address: 40501, Type: modbus.TypeString, Length: 4},
		modbus.Tag{Name: "str_badc", Address: 40511, Type: modbus.TypeString, Length: 3, Order: modbus.BADC},
		modbus.Tag{Name: "bit3", Address: 40521, Type: modbus.TypeBool, Bit: bit(3)},
		modbus.Tag{Name: "bit14", Address: 40521, Type: modbus.TypeBool, Bit: bit(14)},
		modbus.Tag{Name: "flag", Address: 40522, Type: modbus.TypeBool},
		modbus.Tag{Name: "temp", Address: 40523, Type: modbus.TypeInt16, Scale: &scale, ValueOffset: &add},
		modbus.Tag{Name: "ftemp", Address: 40524, Type: modbus.TypeFloat32, Order: modbus.CDAB, Scale: &scale},
		modbus.Tag{Name: "bcd", Address: 40526, Type: modbus.TypeBCD16},
		modbus.Tag{Name: "coil", Address: 11, Type: modbus.TypeBool},
		modbus.Tag{Name: "coil2", Address: 12, Type: modbus.TypeBool},
	)
	wants = append(wants,
		want{"str", telemetry.String("PN-4711"), telemetry.Good},
		want{"str_badc", telemetry.String("AbCde"), telemetry.Good},
		want{"bit3", telemetry.Bool(true), telemetry.Good},
		want{"bit14", telemetry.Bool(true), telemetry.Good},
		want{"flag", telemetry.Bool(true), telemetry.Good},
		want{"temp", telemetry.Float(-12.3), telemetry.Good},
		want{"ftemp", telemetry.Float(float64(float32(1234.5)) * 0.1), telemetry.Good},
		want{"bcd", telemetry.Uint(1234), telemetry.Good},
		want{"coil", telemetry.Bool(true), telemetry.Good},
		want{"coil2", telemetry.Bool(false), telemetry.Good},
	)
	return tags, wants
}

func testWriteRoundTrip(t *testing.T, url string, unit uint8, opts ...modbus.Option) {
	tags, wants := writeTags()
	d, err := modbus.New("w", modbus.Config{URL: url, Unit: unit, Poll: time.Second, Tags: tags}, discard(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	// Write works before Connect (a command may come while the device is
	// down between reconnects): it opens the link for itself.
	for _, w := range wants {
		v := w.v
		switch w.tag {
		case "ftemp":
			v = telemetry.Float(123.45) // raw 1234.5
		case "coil2":
			if err := write(t, d, w.tag, telemetry.Bool(true)); err != nil {
				t.Fatal(err)
			}
		}
		if err := write(t, d, w.tag, v); err != nil {
			t.Fatalf("write %s %v: %v", w.tag, v, err)
		}
	}
	connect(t, d)
	from := time.Now()
	pts, err := read(t, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pts { // ftemp: float32 rounding through scale
		if pts[i].Tag == "ftemp" && math.Abs(pts[i].Value.AsFloat()-wants[i].v.AsFloat()) < 1e-9 {
			pts[i].Value = wants[i].v
		}
	}
	check(t, pts, wants, from, time.Now())
	// Clearing one bit keeps the other.
	if err := write(t, d, "bit14", telemetry.Bool(false)); err != nil {
		t.Fatal(err)
	}
	pts, err = read(t, d, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pts {
		if p.Tag == "bit3" && !p.Value.AsBool() || p.Tag == "bit14" && p.Value.AsBool() {
			t.Errorf("after clearing bit 14: %s = %v", p.Tag, p.Value)
		}
	}
}

func TestWriteRoundTripTCP(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	testWriteRoundTrip(t, s.URL(), 1)
	if got := s.Holding(520, 1)[0]; got != 1<<3 {
		t.Errorf("register 40521 = %016b, want bit 3 only", got)
	}
	if !s.Coil(10) || s.Coil(11) {
		t.Errorf("coils 11, 12 = %v, %v", s.Coil(10), s.Coil(11))
	}
}

func TestWriteRoundTripMultipleFunctions(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	testWriteRoundTrip(t, s.URL(), 1, modbus.WithMultipleWrites())
}

func TestWriteRoundTripRTUOverTCP(t *testing.T) {
	bus, _ := startBus(t, 9)
	testWriteRoundTrip(t, bus.URL(), 9)
}

func TestWriteRoundTripRTUSerial(t *testing.T) {
	a, b := socatPair(t)
	bus := sim.NewRTUBus()
	bus.Add(4, sim.NewModbus(sim.ModbusOptions{}))
	serveSerial(t, bus, b)
	testWriteRoundTrip(t, "rtu://"+a+"?baud=115200", 4)
}

func TestWriteRefuses(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{Holding: 10})
	scale := 0.5
	d := newDriver(t, modbus.Config{URL: s.URL(), Tags: []modbus.Tag{
		{Name: "di", Address: 10001, Type: modbus.TypeBool},
		{Name: "ir", Address: 30001, Type: modbus.TypeUint16},
		{Name: "u16", Address: 40001, Type: modbus.TypeUint16},
		{Name: "i16", Address: 40002, Type: modbus.TypeInt16, Scale: &scale},
		{Name: "str", Address: 40003, Type: modbus.TypeString, Length: 2},
		{Name: "coil", Address: 1, Type: modbus.TypeBool},
		{Name: "far", Table: modbus.HoldingRegister, Offset: off(50), Type: modbus.TypeUint16},
	}})
	for _, c := range []struct {
		tag  string
		v    telemetry.Value
		want string
	}{
		{"di", telemetry.Bool(true), "discrete input"},
		{"ir", telemetry.Uint(1), "input register"},
		{"u16", telemetry.Int(-1), "does not fit"},
		{"u16", telemetry.Uint(70000), "does not fit"},
		{"u16", telemetry.Float(1.5), "whole number"},
		{"i16", telemetry.Float(20000), "does not fit"}, // raw 40000
		{"str", telemetry.String("too long"), "does not fit"},
		{"coil", telemetry.Int(2), "not a bool"},
		{"nope", telemetry.Int(1), "no tag"},
	} {
		err := write(t, d, c.tag, c.v)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("write %s %v = %v, want an error with %q", c.tag, c.v, err, c.want)
		}
	}
	if got := s.Holding(0, 3); got[0] != 0 || got[1] != 0 {
		t.Errorf("refused writes changed registers: %v", got)
	}
	var ex *modbus.ExceptionError
	if err := write(t, d, "far", telemetry.Uint(1)); !errors.As(err, &ex) || ex.Code != 2 {
		t.Errorf("write past the table = %v, want exception 02", err)
	}
	// Scaled int16: raw = value / scale, rounded.
	if err := write(t, d, "i16", telemetry.Float(-10.26)); err != nil {
		t.Fatal(err)
	}
	if got := int16(s.Holding(1, 1)[0]); got != -21 {
		t.Errorf("raw %d, want -21", got)
	}
}
