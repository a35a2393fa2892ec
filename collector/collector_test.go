package collector

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// fakeDriver is a Driver whose behaviour a test scripts. Its methods run on
// the device goroutine; the test reads its records under mu.
type fakeDriver struct {
	groups  []time.Duration
	timeout time.Duration // 0: no Timeout method behaviour (DefaultTimeout)

	mu          sync.Mutex
	connectErrs int           // fail this many Connects, then succeed
	hangConnect bool          // Connect blocks until its ctx is done
	readErr     error         // returned by Read when set
	readDelay   time.Duration // Read takes this long
	hangRead    bool          // Read blocks until its ctx is done
	connects    []time.Time
	readStarts  [][]time.Time // per group
	reading     int
	maxReading  int
	closes      int
}

func newFake(groups ...time.Duration) *fakeDriver {
	return &fakeDriver{groups: groups, readStarts: make([][]time.Time, len(groups))}
}

func (f *fakeDriver) Groups() []time.Duration { return f.groups }

func (f *fakeDriver) Timeout() time.Duration { return f.timeout }

func (f *fakeDriver) Tags(group int) []TagInfo {
	return []TagInfo{{Name: "g" + string(rune('0'+group)) + ".a", Unit: "bar"}, {Name: "g" + string(rune('0'+group)) + ".b"}}
}

func (f *fakeDriver) Connect(ctx context.Context) error {
	f.mu.Lock()
	f.connects = append(f.connects, time.Now())
	hang := f.hangConnect
	fail := f.connectErrs > 0
	if fail {
		f.connectErrs--
	}
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if fail {
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeDriver) Read(ctx context.Context, group int, dst []telemetry.Point) ([]telemetry.Point, error) {
	f.mu.Lock()
	f.readStarts[group] = append(f.readStarts[group], time.Now())
	f.reading++
	f.maxReading = max(f.maxReading, f.reading)
	delay, hang, rerr := f.readDelay, f.hangRead, f.readErr
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.reading--
		f.mu.Unlock()
	}()
	if hang {
		<-ctx.Done()
		return dst, ctx.Err()
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
	if rerr != nil {
		return dst, rerr
	}
	now := time.Now()
	for _, t := range f.Tags(group) {
		dst = append(dst, telemetry.Point{Tag: t.Name, Unit: t.Unit, Value: telemetry.Int(1), Time: now})
	}
	return dst, nil
}

func (f *fakeDriver) Close() error {
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
	return nil
}

func (f *fakeDriver) set(fn func(f *fakeDriver)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

// recorder is a Sink that keeps copies of every batch.
type recorder struct {
	mu      sync.Mutex
	batches []telemetry.Batch
	err     error
}

func (r *recorder) sink(_ context.Context, b *telemetry.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, telemetry.Batch{Device: b.Device, Points: append([]telemetry.Point(nil), b.Points...)})
	return r.err
}

func (r *recorder) get() []telemetry.Batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]telemetry.Batch(nil), r.batches...)
}

// logBuf is a concurrency-safe log destination.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), "msg=\""+msg+"\"")
}

// run starts c in the bubble and returns a stop function that cancels it
// and returns Run's error.
func run(t *testing.T, c *Collector) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

func newLogger() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

func TestCollectorSkipsTicksWhileReadRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(100 * time.Millisecond)
		f.readDelay = 250 * time.Millisecond
		rec := &recorder{}
		log, lb := newLogger()
		c := New([]Device{{Name: "slow", Driver: f}}, rec.sink, log)
		stop := run(t, c)
		time.Sleep(3 * time.Second)
		if err := stop(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		f.mu.Lock()
		starts := f.readStarts[0]
		maxReading := f.maxReading
		f.mu.Unlock()
		if maxReading != 1 {
			t.Errorf("%d reads ran at once, want 1", maxReading)
		}
		if len(starts) < 9 {
			t.Fatalf("%d reads in 3s, want about 10", len(starts))
		}
		for i := 1; i < len(starts); i++ {
			// A read takes 250ms: the ticks at +100 and +200 are skipped,
			// the one at +300 runs.
			if d := starts[i].Sub(starts[i-1]); d != 300*time.Millisecond {
				t.Fatalf("read %d started %v after the previous one, want 300ms", i, d)
			}
		}
		st := c.Status()[0]
		if st.SkippedTicks != 2*st.Polls || st.Polls == 0 {
			t.Errorf("Polls = %d, SkippedTicks = %d; want 2 skipped per poll", st.Polls, st.SkippedTicks)
		}
		if n := len(rec.get()); uint64(n) != st.Polls {
			t.Errorf("sink got %d batches for %d polls", n, st.Polls)
		}
		if n := lb.count("poll overran its interval"); n != 1 {
			t.Errorf("logged the overrun %d times, want once", n)
		}
	})
}

