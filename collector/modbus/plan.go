package modbus

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Plan is a device's read plan: its tags grouped by poll interval, and each
// group's tags merged into as few read requests as the limits allow. New
// computes it once; it never changes.
type Plan struct {
	Device string
	Groups []PlanGroup
}

// PlanGroup is the tags that share one poll interval. Its index in
// Plan.Groups is the group number Driver.Read takes.
type PlanGroup struct {
	Poll     time.Duration
	Tags     []string // in the order Read reports them (the configuration's order)
	Requests []Request
}

// Request is one read request of a poll cycle.
type Request struct {
	Table Table
	Start uint16   // first register or bit, zero-based
	Count uint16   // registers or bits
	Tags  []string // the tags it covers, by offset
}

// Function returns the Modbus function code that reads r's table.
func (r Request) Function() byte {
	switch r.Table {
	case Coil:
		return 1
	case DiscreteInput:
		return 2
	case HoldingRegister:
		return 3
	case InputRegister:
		return 4
	}
	return 0
}

// Requests returns how many requests one cycle of every group makes.
func (p Plan) Requests() int {
	n := 0
	for _, g := range p.Groups {
		n += len(g.Requests)
	}
	return n
}

// Format writes p for people: a line for the device, then one per group
// and per request, e.g.
//
//	device press-1: 1 group, 1 request per cycle
//	group 0: poll 1s, 3 tags, 1 request
//	  fc3 read holding registers 0..9 (40001..40010), 10 registers: oil_temp, speed
func (p Plan) Format(w io.Writer) error {
	_, err := io.WriteString(w, p.String())
	return err
}

// String returns what Format writes.
func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "device %s: %s, %s per cycle\n", p.Device, plural(len(p.Groups), "group"), plural(p.Requests(), "request"))
	for i, g := range p.Groups {
		fmt.Fprintf(&b, "group %d: poll %s, %s, %s\n", i, g.Poll, plural(len(g.Tags), "tag"), plural(len(g.Requests), "request"))
		for _, r := range g.Requests {
			unit := "register"
			what := "registers"
			switch r.Table {
			case Coil:
				unit, what = "bit", "coils"
			case DiscreteInput:
				unit, what = "bit", "discrete inputs"
			case InputRegister:
				what = "input registers"
			case HoldingRegister:
				what = "holding registers"
			}
			last := r.Start + r.Count - 1
			fmt.Fprintf(&b, "  fc%d read %s %d..%d (%s), %s: %s\n", r.Function(), what, r.Start, last,
				modiconRange(r.Table, r.Start, last), plural(int(r.Count), unit), strings.Join(r.Tags, ", "))
		}
	}
	return b.String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// modiconRange writes the Modicon addresses of offsets first..last of t,
// in the five-digit form when both fit it, else the six-digit form.
func modiconRange(t Table, first, last uint16) string {
	base := map[Table]uint32{Coil: 0, DiscreteInput: 1, InputRegister: 3, HoldingRegister: 4}[t]
	if last <= 9998 {
		return fmt.Sprintf("%d..%d", base*10000+uint32(first)+1, base*10000+uint32(last)+1)
	}
	return fmt.Sprintf("%06d..%06d", base*100000+uint32(first)+1, base*100000+uint32(last)+1)
}

// group is one poll group as the driver reads it.
type group struct {
	poll time.Duration
	tags []tag // configuration order: the order of Read's points
	reqs []request
}

// request is one read of a group; tags index group.tags.
type request struct {
	table Table
	start uint16
	count uint16
	tags  []int
}

// limits bounds how requests are merged.
type limits struct {
	maxGap       int
	maxRegisters int
	maxBits      int
}

// plan groups tags by poll interval (groups sorted by interval) and merges
// each group's tags, per table and by offset, into the fewest requests that
// stay within the limits and skip at most maxGap unused registers or bits
// between tags. Tags may overlap. Tags must already fit the limits.
//
// The greedy merge is optimal: a request starts at the first tag (by
// offset, then end) that no earlier request holds and takes each following
// tag that fits. A tag refused for the gap shares no request with any tag
// before it, since none of those reaches across the gap; a tag refused for
// the length cannot share one with the request's first tag, so some request
// must start at or before its offset, and starting exactly there leaves the
// most room for the tags after it (any tag before it that ends inside it is
// covered either way). TestPlannerIsOptimalOnRandomLayouts checks this
// against an exhaustive search that also lets requests overlap.
func plan(tags []tag, polls []time.Duration, lim limits) []group {
	var groups []group
	for i := range tags {
		gi := slices.IndexFunc(groups, func(g group) bool { return g.poll == polls[i] })
		if gi < 0 {
			groups = append(groups, group{poll: polls[i]})
			gi = len(groups) - 1
		}
		groups[gi].tags = append(groups[gi].tags, tags[i])
	}
	slices.SortStableFunc(groups, func(a, b group) int { return cmp.Compare(a.poll, b.poll) })
	for gi := range groups {
		g := &groups[gi]
		g.tags = slices.Clone(g.tags) // exactly sized: kept for the driver's life
		order := make([]int, len(g.tags))
		for i := range order {
			order[i] = i
		}
		slices.SortStableFunc(order, func(a, b int) int {
			ta, tb := &g.tags[a], &g.tags[b]
			return cmp.Or(cmp.Compare(ta.table, tb.table), cmp.Compare(ta.offset, tb.offset), cmp.Compare(ta.end(), tb.end()))
		})
		var cur *request
		curEnd := 0
		for _, ti := range order {
			t := &g.tags[ti]
			limit := lim.maxRegisters
			if t.table.IsBit() {
				limit = lim.maxBits
			}
			if cur != nil && cur.table == t.table && int(t.offset)-curEnd <= lim.maxGap &&
				max(curEnd, t.end())-int(cur.start) <= limit {
				cur.tags = append(cur.tags, ti)
				curEnd = max(curEnd, t.end())
				cur.count = uint16(curEnd - int(cur.start))
				continue
			}
			g.reqs = append(g.reqs, request{table: t.table, start: t.offset, count: t.count, tags: []int{ti}})
			cur = &g.reqs[len(g.reqs)-1]
			curEnd = t.end()
		}
	}
	return groups
}
