package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
)

// BenchmarkPublish measures records published and acknowledged per second
// through an embedded broker on loopback: one op is one 120-point record
// encoded, published with QoS 1, PUBACKed and acked to the source.
func BenchmarkPublish(b *testing.B) {
	for _, window := range []int{1, 100} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			rec := newRecorder()
			rec.quiet = true
			br := startBroker(b, "127.0.0.1:0", rec)
			src := newMemSource()
			batch := benchBatch(120)
			for range b.N {
				src.Append(batch)
			}
			r := telemetry.Record{Seq: 1, Batch: batch}
			payload, _ := jsonenc.Encoder{}.Encode(nil, "gw1", &r, false)
			b.SetBytes(int64(len(payload)))
			cfg := testConfig(br.url())
			cfg.Window = window
			u, err := New(cfg, src, jsonenc.Encoder{}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ReportAllocs()
			b.ResetTimer()
			go func() { done <- u.Run(ctx) }()
			checkFor(b, 5*time.Minute, 100*time.Microsecond, func() error {
				if src.Len() > 0 {
					return errNotYet
				}
				return nil
			})
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(b.N*120)/b.Elapsed().Seconds(), "points/s")
		})
	}
}

func benchBatch(n int) telemetry.Batch {
	bt := telemetry.Batch{Device: "press-001", Points: make([]telemetry.Point, n)}
	for i := range bt.Points {
		bt.Points[i] = telemetry.Point{Tag: fmt.Sprintf("tag_%03d", i), Time: testT0, Value: telemetry.Float(float64(i) * 1.37), Unit: "bar"}
	}
	return bt
}
