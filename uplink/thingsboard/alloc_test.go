package thingsboard

import (
	"fmt"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// TestAppendTelemetryDoesNotAllocate: a device's telemetry message is
// written into a reused buffer without allocating.
func TestAppendTelemetryDoesNotAllocate(t *testing.T) {
	at := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	pts := make([]telemetry.Point, 120)
	for i := range pts {
		pts[i] = telemetry.Point{Tag: fmt.Sprintf("r%03d", i), Time: at, Value: telemetry.Float(float64(i) * 1.25), Unit: "bar"}
	}
	b := &telemetry.Batch{Device: "press-1", Points: pts}
	buf := AppendTelemetry(nil, b)
	allocs := testing.AllocsPerRun(100, func() { buf = AppendTelemetry(buf[:0], b) })
	if allocs != 0 {
		t.Fatalf("AppendTelemetry allocated %.1f times per call, want 0", allocs)
	}
}
