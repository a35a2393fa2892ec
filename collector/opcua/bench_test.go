package opcua

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/sim/opcuasim"
	"github.com/fieldgate/fieldgate/telemetry"
)

// BenchmarkSubscriptionThroughput measures data-change notifications per
// second from the in-process server through a 10 ms subscription and the
// collector into a sink: 50 variables change as fast as the server takes
// them; b.N is the number of points the sink receives.
func BenchmarkSubscriptionThroughput(b *testing.B) {
	const vars = 50
	s := opcuasim.New(opcuasim.Options{})
	var tags []Tag
	for i := range vars {
		name := fmt.Sprintf("V%02d", i)
		s.Add(name, float64(0))
		tags = append(tags, Tag{Name: name, Node: s.NodeID(name), Mode: ModeSubscribe, Poll: 10 * time.Millisecond})
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	d, err := New("bench", Config{URL: s.URL(), Timeout: 5 * time.Second, Tags: tags}, nil)
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	sink := func(_ context.Context, bt *telemetry.Batch) error {
		if got.Add(int64(len(bt.Points))) >= target {
			select {
			case <-done:
			default:
				close(done)
			}
		}
		return nil
	}
	c := collector.New([]collector.Device{{Name: "bench", Driver: d}}, sink, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.Run(ctx) }()
	go func() {
		for i := 1; ctx.Err() == nil; i++ {
			for v := range vars {
				s.Set(fmt.Sprintf("V%02d", v), float64(i))
			}
		}
	}()
	for got.Load() == 0 { // connected and subscribed
		time.Sleep(time.Millisecond)
	}
	got.Store(0)
	b.ResetTimer()
	start := time.Now()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("only %d of %d points in 60s", got.Load(), b.N)
	}
	b.ReportMetric(float64(got.Load())/time.Since(start).Seconds(), "points/s")
}
