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

// TestDevicesOfOneProfileShareTheirCompiledTags: drivers built with one
// Links from the same tags (one device profile's slice, or equal tags
// written out for each device) share what New makes of them; each keeps
// its own name and per-request state, and tags that differ in anything
// are compiled anew.
func TestDevicesOfOneProfileShareTheirCompiledTags(t *testing.T) {
	links := NewLinks(nil)
	scale := 0.1
	tags := []Tag{{Name: "a", Address: 40001, Scale: &scale}, {Name: "b", Address: 40002, Type: TypeFloat32}}
	cfg := Config{URL: "tcp://127.0.0.1:1502", Poll: time.Second, Tags: tags}
	d1, err := New("m1", cfg, nil, WithLinks(links))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := New("m2", cfg, nil, WithLinks(links))
	if err != nil {
		t.Fatal(err)
	}
	if &d1.groups[0] != &d2.groups[0] || &d1.infos[0][0] != &d2.infos[0][0] {
		t.Error("two devices of one tag slice do not share their compiled tags")
	}
	if &d1.state[0][0] == &d2.state[0][0] || &d1.last[0][0] == &d2.last[0][0] {
		t.Error("two devices share their per-request state")
	}
	if d1.Plan().Device != "m1" || d2.Plan().Device != "m2" {
		t.Errorf("plans name %q and %q", d1.Plan().Device, d2.Plan().Device)
	}
	scale2 := 0.1
	inline := []Tag{{Name: "a", Address: 40001, Scale: &scale2}, {Name: "b", Address: 40002, Type: TypeFloat32}}
	d5, err := New("m5", Config{URL: cfg.URL, Poll: cfg.Poll, Tags: inline}, nil, WithLinks(links))
	if err != nil {
		t.Fatal(err)
	}
	if &d5.groups[0] != &d1.groups[0] {
		t.Error("equal tags written out again do not share the compiled tags")
	}
	scale2 = 0.2
	d6, err := New("m6", Config{URL: cfg.URL, Poll: cfg.Poll, Tags: inline}, nil, WithLinks(links))
	if err != nil {
		t.Fatal(err)
	}
	if &d6.groups[0] == &d1.groups[0] || d6.groups[0].tags[0].scale != 0.2 {
		t.Error("a tag with another scale shares the compiled tags")
	}
	tags[1].Address = 40011
	d3, err := New("m3", cfg, nil, WithLinks(links))
	if err != nil {
		t.Fatal(err)
	}
	if &d3.groups[0] == &d1.groups[0] {
		t.Fatal("a tag slice changed in place reused the old compiled tags")
	}
	if got := d3.Plan().Groups[0].Requests; len(got) != 1 || got[0].Count != 12 {
		t.Errorf("requests after the change: %+v, want one of 12 registers (40001..40012)", got)
	}
	other := Config{URL: cfg.URL, Poll: 2 * time.Second, Tags: tags}
	d4, err := New("m4", other, nil, WithLinks(links))
	if err != nil {
		t.Fatal(err)
	}
	if d4.Groups()[0] != 2*time.Second {
		t.Errorf("a device with another poll interval polls every %v", d4.Groups()[0])
	}
}