func TestCollectorGroupsKeepTheirOwnPeriods(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(100*time.Millisecond, time.Second)
		rec := &recorder{}
		log, _ := newLogger()
		c := New([]Device{{Name: "d", Driver: f}}, rec.sink, log)
		stop := run(t, c)
		time.Sleep(10*time.Second + time.Millisecond)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		fast, slow := len(f.readStarts[0]), len(f.readStarts[1])
		f.mu.Unlock()
		// The first reads run at once, the rest on the clock's multiples.
		if fast < 99 || fast > 101 || slow < 9 || slow > 11 {
			t.Errorf("reads: fast group %d (want ~100), slow group %d (want ~10)", fast, slow)
		}
		if st := c.Status()[0]; st.SkippedTicks != 0 || !st.Up {
			t.Errorf("status %+v: want up with no skipped ticks", st)
		}
	})
}

func TestCollectorPollsOnTheClocksMultiples(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period = 250 * time.Millisecond
		time.Sleep(70 * time.Millisecond) // start between two ticks
		start := time.Now()
		a, b := newFake(period), newFake(period)
		rec := &recorder{}
		log, _ := newLogger()
		c := New([]Device{{Name: "a", Driver: a}, {Name: "b", Driver: b}}, rec.sink, log)
		stop := run(t, c)
		time.Sleep(2*time.Second + time.Millisecond)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		for _, f := range []*fakeDriver{a, b} {
			f.mu.Lock()
			reads := f.readStarts[0]
			f.mu.Unlock()
			// One read at start, then at 0.25 s, 0.5 s, … 2.0 s on the clock.
			if len(reads) != 9 {
				t.Fatalf("%d reads in 2 s at %v, want 9", len(reads), period)
			}
			if !reads[0].Equal(start) {
				t.Errorf("first read at %v, want at once (%v)", reads[0], start)
			}
			for _, r := range reads[1:] {
				if r.UnixNano()%int64(period) != 0 {
					t.Errorf("read at %v: not on a multiple of %v", r.Format("15:04:05.000"), period)
				}
			}
		}
		if !a.readStarts[0][5].Equal(b.readStarts[0][5]) {
			t.Errorf("devices polled at %v and %v, want the same instant", a.readStarts[0][5], b.readStarts[0][5])
		}
	})
}

func TestCollectorPollOffsetMovesTheInstants(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const period, offset = 250 * time.Millisecond, 100 * time.Millisecond
		time.Sleep(30 * time.Millisecond) // start between two ticks
		f := newFake(period)
		rec := &recorder{}
		log, _ := newLogger()
		c := New([]Device{{Name: "d", Driver: f, PollOffset: offset}}, rec.sink, log)
		stop := run(t, c)
		time.Sleep(time.Second + time.Millisecond)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		reads := f.readStarts[0]
		f.mu.Unlock()
		// At start (0.03 s), then 0.1, 0.35, 0.6, 0.85 s past the second.
		if len(reads) != 5 {
			t.Fatalf("%d reads, want 5", len(reads))
		}
		for _, r := range reads[1:] {
			if r.UnixNano()%int64(period) != int64(offset) {
				t.Errorf("read at %v: not %v past a multiple of %v", r.Format("15:04:05.000"), offset, period)
			}
		}
	})
}

