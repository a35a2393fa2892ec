package buffer

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

const benchPoints = 120

// benchBatch is a poll of 120 float registers, as a Modbus device gives.
func benchBatch(device string) *telemetry.Batch {
	now := time.Now()
	b := &telemetry.Batch{Device: device, Points: make([]telemetry.Point, benchPoints)}
	for i := range b.Points {
		b.Points[i] = telemetry.Point{
			Tag:   fmt.Sprintf("reg%03d", i),
			Value: telemetry.Float(float64(i) * 1.5),
			Time:  now,
			Unit:  "bar",
		}
	}
	return b
}

// BenchmarkAppend measures durable appends of 120-point batches: "serial"
// is one appender (one fsync per batch), "parallel" is 8 appenders sharing
// group commits, as 8 devices would.
func BenchmarkAppend(b *testing.B) {
	run := func(b *testing.B, parallel bool) {
		q := openQueue(b, filepath.Join(b.TempDir(), "buffer.db"), Options{MaxBytes: 256 << 20}, nil)
		b.SetBytes(encodedLen(benchBatch("device-001")))
		b.ReportAllocs()
		ctx := context.Background()
		b.ResetTimer()
		if parallel {
			b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0))) // 8 appenders
			b.RunParallel(func(pb *testing.PB) {
				batch := benchBatch("device-par")
				for pb.Next() {
					if err := q.Append(ctx, batch); err != nil {
						b.Error(err)
						return
					}
				}
			})
		} else {
			batch := benchBatch("device-001")
			for range b.N {
				if err := q.Append(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.StopTimer()
		st := q.Stats()
		b.ReportMetric(float64(b.N*benchPoints)/b.Elapsed().Seconds(), "points/s")
		b.ReportMetric(float64(st.Appended)/float64(max(st.Commits, 1)), "batches/commit")
	}
	b.Run("serial", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}

// BenchmarkPeekAck measures the uplink side: Peek 100 records, Ack them.
// One op is one record delivered and deleted.
func BenchmarkPeekAck(b *testing.B) {
	q := openQueue(b, filepath.Join(b.TempDir(), "buffer.db"), Options{MaxBytes: 256 << 20}, nil)
	fill := make([]*telemetry.Batch, 500)
	for i := range fill {
		fill[i] = benchBatch(fmt.Sprintf("device-%03d", i%50))
	}
	b.SetBytes(encodedLen(fill[0]))
	b.ReportAllocs()
	ctx := context.Background()
	var after uint64
	b.ResetTimer()
	for done := 0; done < b.N; {
		if q.Stats().Records == 0 {
			b.StopTimer()
			for range 20 {
				if err := q.Append(ctx, fill...); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
		}
		recs, err := q.Peek(after, min(100, b.N-done))
		if err != nil {
			b.Fatal(err)
		}
		after = recs[len(recs)-1].Seq
		if err := q.Ack(after); err != nil {
			b.Fatal(err)
		}
		done += len(recs)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchPoints)/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkAppendWhileAcking is the gateway's steady state: 8 appenders (as
// 8 devices) commit 120-point batches while one consumer, as the uplink's
// acker, peeks what is new and acknowledges it with AckSeqs in runs of up to
// 100. One op is one batch appended; the consumer keeps up.
func BenchmarkAppendWhileAcking(b *testing.B) {
	q := openQueue(b, filepath.Join(b.TempDir(), "buffer.db"), Options{MaxBytes: 256 << 20}, nil)
	b.SetBytes(encodedLen(benchBatch("device-001")))
	b.ReportAllocs()
	ctx, cancel := context.WithCancel(context.Background())
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		var after uint64
		seqs := make([]uint64, 0, 100)
		for ctx.Err() == nil {
			if err := q.Wait(ctx, after); err != nil {
				return
			}
			recs, err := q.Peek(after, 100)
			if err != nil || len(recs) == 0 {
				continue
			}
			seqs = seqs[:0]
			for _, r := range recs {
				seqs = append(seqs, r.Seq)
			}
			after = recs[len(recs)-1].Seq
			if err := q.AckSeqs(seqs); err != nil {
				b.Error(err)
				return
			}
		}
	}()
	b.ResetTimer()
	b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		batch := benchBatch("device-par")
		for pb.Next() {
			if err := q.Append(ctx, batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cancel()
	<-acked
	st := q.Stats()
	b.ReportMetric(float64(b.N*benchPoints)/b.Elapsed().Seconds(), "points/s")
	b.ReportMetric(float64(st.Appended)/float64(max(st.Commits, 1)), "batches/commit")
}
