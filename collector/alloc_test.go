package collector

import (
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// TestFilterDoesNotAllocate: report-by-exception runs on every poll of every
// device, so it must not allocate (a test, not a timing).
func TestFilterDoesNotAllocate(t *testing.T) {
	const n = 120
	tags := make([]TagInfo, n)
	src := make([]telemetry.Point, n)
	for i := range tags {
		tags[i] = TagInfo{Name: "t", Filter: Filter{OnChange: i%4 != 0, Deadband: 0.5, Percent: i%2 == 0, MaxSilence: time.Hour}}
		src[i] = telemetry.Point{Tag: "t", Value: telemetry.Float(float64(i))}
	}
	e := newExceptions(tags)
	now := time.Now()
	pts := make([]telemetry.Point, n)
	iter := 0
	allocs := testing.AllocsPerRun(200, func() {
		copy(pts, src)
		iter++
		for i := 0; i < n; i += 3 {
			pts[i].Value = telemetry.Float(float64(i) + 100*float64(iter%2))
		}
		pts[5].Quality = telemetry.Bad | telemetry.ReasonTimeout
		e.apply(pts, now.Add(time.Duration(iter)*time.Second))
	})
	if allocs != 0 {
		t.Fatalf("filtering a 120-point batch allocated %.1f times, want 0", allocs)
	}
}
