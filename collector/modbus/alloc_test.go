package modbus_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/sim"
	"github.com/fieldgate/fieldgate/telemetry"
)

// TestReadDoesNotAllocatePerReading: a poll allocates per request (the
// frame, the answer), never per tag, so 120 tags in one request cost what
// 10 do (a test of the allocation count, not a timing; the in-process
// simulator's own allocations count too, and do not depend on the tags).
func TestReadDoesNotAllocatePerReading(t *testing.T) {
	s := startSim(t, sim.ModbusOptions{})
	s.Tick()
	ctx := context.Background()
	allocs := map[int]float64{}
	for _, n := range []int{10, 120} {
		var tags []modbus.Tag
		for i := range uint16(n) {
			typ := modbus.TypeUint16
			if i%10 == 9 {
				typ = modbus.TypeInt16
			}
			tags = append(tags, modbus.Tag{Name: fmt.Sprintf("r%03d", i), Table: modbus.HoldingRegister, Offset: off(i), Type: typ})
		}
		d := newDriver(t, modbus.Config{URL: s.URL(), Tags: tags})
		if r := d.Plan().Requests(); r != 1 {
			t.Fatalf("%d tags: %d requests, want 1", n, r)
		}
		connect(t, d)
		pts := make([]telemetry.Point, 0, n)
		allocs[n] = testing.AllocsPerRun(200, func() {
			var err error
			if pts, err = d.Read(ctx, 0, pts[:0]); err != nil {
				t.Fatal(err)
			}
		})
		if len(pts) != n || !pts[n-1].Quality.IsGood() {
			t.Fatalf("%d tags: read %d points, last %v", n, len(pts), pts[len(pts)-1])
		}
	}
	t.Logf("allocations per poll: 10 tags %.1f, 120 tags %.1f", allocs[10], allocs[120])
	if allocs[120] > allocs[10] {
		t.Errorf("a poll of 120 tags allocated %.1f times, of 10 tags %.1f: reading allocates per tag", allocs[120], allocs[10])
	}
}
