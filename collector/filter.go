package collector

import (
	"math"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// lastReport is what one filtered tag last reported, and when.
type lastReport struct {
	value   telemetry.Value
	quality telemetry.Quality
	time    time.Time // the collector's clock when it was reported
	seen    bool      // false: nothing reported yet (or since the device came back)
}

// exceptions is the report-by-exception state of one poll group: a Filter
// and a lastReport per tag, in the order Read appends the points. It is
// allocated once when the device goroutine starts; apply neither allocates
// nor looks anything up by name. It is used by one goroutine.
type exceptions struct {
	filters []Filter
	last    []lastReport
	on      bool // some tag has OnChange set
}

// newExceptions returns the state for a group with tags.
func newExceptions(tags []TagInfo) exceptions {
	e := exceptions{filters: make([]Filter, len(tags))}
	for i, t := range tags {
		e.filters[i] = t.Filter
		e.on = e.on || t.Filter.OnChange
	}
	if e.on {
		e.last = make([]lastReport, len(tags))
	}
	return e
}

// apply removes from pts, in place, the points that need not be reported,
// records the ones kept as their tags' last reports, and returns the kept
// points in their original order. pts[i] must be the point of tag i; a
// slice of another length (a driver breaking that contract) is returned
// unfiltered. now is the time of the poll.
func (e *exceptions) apply(pts []telemetry.Point, now time.Time) []telemetry.Point {
	if !e.on || len(pts) != len(e.filters) {
		return pts
	}
	n := 0
	for i := range pts {
		if f := &e.filters[i]; f.OnChange {
			l := &e.last[i]
			if !f.report(l, &pts[i], now) {
				continue
			}
			*l = lastReport{value: pts[i].Value, quality: pts[i].Quality, time: now, seen: true}
		}
		if n != i {
			pts[n] = pts[i]
		}
		n++
	}
	return pts[:n]
}

// reset forgets every last report, so that each tag's next point is
// reported whatever its value.
func (e *exceptions) reset() {
	clear(e.last)
}

// report decides whether p is reported, given the tag's last report l: on
// the first reading, on any change of quality (class or reason), when
// MaxSilence has passed since the last report (a heartbeat, which reports
// the current reading, even one inside the deadband), and when the value
// moved beyond the deadband.
func (f *Filter) report(l *lastReport, p *telemetry.Point, now time.Time) bool {
	switch {
	case !l.seen, p.Quality != l.quality:
		return true
	case f.MaxSilence > 0 && now.Sub(l.time) >= f.MaxSilence:
		return true
	}
	return f.moved(l.value, p.Value)
}

// moved reports whether v differs from the last reported value last by
// more than the deadband. Numbers of the same kind compare by magnitude:
// |v-last| > Deadband, or with Percent |v-last| > Deadband/100 * |last|, so
// from a last value of 0 any change counts. Integers are subtracted
// exactly. NaN differs from every number, an infinity from every finite
// value. Anything else (bool, string, a change of kind, a value appearing
// or disappearing) is reported on any change; a zero Deadband reports any
// change of a number too.
func (f *Filter) moved(last, v telemetry.Value) bool {
	if v.Equal(last) {
		return false
	}
	if f.Deadband == 0 || v.Kind() != last.Kind() {
		return true
	}
	var d float64
	switch v.Kind() {
	case telemetry.KindInt:
		a, b := v.AsInt(), last.AsInt()
		if a < b {
			a, b = b, a
		}
		d = float64(uint64(a) - uint64(b)) // exact, even across the int64 range
	case telemetry.KindUint:
		a, b := v.AsUint(), last.AsUint()
		if a < b {
			a, b = b, a
		}
		d = float64(a - b)
	case telemetry.KindFloat:
		a, b := v.AsFloat(), last.AsFloat()
		if math.IsNaN(a) || math.IsNaN(b) {
			return true
		}
		d = math.Abs(a - b)
		if math.IsInf(d, 0) {
			return true
		}
	default:
		return true
	}
	if f.Percent {
		return d > f.Deadband/100*math.Abs(last.AsFloat())
	}
	return d > f.Deadband
}
