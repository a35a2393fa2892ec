package collector

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// scriptDriver is a one-group Driver whose n-th Read returns script(n):
// one reading per tag, to which it adds the tag names and the read time.
// While fail is set, Connect and Read fail.
type scriptDriver struct {
	period time.Duration
	tags   []TagInfo
	script func(n int) []reading

	mu    sync.Mutex
	reads int
	fail  bool
}

// reading is one tag's scripted value and quality.
type reading struct {
	v telemetry.Value
	q telemetry.Quality
}

func (s *scriptDriver) Groups() []time.Duration { return []time.Duration{s.period} }
func (s *scriptDriver) Tags(int) []TagInfo      { return s.tags }
func (s *scriptDriver) Close() error            { return nil }

func (s *scriptDriver) Connect(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("connection refused")
	}
	return nil
}

func (s *scriptDriver) Read(_ context.Context, _ int, dst []telemetry.Point) ([]telemetry.Point, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return dst, errors.New("connection reset")
	}
	now := time.Now()
	for i, r := range s.script(s.reads) {
		dst = append(dst, telemetry.Point{Tag: s.tags[i].Name, Unit: s.tags[i].Unit, Value: r.v, Quality: r.q, Time: now})
	}
	s.reads++
	return dst, nil
}

func (s *scriptDriver) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// waitReads lets fake time pass until the driver has made n successful
// reads; the n-th was less than 100ms ago.
func (s *scriptDriver) waitReads(n int) {
	for s.count() < n {
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *scriptDriver) setFail(fail bool) {
	s.mu.Lock()
	s.fail = fail
	s.mu.Unlock()
}

// floats scripts one tag through vs, then holds the last value.
func floats(vs ...float64) func(int) []reading {
	return func(n int) []reading {
		return []reading{{v: telemetry.Float(vs[min(n, len(vs)-1)])}}
	}
}

// reported is one point the sink received, with its time relative to the
// first point of the test.
type reported struct {
	at time.Duration
	v  telemetry.Value
	q  telemetry.Quality
}

// series returns what rec received for tag, and fails on an empty batch.
func series(t *testing.T, rec *recorder, tag string) []reported {
	t.Helper()
	var out []reported
	var t0 time.Time
	for _, b := range rec.get() {
		if len(b.Points) == 0 {
			t.Fatal("the sink got an empty batch")
		}
		for _, p := range b.Points {
			if t0.IsZero() {
				t0 = p.Time
			}
			if p.Tag == tag {
				out = append(out, reported{p.Time.Sub(t0), p.Value, p.Quality})
			}
		}
	}
	return out
}

// values returns the value of each reported point.
func values(rs []reported) []telemetry.Value {
	var out []telemetry.Value
	for _, r := range rs {
		out = append(out, r.v)
	}
	return out
}

func sameValues(a, b []telemetry.Value) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// runScript lets the collector poll d exactly reads times and returns
// what the sink got.
func runScript(t *testing.T, d *scriptDriver, reads int) *recorder {
	t.Helper()
	rec := &recorder{}
	c := New([]Device{{Name: "d", Driver: d}}, rec.sink, nil)
	stop := run(t, c)
	d.waitReads(reads)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return rec
}

func fvals(fs ...float64) []telemetry.Value {
	var out []telemetry.Value
	for _, f := range fs {
		out = append(out, telemetry.Float(f))
	}
	return out
}

func TestFilterDeadbands(t *testing.T) {
	cases := []struct {
		name   string
		filter Filter
		in     []float64
		want   []float64
	}{
		// |v-last| > 0.5 from the last reported value, not the last reading.
		{"absolute", Filter{OnChange: true, Deadband: 0.5},
			[]float64{10, 10.3, 10.5, 10.6, 10.2, 11.2, 11.2, 10.9, 10.7, 10.6},
			[]float64{10, 10.6, 11.2, 10.6}},
		// |v-last| > 10% of |last|; from 0 any change counts.
		{"percent", Filter{OnChange: true, Deadband: 10, Percent: true},
			[]float64{100, 105, 110, 111, 121, 0, 0, 1, -1, -1.05, -0.5},
			[]float64{100, 111, 0, 1, -1, -0.5}},
		{"zero deadband reports every change", Filter{OnChange: true},
			[]float64{1, 1, 1.0000001, 1.0000001, 2},
			[]float64{1, 1.0000001, 2}},
		{"NaN and infinity", Filter{OnChange: true, Deadband: 5, Percent: true},
			[]float64{1, math.NaN(), math.NaN(), 1, math.Inf(1), math.Inf(1), 1e300},
			[]float64{1, math.NaN(), 1, math.Inf(1), 1e300}},
		{"no filter reports every poll", Filter{},
			[]float64{1, 1, 1},
			[]float64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				d := &scriptDriver{period: time.Second, tags: []TagInfo{{Name: "x", Filter: c.filter}}, script: floats(c.in...)}
				rec := runScript(t, d, 11)
				got := values(series(t, rec, "x"))
				if !sameValues(got, fvals(c.want...)) {
					t.Errorf("reported %v, want %v", got, c.want)
				}
			})
		})
	}
}