func TestCollectorBacksOffAndReportsBadWhileDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(5 * time.Second)
		f.connectErrs = 1 << 30
		rec := &recorder{}
		log, lb := newLogger()
		c := New([]Device{{Name: "dead", Driver: f, BackoffMin: time.Second, BackoffMax: 8 * time.Second}}, rec.sink, log)
		stop := run(t, c)
		time.Sleep(60 * time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		connects := append([]time.Time(nil), f.connects...)
		f.mu.Unlock()
		want := []time.Duration{1, 2, 4, 8, 8, 8}
		if len(connects) < len(want)+1 {
			t.Fatalf("%d connect attempts in 60s, want at least %d", len(connects), len(want)+1)
		}
		for i := 1; i < len(connects); i++ {
			ceil := 8 * time.Second
			if i-1 < len(want) {
				ceil = want[i-1] * time.Second
			}
			if d := connects[i].Sub(connects[i-1]); d < ceil/2 || d > ceil {
				t.Errorf("retry %d after %v, want %v..%v", i, d, ceil/2, ceil)
			}
		}
		// One Bad batch at the first failure, then one per poll period.
		batches := rec.get()
		if len(batches) < 12 || len(batches) > 14 {
			t.Errorf("%d Bad batches in 60s at a 5s period, want 12..14", len(batches))
		}
		for _, b := range batches {
			for _, p := range b.Points {
				if p.Quality != telemetry.Bad|telemetry.ReasonNoConnection || p.Time.IsZero() {
					t.Fatalf("point %+v: want Bad no_connection with a time", p)
				}
			}
		}
		if n := lb.count("device down"); n != 1 {
			t.Errorf("logged device down %d times, want once", n)
		}
		st := c.Status()[0]
		if st.Up || !strings.Contains(st.LastError, "connection refused") || st.PollErrors != uint64(len(connects)) {
			t.Errorf("status %+v", st)
		}
	})
}

func TestCollectorRecoversAndGoesDownOnReadError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(time.Second)
		f.connectErrs = 2
		rec := &recorder{}
		log, lb := newLogger()
		c := New([]Device{{Name: "flaky", Driver: f, BackoffMin: time.Second, BackoffMax: 4 * time.Second}}, rec.sink, log)
		stop := run(t, c)
		time.Sleep(10 * time.Second)
		if st := c.Status()[0]; !st.Up || st.Polls < 5 {
			t.Fatalf("after recovery: %+v", st)
		}
		f.set(func(f *fakeDriver) { f.readErr = errors.New("broken pipe") })
		time.Sleep(3 * time.Second)
		st := c.Status()[0]
		if st.Up || !strings.Contains(st.LastError, "broken pipe") {
			t.Fatalf("after read error: %+v", st)
		}
		f.set(func(f *fakeDriver) { f.readErr = nil })
		time.Sleep(10 * time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if st := c.Status()[0]; !st.Up {
			t.Fatalf("after second recovery: %+v", st)
		}
		if up, down := lb.count("device up"), lb.count("device down"); up != 2 || down != 2 {
			t.Errorf("logged up %d and down %d times, want 2 each", up, down)
		}
		// The read error was followed by Bad batches, then Good ones again.
		var seq []bool
		for _, b := range rec.get() {
			good := b.Points[0].Quality.IsGood()
			if len(seq) == 0 || seq[len(seq)-1] != good {
				seq = append(seq, good)
			}
		}
		if want := []bool{false, true, false, true}; !equalBools(seq, want) {
			t.Errorf("quality sequence %v, want %v", seq, want)
		}
		f.mu.Lock()
		closes := f.closes
		f.mu.Unlock()
		if closes < 2 {
			t.Errorf("driver closed %d times, want after the read error and at the end", closes)
		}
	})
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCollectorTimeoutMakesTagsBadTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(time.Second)
		f.hangRead = true
		readTimesOut(t, f, f)
	})
}

