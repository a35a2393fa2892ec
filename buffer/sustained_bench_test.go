package buffer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// sustainedBatch is one poll of a 20-tag device (tags r00..r19, unit on
// half), the shape the fault suite's devices produce.
func sustainedBatch(device string, now time.Time) *telemetry.Batch {
	b := &telemetry.Batch{Device: device, Points: make([]telemetry.Point, 20)}
	for i := range b.Points {
		p := telemetry.Point{Tag: fmt.Sprintf("r%02d", i), Value: telemetry.Int(int64(i * 7)), Time: now}
		if i%2 == 0 {
			p.Unit = "bar"
			p.Value = telemetry.Float32(float32(i) * 1.25)
		}
		b.Points[i] = p
	}
	return b
}

// BenchmarkSustained measures, with 8 devices appending 20-point batches
// concurrently, the sustained append rate (readings/s) with sync always and
// sync interval (100 ms), the bytes the bbolt file takes per buffered
// reading, and the replay rate of the buffer side of a drain (Peek 100,
// AckSeqs them). One op is one batch appended.
func BenchmarkSustained(b *testing.B) {
	for _, mode := range []struct {
		name     string
		interval time.Duration
	}{{"sync=always", 0}, {"sync=interval", 100 * time.Millisecond}} {
		b.Run(mode.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "buffer.db")
			q := openQueue(b, path, Options{MaxBytes: 1 << 30, SyncInterval: mode.interval}, nil)
			ctx := context.Background()
			const devices = 8
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/devices + 1
			for d := range devices {
				wg.Add(1)
				go func() {
					defer wg.Done()
					batch := sustainedBatch(fmt.Sprintf("device-%02d", d), time.Now())
					for range per {
						if err := q.Append(ctx, batch); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			// interval mode: wait for the last commit, so the rate is durable data.
			for q.Stats().Appended < uint64(per*devices) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			appendSecs := b.Elapsed().Seconds()
			st := q.Stats()
			readings := float64(st.Points)
			b.ReportMetric(readings/appendSecs, "append-readings/s")
			if fi, err := os.Stat(path); err == nil {
				b.ReportMetric(float64(fi.Size())/readings, "file-bytes/reading")
			}
			b.ReportMetric(float64(st.Bytes)/readings, "value-bytes/reading")

			start := time.Now()
			var after uint64
			seqs := make([]uint64, 0, 100)
			for {
				recs, err := q.Peek(after, 100)
				if err != nil {
					b.Fatal(err)
				}
				if len(recs) == 0 {
					break
				}
				seqs = seqs[:0]
				for _, r := range recs {
					seqs = append(seqs, r.Seq)
				}
				after = recs[len(recs)-1].Seq
				if err := q.AckSeqs(seqs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(readings/time.Since(start).Seconds(), "replay-readings/s")
		})
	}
}
