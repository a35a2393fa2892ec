package modbus

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFrameGap(t *testing.T) {
	for url, want := range map[string]time.Duration{
		"rtu:///dev/ttyS0?baud=9600&parity=E":  4010 * time.Microsecond, // 11 bits × 3.5 / 9600
		"rtu:///dev/ttyS0?baud=9600&parity=N":  3646 * time.Microsecond, // 10 bits
		"rtu:///dev/ttyS0?baud=19200&parity=E": 2005 * time.Microsecond,
		"rtu:///dev/ttyS0?baud=38400":          1750 * time.Microsecond, // fixed above 19200
		"rtuovertcp://h:4001":                  1750 * time.Microsecond,
		"tcp://h":                              0,
	} {
		ep, err := ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		if got := frameGap(ep); got.Round(time.Microsecond) != want {
			t.Errorf("%s: gap %v, want %v", url, got, want)
		}
	}
}

func TestRTUFrameLen(t *testing.T) {
	for _, c := range []struct {
		head []byte
		want int
	}{
		{[]byte{1, 3, 4}, 9},       // 2 registers
		{[]byte{1, 1, 1}, 6},       // up to 8 coils
		{[]byte{1, 0x83, 2}, 5},    // exception
		{[]byte{1, 6, 0}, 8},       // write single register echo
		{[]byte{1, 16, 0}, 8},      // write multiple registers echo
		{[]byte{1, 0x2B, 0x0E}, 0}, // device identification: unknown here
	} {
		if got := rtuFrameLen(c.head); got != c.want {
			t.Errorf("% x: %d, want %d", c.head, got, c.want)
		}
	}
}

// deadlineOnly is a context whose deadline only Deadline reports: its Done
// never closes, as the collector's context for a DeadlineBound driver.
type deadlineOnly struct {
	context.Context
	dl time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.dl, true }

// TestLinkWaitsEndAtTheDeadline: the wait for the link's turn and the
// pauses end at the context's deadline even when its Done never closes
// (the driver is collector.DeadlineBound).
func TestLinkWaitsEndAtTheDeadline(t *testing.T) {
	l := newLink(Endpoint{Transport: TCP, Addr: "127.0.0.1:1"}, nil)
	if err := l.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer l.unlock()
	ctx := deadlineOnly{context.Background(), time.Now().Add(50 * time.Millisecond)}
	done := make(chan error, 2)
	go func() { done <- l.lock(ctx) }()
	go func() { done <- sleep(ctx, time.Hour) }()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("got %v, want context.DeadlineExceeded", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a wait did not end at the deadline")
		}
	}
	// A sleep that ends before the deadline is a plain sleep.
	if err := sleep(deadlineOnly{context.Background(), time.Now().Add(time.Hour)}, time.Millisecond); err != nil {
		t.Errorf("short sleep: %v", err)
	}
}
