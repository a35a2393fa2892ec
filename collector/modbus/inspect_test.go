package modbus_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/telemetry"
)

func TestInspectReportsEveryRequest(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{Holding: 100})
	s.SetHolding(0, 0x4142, 7)
	s.SetCoil(2, true)
	d := newDriver(t, modbus.Config{URL: s.URL(), Tags: []modbus.Tag{
		{Name: "s", Address: 40001, Type: modbus.TypeString, Length: 1},
		{Name: "n", Address: 40002, Type: modbus.TypeUint16},
		{Name: "past", Address: 40201, Type: modbus.TypeUint16},
		{Name: "c", Address: 3, Type: modbus.TypeBool, Poll: 100 * time.Millisecond},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ins, err := d.Inspect(ctx) // no Connect needed
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != d.Plan().Requests() {
		t.Fatalf("%d inspections, plan has %d requests", len(ins), d.Plan().Requests())
	}
	byTag := map[string]modbus.Inspection{}
	for _, in := range ins {
		if !slices.Equal(in.Request.Tags, d.Plan().Groups[in.Group].Requests[slices.IndexFunc(d.Plan().Groups[in.Group].Requests, func(r modbus.Request) bool {
			return r.Start == in.Request.Start && r.Table == in.Request.Table
		})].Tags) || len(in.Points) != len(in.Request.Tags) {
			t.Errorf("inspection %+v does not match the plan", in)
		}
		byTag[in.Request.Tags[0]] = in
	}
	c := byTag["c"]
	if c.Group != 0 || c.Err != nil || string(c.Data) != "\x01" || !c.Points[0].Value.AsBool() || c.Quality() != telemetry.Good {
		t.Errorf("coil: %+v", c)
	}
	h := byTag["s"]
	if h.Err != nil || string(h.Data) != "AB\x00\x07" || h.Points[0].Value.AsString() != "AB" || h.Points[1].Value.AsUint() != 7 {
		t.Errorf("holding: %+v", h)
	}
	// The frame is the whole MBAP answer: header, function 3, byte count, data.
	if len(h.Frame) != 7+2+4 || h.Frame[7] != 3 || h.Frame[8] != 4 {
		t.Errorf("frame % x", h.Frame)
	}
	p := byTag["past"]
	var ex *modbus.ExceptionError
	if !errors.As(p.Err, &ex) || ex.Code != 2 || p.Data != nil || p.Points[0].Quality != telemetry.Bad|telemetry.ReasonException || p.Quality() != p.Points[0].Quality {
		t.Errorf("past: %+v", p)
	}
}

func TestScanFindsRTUUnits(t *testing.T) {
	bus := sim.NewRTUBus()
	for _, u := range []uint8{1, 2, 5} {
		bus.Add(u, sim.NewModbus(sim.ModbusOptions{Holding: 100}))
	}
	if err := bus.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := modbus.Scan(ctx, bus.URL(), []uint8{1, 2, 3, 4, 5, 6}, 100*time.Millisecond, modbus.Request{})
	if err != nil {
		t.Fatal(err)
	}
	var units []uint8
	for _, r := range res {
		units = append(units, r.Unit)
		if r.Err != nil || string(r.Data) != "\x00\x00" {
			t.Errorf("unit %d: %+v", r.Unit, r)
		}
	}
	if !slices.Equal(units, []uint8{1, 2, 5}) {
		t.Errorf("found %v, want [1 2 5]", units)
	}
	// A probe the devices refuse still finds them.
	res, err = modbus.Scan(ctx, bus.URL(), []uint8{2, 3}, 100*time.Millisecond, modbus.Request{Table: modbus.HoldingRegister, Start: 500, Count: 1})
	var ex *modbus.ExceptionError
	if err != nil || len(res) != 1 || res[0].Unit != 2 || !errors.As(res[0].Err, &ex) {
		t.Errorf("scan with a refused probe: %+v, %v", res, err)
	}
}

func TestScanTCPGatewayIgnoresGatewayExceptions(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{Units: []uint8{3, 4}}) // 0B for the others
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := modbus.Scan(ctx, s.URL(), []uint8{1, 2, 3, 4, 5}, 200*time.Millisecond, modbus.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Unit != 3 || res[1].Unit != 4 {
		t.Errorf("found %+v, want units 3 and 4", res)
	}
	if _, err := modbus.Scan(ctx, "udp://x", []uint8{1}, time.Second, modbus.Request{}); err == nil {
		t.Error("Scan accepted a bad URL")
	}
}
