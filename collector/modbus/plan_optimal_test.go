package modbus

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// span is one tag as the planner sees it: count registers or bits of a
// table from offset.
type span struct {
	table  Table
	offset int
	count  int
}

// optimalRequests returns the fewest read requests that cover spans, by
// exhaustive search. It knows nothing of the planner: a request is any
// range of one table, at most the table's limit long, that starts and ends
// on the spans it wholly contains and whose contained spans leave no run
// of more than maxGap unused registers (or bits) inside it; every span must
// lie wholly inside some request. Requests may overlap, and a span may be
// inside several. This is at least as permissive as the planner's model, so
// the planner can only match it or do worse. Exponential in len(spans):
// keep it to about 14.
func optimalRequests(spans []span, lim limits) int {
	n := len(spans)
	if n == 0 {
		return 0
	}
	var covers []uint32 // the spans each feasible request contains
	for _, a := range spans {
		for _, b := range spans {
			if a.table != b.table {
				continue
			}
			start, end := a.offset, b.offset+b.count
			limit := lim.maxRegisters
			if a.table.IsBit() {
				limit = lim.maxBits
			}
			if end <= start || end-start > limit {
				continue
			}
			var mask uint32
			var inside []span
			for k, s := range spans {
				if s.table == a.table && s.offset >= start && s.offset+s.count <= end {
					mask |= 1 << k
					inside = append(inside, s)
				}
			}
			slices.SortFunc(inside, func(x, y span) int { return x.offset - y.offset })
			ok, reach := true, start
			for _, s := range inside {
				if s.offset-reach > lim.maxGap {
					ok = false
					break
				}
				reach = max(reach, s.offset+s.count)
			}
			if ok && reach == end {
				covers = append(covers, mask)
			}
		}
	}
	// Breadth-first over sets of covered spans: dist[m] is the fewest
	// requests that cover at least m.
	full := uint32(1)<<n - 1
	dist := make([]int8, full+1)
	for i := range dist {
		dist[i] = -1
	}
	dist[0] = 0
	queue := []uint32{0}
	for len(queue) > 0 {
		m := queue[0]
		queue = queue[1:]
		if m == full {
			return int(dist[m])
		}
		// Some request must cover the lowest uncovered span: branching on
		// those alone keeps the search small and loses no solution.
		low := uint32(1) << bits.TrailingZeros32(^m)
		for _, c := range covers {
			if c&low != 0 && dist[m|c] < 0 {
				dist[m|c] = dist[m] + 1
				queue = append(queue, m|c)
			}
		}
	}
	panic("spans cannot be covered") // each span alone is a feasible request
}

// planSpans runs the planner on spans in one poll group and checks that
// its requests are valid; it returns their number.
func planSpans(t *testing.T, spans []span, lim limits) int {
	t.Helper()
	tags := make([]tag, len(spans))
	polls := make([]time.Duration, len(spans))
	for i, s := range spans {
		tags[i] = tag{name: fmt.Sprint("t", i), table: s.table, offset: uint16(s.offset), count: uint16(s.count), typ: TypeUint16, bit: -1}
		polls[i] = time.Second
	}
	groups := plan(tags, polls, lim)
	if len(groups) != 1 {
		t.Fatalf("%d groups for one poll interval", len(groups))
	}
	g := groups[0]
	seen := make([]int, len(tags))
	for _, r := range g.reqs {
		limit := lim.maxRegisters
		if r.table.IsBit() {
			limit = lim.maxBits
		}
		if int(r.count) > limit || r.count == 0 {
			t.Fatalf("request %+v exceeds the limit %d", r, limit)
		}
		var inside []span
		for _, ti := range r.tags {
			tg := &g.tags[ti]
			if tg.table != r.table || tg.offset < r.start || tg.end() > int(r.start)+int(r.count) {
				t.Fatalf("tag %+v is not inside request %+v", tg, r)
			}
			seen[ti]++
			inside = append(inside, span{tg.table, int(tg.offset), int(tg.count)})
		}
		slices.SortFunc(inside, func(x, y span) int { return x.offset - y.offset })
		reach := int(r.start)
		for _, s := range inside {
			if s.offset-reach > lim.maxGap {
				t.Fatalf("request %+v skips %d > max_gap %d unused registers", r, s.offset-reach, lim.maxGap)
			}
			reach = max(reach, s.offset+s.count)
		}
		if reach != int(r.start)+int(r.count) {
			t.Fatalf("request %+v reads past its last tag (%d)", r, reach)
		}
	}
	for ti, n := range seen {
		if n != 1 {
			t.Fatalf("tag %d is in %d requests, want 1", ti, n)
		}
	}
	return len(g.reqs)
}

