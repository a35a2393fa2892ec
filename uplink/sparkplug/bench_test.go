package sparkplug

import (
	"fmt"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
)

// record100 is one device's poll of 100 float tags.
func record100() *telemetry.Record {
	pts := make([]telemetry.Point, 100)
	for i := range pts {
		pts[i] = telemetry.Point{Tag: fmt.Sprintf("tag_%03d", i), Time: t0, Value: telemetry.Float(float64(i) * 1.25), Unit: "degC"}
	}
	return &telemetry.Record{Seq: 1, Batch: telemetry.Batch{Device: "press-1", Points: pts}}
}

// BenchmarkPayload100Tags compares bytes and CPU per point of the JSON and
// Sparkplug B payloads for one device with 100 tags:
// go test -run=NONE -bench=Payload100Tags -benchmem ./uplink/sparkplug
func BenchmarkPayload100Tags(b *testing.B) {
	r := record100()
	n := len(r.Batch.Points)
	run := func(b *testing.B, enc func(dst []byte) []byte) {
		buf := enc(nil)
		size := len(buf)
		b.ReportAllocs()
		b.SetBytes(int64(size))
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			buf = enc(buf[:0])
		}
		b.ReportMetric(float64(size)/float64(n), "bytes/point")
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*n), "ns/point")
	}
	b.Run("json", func(b *testing.B) {
		run(b, func(dst []byte) []byte { return jsonenc.Append(dst, "gw1", r, false) })
	})
	b.Run("sparkplug", func(b *testing.B) {
		f, _ := New(Config{Group: "g", Node: "gw1"}, nil)
		run(b, func(dst []byte) []byte { out, _ := f.Encode(dst, "gw1", r, false); return out })
	})
}

// TestEncodeDoesNotAllocate: a DDATA payload of a known device is encoded
// into a reused buffer without allocating.
func TestEncodeDoesNotAllocate(t *testing.T) {
	r := record100()
	f, err := New(Config{Group: "g", Node: "gw1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := f.Encode(nil, "gw1", r, false) // the first encode learns the device's aliases
	allocs := testing.AllocsPerRun(100, func() { buf, _ = f.Encode(buf[:0], "gw1", r, false) })
	if allocs != 0 {
		t.Fatalf("Encode allocated %.1f times per call, want 0", allocs)
	}
}