// readTimesOut runs drv, whose reads (recorded by f) last until the
// device's 300 ms timeout, for 2 s in a synctest bubble, and checks that
// the first read's tags went Bad|timeout exactly at that timeout.
func readTimesOut(t *testing.T, drv Driver, f *fakeDriver) {
	t.Helper()
	f.timeout = 300 * time.Millisecond
	rec := &recorder{}
	log, _ := newLogger()
	c := New([]Device{{Name: "silent", Driver: drv}}, rec.sink, log)
	stop := run(t, c)
	time.Sleep(2 * time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	start := f.readStarts[0][0]
	f.mu.Unlock()
	b := rec.get()
	if len(b) == 0 {
		t.Fatal("no batch")
	}
	p := b[0].Points[0]
	if p.Quality != telemetry.Bad|telemetry.ReasonTimeout {
		t.Errorf("quality %v, want bad:timeout", p.Quality)
	}
	if d := p.Time.Sub(start); d != 300*time.Millisecond {
		t.Errorf("Bad point %v after the read started, want the 300ms timeout", d)
	}
}

func TestCollectorDeadDeviceDoesNotDelayOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dead := newFake(100 * time.Millisecond)
		dead.hangConnect = true // every connect runs into DefaultTimeout
		live := newFake(100 * time.Millisecond)
		rec := &recorder{}
		log, _ := newLogger()
		c := New([]Device{{Name: "dead", Driver: dead}, {Name: "live", Driver: live}}, rec.sink, log)
		stop := run(t, c)
		time.Sleep(5*time.Second + time.Millisecond)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		live.mu.Lock()
		n := len(live.readStarts[0])
		live.mu.Unlock()
		if n < 49 || n > 51 {
			t.Errorf("live device read %d times in 5s at 100ms, want ~50", n)
		}
		st := c.Status()
		if st[0].Up || !st[1].Up || st[1].SkippedTicks != 0 {
			t.Errorf("status %+v", st)
		}
	})
}

func TestCollectorReturnsSinkFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake(time.Second)
		rec := &recorder{err: errors.New("disk full")}
		log, _ := newLogger()
		c := New([]Device{{Name: "d", Driver: f}, {Name: "e", Driver: newFake(time.Second)}}, rec.sink, log)
		err := c.Run(t.Context())
		var de *DeviceError
		if !errors.As(err, &de) || !strings.Contains(err.Error(), "disk full") {
			t.Fatalf("Run = %v, want a *DeviceError wrapping the sink's error", err)
		}
	})
}

func TestCollectorStatusIsSafeDuringRun(t *testing.T) {
	f := newFake(time.Millisecond)
	rec := &recorder{}
	log, _ := newLogger()
	c := New([]Device{{Name: "d", Driver: f}}, rec.sink, log)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for c.Status()[0].Polls < 20 {
		if time.Now().After(deadline) {
			t.Fatal("no polls within 5s")
		}
		time.Sleep(time.Millisecond) // polling a condition, not waiting for time to pass
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// boundFake is a fakeDriver that is DeadlineBound: a hanging Read waits
// for its context's deadline itself, as the Modbus driver does.
type boundFake struct {
	*fakeDriver
	sawDone bool // Done was closed at the first read's deadline (it must not be)
	reads   int
}

func (*boundFake) DeadlineBound() {}

func (b *boundFake) Read(ctx context.Context, group int, dst []telemetry.Point) ([]telemetry.Point, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		return dst, errors.New("no deadline")
	}
	if err := ctx.Err(); err != nil {
		return dst, err
	}
	b.fakeDriver.mu.Lock()
	b.fakeDriver.readStarts[group] = append(b.fakeDriver.readStarts[group], time.Now())
	b.fakeDriver.mu.Unlock()
	time.Sleep(time.Until(dl))
	b.reads++
	if b.reads == 1 {
		select {
		case <-ctx.Done():
			b.sawDone = true
		default:
		}
	}
	return dst, ctx.Err()
}

// TestCollectorDeadlineBoundDriverTimesOut: a DeadlineBound driver gets a
// context with the device's timeout as deadline, whose Err reports the
// deadline once passed though its Done does not close; a read that ends
// by it makes the tags Bad|timeout, as with any driver.
func TestCollectorDeadlineBoundDriverTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &boundFake{fakeDriver: newFake(time.Second)}
		readTimesOut(t, f, f.fakeDriver)
		if f.reads == 0 {
			t.Fatal("the driver was never read")
		}
		if f.sawDone {
			t.Error("the read context's Done closed at the deadline")
		}
	})
}