func TestPlannerIsOptimalOnHandBuiltLayouts(t *testing.T) {
	hr := func(offset, count int) span { return span{HoldingRegister, offset, count} }
	std := limits{maxGap: DefaultMaxGap, maxRegisters: MaxRegistersPerRequest, maxBits: MaxBitsPerRequest}
	with := func(gap, regs, bits int) limits { return limits{maxGap: gap, maxRegisters: regs, maxBits: bits} }
	var meter []span // an energy meter's map: 40 float32 every 2 registers, a hole, 10 more
	for i := range 40 {
		meter = append(meter, hr(2*i, 2))
	}
	for i := range 10 {
		meter = append(meter, hr(200+2*i, 2))
	}
	cases := []struct {
		name  string
		spans []span
		lim   limits
		want  int
	}{
		{"one block", []span{hr(0, 2), hr(2, 1), hr(3, 1)}, std, 1},
		{"gap of max_gap bridged, wider split", []span{hr(0, 1), hr(11, 1), hr(30, 1)}, std, 2},
		{"max_gap 0", []span{hr(0, 1), hr(1, 1), hr(3, 1), hr(4, 2)}, with(0, 125, 2000), 2},
		{"meter: 80 registers, hole, 20", meter, std, 2},
		{"meter with max_registers 32", meter, with(10, 32, 2000), 4},
		{"values never straddle a limit", []span{hr(0, 1), hr(1, 1), hr(2, 1), hr(3, 2), hr(5, 2)}, with(10, 4, 2000), 2},
		{"overlaps: status word and its bits", []span{hr(5, 1), hr(5, 1), hr(4, 2), hr(5, 1), hr(5, 1)}, std, 1},
		{"string over other tags", []span{hr(0, 8), hr(2, 1), hr(7, 2), hr(9, 1)}, with(0, 10, 2000), 1},
		{"long tag bridges a gap", []span{hr(0, 1), hr(0, 6), hr(5, 1)}, with(0, 125, 2000), 1},
		{"tables apart", []span{{Coil, 0, 1}, {Coil, 1, 1}, {DiscreteInput, 0, 1}, {InputRegister, 0, 2}, hr(0, 2)}, std, 4},
		{"coils by max_bits", []span{{Coil, 0, 1}, {Coil, 7, 1}, {Coil, 8, 1}, {Coil, 15, 1}, {Coil, 16, 1}}, with(10, 125, 8), 3},
		{"sparse at the limit", []span{hr(0, 1), hr(10, 1), hr(20, 1), hr(30, 1), hr(40, 1)}, with(10, 21, 2000), 2},
		{"sparse just past the limit", []span{hr(0, 1), hr(10, 1), hr(20, 1), hr(30, 1), hr(40, 1)}, with(10, 20, 2000), 3},
		{"six-digit offsets", []span{hr(65530, 2), hr(65534, 2)}, std, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if len(c.spans) <= 14 {
				if opt := optimalRequests(c.spans, c.lim); opt != c.want {
					t.Fatalf("brute force finds %d requests, the case says %d", opt, c.want)
				}
			}
			if got := planSpans(t, c.spans, c.lim); got != c.want {
				t.Errorf("planner makes %d requests, optimum %d", got, c.want)
			}
		})
	}
}

// TestPlannerIsOptimalOnRandomLayouts compares the planner with the brute
// force on random layouts: dense, sparse, overlapping, with long tags,
// small limits and several tables.
func TestPlannerIsOptimalOnRandomLayouts(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 1))
	for i := range 600 {
		lim := limits{maxGap: rng.IntN(5), maxRegisters: 1 + rng.IntN(16), maxBits: 1 + rng.IntN(16)}
		if rng.IntN(4) == 0 {
			lim.maxGap = DefaultMaxGap
		}
		n := 1 + rng.IntN(12)
		width := 4 + rng.IntN(40)
		tables := []Table{HoldingRegister}
		if rng.IntN(3) == 0 {
			tables = []Table{Coil, InputRegister, HoldingRegister}
		}
		var spans []span
		for range n {
			tb := tables[rng.IntN(len(tables))]
			limit := lim.maxRegisters
			count := 1 + rng.IntN(min(limit, 4))
			if rng.IntN(5) == 0 {
				count = 1 + rng.IntN(limit) // long: strings, float64s under a small limit
			}
			if tb.IsBit() {
				count = 1
			}
			spans = append(spans, span{tb, rng.IntN(width), count})
		}
		opt := optimalRequests(spans, lim)
		if got := planSpans(t, spans, lim); got != opt {
			t.Fatalf("case %d: planner makes %d requests, optimum %d\nlimits %+v\nspans %v", i, got, opt, lim, spans)
		}
	}
}