func TestFilterIntegersBoolsAndStrings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ints := []int64{math.MinInt64, math.MaxInt64, math.MaxInt64 - 2, 0, 2, 3}
		uints := []uint64{0, math.MaxUint64, math.MaxUint64 - 2, 10, 7, 6}
		bools := []bool{false, false, true, true, false, false}
		strs := []string{"a", "a", "b", "b", "b", ""}
		db := Filter{OnChange: true, Deadband: 2}
		d := &scriptDriver{period: time.Second, tags: []TagInfo{
			{Name: "i", Filter: db}, {Name: "u", Filter: db}, {Name: "b", Filter: db}, {Name: "s", Filter: db},
		}, script: func(n int) []reading {
			n = min(n, len(ints)-1)
			return []reading{{v: telemetry.Int(ints[n])}, {v: telemetry.Uint(uints[n])}, {v: telemetry.Bool(bools[n])}, {v: telemetry.String(strs[n])}}
		}}
		rec := runScript(t, d, 6)
		for tag, want := range map[string][]telemetry.Value{
			"i": {telemetry.Int(math.MinInt64), telemetry.Int(math.MaxInt64), telemetry.Int(0), telemetry.Int(3)},
			"u": {telemetry.Uint(0), telemetry.Uint(math.MaxUint64), telemetry.Uint(10), telemetry.Uint(7)},
			"b": {telemetry.Bool(false), telemetry.Bool(true), telemetry.Bool(false)},
			"s": {telemetry.String("a"), telemetry.String("b"), telemetry.String("")},
		} {
			if got := values(series(t, rec, tag)); !sameValues(got, want) {
				t.Errorf("%s: reported %v, want %v", tag, got, want)
			}
		}
	})
}

func TestFilterReportsQualityChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const clamped = telemetry.Uncertain | telemetry.ReasonClamped
		const refused = telemetry.Bad | telemetry.ReasonException
		script := []reading{
			{v: telemetry.Float(5)}, {v: telemetry.Float(5)},
			{v: telemetry.Float(5), q: clamped}, {v: telemetry.Float(5), q: clamped},
			{q: refused}, {q: refused},
			{q: telemetry.Bad | telemetry.ReasonDecode},
			{v: telemetry.Float(5)}, {v: telemetry.Float(5)},
		}
		d := &scriptDriver{period: time.Second, tags: []TagInfo{{Name: "x", Filter: Filter{OnChange: true, Deadband: 1}}},
			script: func(n int) []reading { return script[min(n, len(script)-1):][:1] }}
		rec := runScript(t, d, 9)
		var got []telemetry.Quality
		for _, r := range series(t, rec, "x") {
			got = append(got, r.q)
		}
		want := []telemetry.Quality{telemetry.Good, clamped, refused, telemetry.Bad | telemetry.ReasonDecode, telemetry.Good}
		if len(got) != len(want) {
			t.Fatalf("reported qualities %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("reported qualities %v, want %v", got, want)
			}
		}
	})
}

func TestFilterHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Constant but for a change at read 4 and a wobble inside the
		// deadband at read 7, which the heartbeat then reports.
		in := []float64{1, 1, 1, 1, 3, 3, 3, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5}
		d := &scriptDriver{period: time.Second, tags: []TagInfo{
			{Name: "x", Filter: Filter{OnChange: true, Deadband: 1, MaxSilence: 3 * time.Second}},
		}, script: floats(in...)}
		rec := runScript(t, d, 13)
		got := series(t, rec, "x")
		want := []reported{
			{0, telemetry.Float(1), 0},
			{3 * time.Second, telemetry.Float(1), 0}, // heartbeat
			{4 * time.Second, telemetry.Float(3), 0}, // change: the heartbeat restarts
			{7 * time.Second, telemetry.Float(3.5), 0},
			{10 * time.Second, telemetry.Float(3.5), 0},
		}
		if len(got) != len(want) {
			t.Fatalf("reported %v, want %v", got, want)
		}
		for i := range want {
			if got[i].at != want[i].at || !got[i].v.Equal(want[i].v) || got[i].q != want[i].q {
				t.Fatalf("reported %v, want %v", got, want)
			}
		}
	})
}

func TestFilterDeviceDownAndUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const down = telemetry.Bad | telemetry.ReasonNoConnection
		d := &scriptDriver{period: time.Second, tags: []TagInfo{
			{Name: "rbe", Filter: Filter{OnChange: true, Deadband: 1, MaxSilence: 5 * time.Second}},
			{Name: "all"},
			{Name: "quiet", Filter: Filter{OnChange: true}}, // no heartbeat
		}, script: func(int) []reading {
			return []reading{{v: telemetry.Float(7)}, {v: telemetry.Float(7)}, {v: telemetry.Int(1)}}
		}}
		rec := &recorder{}
		c := New([]Device{{Name: "d", Driver: d, BackoffMin: 500 * time.Millisecond, BackoffMax: 500 * time.Millisecond}}, rec.sink, nil)
		stop := run(t, c)
		d.waitReads(4) // good reads at +0s .. +3s from the first
		d.setFail(true)
		time.Sleep(12 * time.Second) // the read at +4s fails; Bad at +4, +5, ... +15
		d.setFail(false)
		d.waitReads(7) // reconnected within the 500ms backoff, reads at +16, +17, +18
		if err := stop(); err != nil {
			t.Fatal(err)
		}

		rbe := series(t, rec, "rbe")
		want := []reported{
			{0, telemetry.Float(7), telemetry.Good},
			{4 * time.Second, telemetry.Value{}, down},  // goes Bad at once
			{9 * time.Second, telemetry.Value{}, down},  // heartbeat while down
			{14 * time.Second, telemetry.Value{}, down}, // heartbeat while down
			{16 * time.Second, telemetry.Float(7), telemetry.Good},
		}
		if len(rbe) < len(want) {
			t.Fatalf("rbe reported %v, want %v then heartbeats", rbe, want)
		}
		for i := range want {
			if rbe[i].at != want[i].at || !rbe[i].v.Equal(want[i].v) || rbe[i].q != want[i].q {
				t.Fatalf("rbe reported %v, want %v", rbe, want)
			}
		}
		if len(rbe) != len(want) {
			t.Errorf("rbe reported %v after recovery, want only heartbeats", rbe[len(want):])
		}
		quiet := series(t, rec, "quiet")
		var qs []telemetry.Quality
		for _, r := range quiet {
			qs = append(qs, r.q)
		}
		if len(qs) != 3 || qs[0] != telemetry.Good || qs[1] != down || qs[2] != telemetry.Good || quiet[2].at != 16*time.Second {
			t.Errorf("quiet reported %v, want good, bad once, good at 16s", quiet)
		}
		all := series(t, rec, "all")
		if len(all) != 19 {
			t.Errorf("the unfiltered tag reported %d times in 19 polls, want every one: %v", len(all), all)
		}
		for _, r := range all {
			if want := telemetry.Good; r.at >= 4*time.Second && r.at < 16*time.Second {
				want = down
				if r.q != want {
					t.Errorf("all at %v: %v, want %v", r.at, r.q, want)
				}
			}
		}
	})
}

func TestFilterReportsEveryTagWhenTheDeviceComesBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The reset on recovery, not the quality change, makes a tag report
		// even when its Bad points never reached the sink: here the read
		// fails but the connect succeeds, so no Bad batch follows the first.
		e := newExceptions([]TagInfo{{Name: "a", Filter: Filter{OnChange: true}}, {Name: "b", Filter: Filter{OnChange: true, Deadband: 1}}})
		now := time.Now()
		pts := []telemetry.Point{{Tag: "a", Value: telemetry.Int(1)}, {Tag: "b", Value: telemetry.Float(1)}}
		if got := e.apply(append([]telemetry.Point(nil), pts...), now); len(got) != 2 {
			t.Fatalf("first apply kept %d points, want 2", len(got))
		}
		if got := e.apply(append([]telemetry.Point(nil), pts...), now.Add(time.Second)); len(got) != 0 {
			t.Fatalf("unchanged points kept: %v", got)
		}
		e.reset()
		if got := e.apply(append([]telemetry.Point(nil), pts...), now.Add(2*time.Second)); len(got) != 2 {
			t.Fatalf("after reset kept %d points, want 2", len(got))
		}
	})
}

func TestFilterLeavesMismatchedBatchesAlone(t *testing.T) {
	e := newExceptions([]TagInfo{{Name: "a", Filter: Filter{OnChange: true}}})
	pts := []telemetry.Point{{Tag: "a"}, {Tag: "b"}}
	if got := e.apply(pts, time.Now()); len(got) != 2 {
		t.Errorf("kept %d of 2 points from a batch longer than the tag list", len(got))
	}
}

// BenchmarkFilter filters a 120-point batch in which a third of the tags
// moved beyond their deadband.
func BenchmarkFilter(b *testing.B) {
	const n = 120
	tags := make([]TagInfo, n)
	src := make([]telemetry.Point, n)
	for i := range tags {
		tags[i] = TagInfo{Name: "t", Filter: Filter{OnChange: true, Deadband: 0.5, Percent: i%2 == 0, MaxSilence: time.Hour}}
		src[i] = telemetry.Point{Tag: "t", Value: telemetry.Float(float64(i))}
	}
	e := newExceptions(tags)
	now := time.Now()
	pts := make([]telemetry.Point, n)
	copy(pts, src)
	e.apply(pts, now)
	kept, iter := 0, 0
	b.ReportAllocs()
	for b.Loop() {
		copy(pts, src)
		iter++
		for i := 0; i < n; i += 3 {
			pts[i].Value = telemetry.Float(float64(i) + 100*float64(iter%2))
		}
		kept += len(e.apply(pts, now))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/point")
	if kept == 0 {
		b.Fatal("nothing reported")
	}
}
