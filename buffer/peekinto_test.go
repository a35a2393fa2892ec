package buffer

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/telemetry"
)

// TestPeekIntoReusesRecords: PeekInto returns what Peek returns, and once
// the caller's slice has grown, peeking 100 records of 120 readings again
// allocates nothing per record (the replay path; Peek made a fresh Points
// array of every record).
func TestPeekIntoReusesRecords(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "buffer.db"), Options{}, nil)
	now := time.Now()
	for i := range 100 {
		b := &telemetry.Batch{Device: fmt.Sprintf("d%03d", i%10), Points: make([]telemetry.Point, 120)}
		for j := range b.Points {
			b.Points[j] = telemetry.Point{Tag: fmt.Sprintf("r%03d", j), Value: telemetry.Uint(uint64(i * j)), Time: now}
		}
		if err := q.Append(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	want, err := q.Peek(0, 100)
	if err != nil || len(want) != 100 {
		t.Fatalf("Peek: %d records, %v", len(want), err)
	}
	var dst []telemetry.Record
	for _, after := range []uint64{0, 50, 0} {
		dst, err = q.PeekInto(dst, after, 100)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want[after:], dst); diff != "" {
			t.Fatalf("PeekInto after %d differs from Peek (-want +got):\n%s", after, diff)
		}
	}
	allocs := testing.AllocsPerRun(20, func() {
		dst, err = q.PeekInto(dst, 0, 100)
	})
	if err != nil || len(dst) != 100 {
		t.Fatalf("PeekInto: %d records, %v", len(dst), err)
	}
	t.Logf("PeekInto of 100 records: %.0f allocations", allocs)
	// bbolt's read transaction allocates a few objects; nothing per record.
	if allocs > 20 {
		t.Errorf("PeekInto of 100 records allocates %.0f times, want no allocation per record", allocs)
	}
}
