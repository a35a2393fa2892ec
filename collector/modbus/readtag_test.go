package modbus_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/telemetry"
)

func readTag(t *testing.T, d *modbus.Driver, tag string) (telemetry.Point, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.ReadTag(ctx, tag)
}

// TestReadTagReadsWhatWriteWrote writes every kind of tag and reads each
// back alone with ReadTag, before Connect: the value Read would report.
func TestReadTagReadsWhatWriteWrote(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	tags, wants := writeTags()
	d := newDriver(t, modbus.Config{URL: s.URL(), Tags: tags})
	for _, w := range wants {
		v := w.v
		if w.tag == "ftemp" {
			v = telemetry.Float(123.45)
		}
		if err := write(t, d, w.tag, v); err != nil {
			t.Fatalf("write %s: %v", w.tag, err)
		}
		p, err := readTag(t, d, w.tag)
		if err != nil {
			t.Fatalf("ReadTag %s: %v", w.tag, err)
		}
		got := p.Value
		if w.tag == "ftemp" && math.Abs(got.AsFloat()-w.v.AsFloat()) < 1e-9 {
			got = w.v
		}
		if p.Tag != w.tag || !got.Equal(w.v) || p.Quality != telemetry.Good || p.Time.IsZero() {
			t.Errorf("ReadTag %s = %+v, want %v Good", w.tag, p, w.v)
		}
	}
}

func TestReadTagErrors(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{Holding: 10})
	d := newDriver(t, modbus.Config{URL: s.URL(), Tags: []modbus.Tag{
		{Name: "ok", Address: 40001, Type: modbus.TypeUint16},
		{Name: "far", Table: modbus.HoldingRegister, Offset: off(50), Type: modbus.TypeUint16},
	}})
	if _, err := readTag(t, d, "nope"); err == nil {
		t.Error("ReadTag of an unknown tag succeeded")
	}
	p, err := readTag(t, d, "far")
	var ex *modbus.ExceptionError
	if !errors.As(err, &ex) || ex.Code != 2 || p.Quality != telemetry.Bad|telemetry.ReasonException {
		t.Errorf("ReadTag past the table = %+v, %v; want exception 02 and a Bad point", p, err)
	}
}

// TestReadTagWhilePolling reads one tag over and over while the collector's
// goroutine polls the same device: every answer is the right one (the
// requests take turns on the link; run with -race).
func TestReadTagWhilePolling(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	s.SetHolding(0, 11, 22, 33)
	d := newDriver(t, modbus.Config{URL: s.URL(), Tags: []modbus.Tag{
		{Name: "a", Address: 40001, Type: modbus.TypeUint16},
		{Name: "b", Address: 40002, Type: modbus.TypeUint16},
		{Name: "c", Address: 40003, Type: modbus.TypeUint16},
	}})
	connect(t, d)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if _, err := d.Read(ctx, 0, nil); err != nil && ctx.Err() == nil {
				t.Errorf("Read: %v", err)
				return
			}
		}
	})
	for i := range 200 {
		tag, want := []string{"a", "b", "c"}[i%3], uint64(11*(i%3+1))
		p, err := readTag(t, d, tag)
		if err != nil || p.Value.AsUint() != want {
			t.Fatalf("ReadTag %s = %v, %v; want %d", tag, p.Value, err, want)
		}
	}
	cancel()
	wg.Wait()
}
