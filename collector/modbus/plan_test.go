package modbus

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func u16(v uint16) *uint16 { return &v }
func u8(v uint8) *uint8    { return &v }

// hr is a holding-register tag at offset.
func hr(name string, offset uint16, typ Type) Tag {
	return Tag{Name: name, Table: HoldingRegister, Offset: u16(offset), Type: typ}
}

func seqTags(prefix string, table Table, from, n int, typ Type) []Tag {
	var tags []Tag
	for i := range n {
		tags = append(tags, Tag{Name: prefix + itoa(from+i), Table: table, Offset: u16(uint16(from + i)), Type: typ})
	}
	return tags
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func names(tags []Tag) []string {
	var n []string
	for _, t := range tags {
		n = append(n, t.Name)
	}
	return n
}

func TestPlanner(t *testing.T) {
	sec := time.Second
	many := seqTags("r", HoldingRegister, 0, 130, TypeUint16)
	coils := seqTags("c", Coil, 0, 2001, TypeBool)
	cases := []struct {
		name string
		cfg  Config
		want []PlanGroup
	}{{
		name: "adjacent tags merge",
		cfg:  Config{Tags: []Tag{hr("a", 0, TypeFloat32), hr("b", 2, TypeUint16), hr("c", 3, TypeInt16)}},
		want: []PlanGroup{{Poll: sec, Tags: []string{"a", "b", "c"}, Requests: []Request{
			{HoldingRegister, 0, 4, []string{"a", "b", "c"}},
		}}},
	}, {
		name: "gap of max_gap merges, a wider gap splits",
		cfg:  Config{Tags: []Tag{hr("far", 30, TypeUint16), hr("a", 0, TypeUint16), hr("b", 11, TypeUint16)}},
		want: []PlanGroup{{Poll: sec, Tags: []string{"far", "a", "b"}, Requests: []Request{
			{HoldingRegister, 0, 12, []string{"a", "b"}},
			{HoldingRegister, 30, 1, []string{"far"}},
		}}},
	}, {
		name: "max_gap 0 merges only adjacent tags",
		cfg:  Config{MaxGap: u16(0), Tags: []Tag{hr("a", 0, TypeUint16), hr("b", 1, TypeUint16), hr("c", 3, TypeUint16)}},
		want: []PlanGroup{{Poll: sec, Tags: []string{"a", "b", "c"}, Requests: []Request{
			{HoldingRegister, 0, 2, []string{"a", "b"}},
			{HoldingRegister, 3, 1, []string{"c"}},
		}}},
	}, {
		name: "125 registers per request",
		cfg:  Config{Tags: many},
		want: []PlanGroup{{Poll: sec, Tags: names(many), Requests: []Request{
			{HoldingRegister, 0, 125, names(many[:125])},
			{HoldingRegister, 125, 5, names(many[125:])},
		}}},
	}, {
		name: "max_registers lowers the limit",
		cfg:  Config{MaxRegisters: 50, Tags: many},
		want: []PlanGroup{{Poll: sec, Tags: names(many), Requests: []Request{
			{HoldingRegister, 0, 50, names(many[:50])},
			{HoldingRegister, 50, 50, names(many[50:100])},
			{HoldingRegister, 100, 30, names(many[100:])},
		}}},
	}, {
		name: "a value never straddles two requests",
		cfg:  Config{MaxRegisters: 4, Tags: []Tag{hr("a", 0, TypeUint16), hr("b", 1, TypeUint16), hr("c", 2, TypeUint16), hr("f", 3, TypeFloat32)}},
		want: []PlanGroup{{Poll: sec, Tags: []string{"a", "b", "c", "f"}, Requests: []Request{
			{HoldingRegister, 0, 3, []string{"a", "b", "c"}},
			{HoldingRegister, 3, 2, []string{"f"}},
		}}},
	}, {
		name: "2000 bits per request, max_bits lowers it",
		cfg:  Config{Tags: coils},
		want: []PlanGroup{{Poll: sec, Tags: names(coils), Requests: []Request{
			{Coil, 0, 2000, names(coils[:2000])},
			{Coil, 2000, 1, names(coils[2000:])},
		}}},
	}, {
		name: "overlapping tags and bits of one register",
		cfg: Config{Tags: []Tag{
			hr("word", 5, TypeUint16), hr("signed", 5, TypeInt16), hr("pair", 4, TypeFloat32),
			{Name: "bit0", Table: HoldingRegister, Offset: u16(5), Type: TypeBool, Bit: u8(0)},
			{Name: "bit15", Address: 40006, Type: TypeBool, Bit: u8(15)},
		}},
		want: []PlanGroup{{Poll: sec, Tags: []string{"word", "signed", "pair", "bit0", "bit15"}, Requests: []Request{
			{HoldingRegister, 4, 2, []string{"pair", "word", "signed", "bit0", "bit15"}},
		}}},
	}, {
		name: "tables are read separately, in function code order",
		cfg: Config{Tags: []Tag{
			{Name: "h", Address: 40001, Type: TypeUint16}, {Name: "i", Address: 30001, Type: TypeUint16},
			{Name: "d", Address: 10001, Type: TypeBool}, {Name: "c", Address: 1, Type: TypeBool},
			{Name: "d2", Address: 10003}, // type defaults to bool on a bit table
		}},
		want: []PlanGroup{{Poll: sec, Tags: []string{"h", "i", "d", "c", "d2"}, Requests: []Request{
			{Coil, 0, 1, []string{"c"}},
			{DiscreteInput, 0, 3, []string{"d", "d2"}},
			{InputRegister, 0, 1, []string{"i"}},
			{HoldingRegister, 0, 1, []string{"h"}},
		}}},
	}, {
		name: "groups by poll interval, shortest first",
		cfg: Config{Tags: []Tag{
			hr("slow", 0, TypeUint16), {Name: "fast", Table: HoldingRegister, Offset: u16(1), Type: TypeUint16, Poll: 100 * time.Millisecond},
			hr("slow2", 2, TypeUint16), {Name: "ten", Table: HoldingRegister, Offset: u16(3), Type: TypeUint16, Poll: 10 * time.Second},
		}},
		want: []PlanGroup{
			{Poll: 100 * time.Millisecond, Tags: []string{"fast"}, Requests: []Request{{HoldingRegister, 1, 1, []string{"fast"}}}},
			{Poll: sec, Tags: []string{"slow", "slow2"}, Requests: []Request{{HoldingRegister, 0, 3, []string{"slow", "slow2"}}}},
			{Poll: 10 * time.Second, Tags: []string{"ten"}, Requests: []Request{{HoldingRegister, 3, 1, []string{"ten"}}}},
		},
	}, {
		name: "strings and six-digit addresses",
		cfg: Config{Tags: []Tag{
			{Name: "recipe", Address: 40011, Type: TypeString, Length: 4}, {Name: "after", Address: 40015, Type: TypeUint16},
			{Name: "high", Address: 465536, Type: TypeUint16},
		}},
		want: []PlanGroup{{Poll: sec, Tags: []string{"recipe", "after", "high"}, Requests: []Request{
			{HoldingRegister, 10, 5, []string{"recipe", "after"}},
			{HoldingRegister, 65535, 1, []string{"high"}},
		}}},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.URL = "tcp://127.0.0.1"
			c.cfg.Poll = time.Second
			d, err := New("dev", c.cfg, discard())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, d.Plan().Groups); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			var polls []time.Duration
			for _, g := range c.want {
				polls = append(polls, g.Poll)
			}
			if diff := cmp.Diff(polls, d.Groups()); diff != "" {
				t.Errorf("Groups (-want +got):\n%s", diff)
			}
			for gi, g := range c.want {
				var got []string
				for _, ti := range d.Tags(gi) {
					got = append(got, ti.Name)
				}
				if diff := cmp.Diff(g.Tags, got); diff != "" {
					t.Errorf("Tags(%d) (-want +got):\n%s", gi, diff)
				}
			}
		})
	}
}

func TestPlanFormat(t *testing.T) {
	cfg := Config{URL: "tcp://127.0.0.1", Poll: time.Second, Tags: []Tag{
		{Name: "oil_temp", Address: 40001, Type: TypeFloat32, Order: CDAB},
		{Name: "speed", Table: HoldingRegister, Offset: u16(9), Type: TypeUint16},
		{Name: "running", Address: 10001, Type: TypeBool, Poll: 100 * time.Millisecond},
		{Name: "high", Address: 410000, Type: TypeUint16},
	}}
	d, err := New("press-1", cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	want := `device press-1: 2 groups, 3 requests per cycle
group 0: poll 100ms, 1 tag, 1 request
  fc2 read discrete inputs 0..0 (10001..10001), 1 bit: running
group 1: poll 1s, 3 tags, 2 requests
  fc3 read holding registers 0..9 (40001..40010), 10 registers: oil_temp, speed
  fc3 read holding registers 9999..9999 (410000..410000), 1 register: high
`
	var b strings.Builder
	if err := d.Plan().Format(&b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("Format (-want +got):\n%s", diff)
	}
	if n := d.Plan().Requests(); n != 3 {
		t.Errorf("Requests() = %d, want 3", n)
	}
}

func TestNewRejects(t *testing.T) {
	ok := []Tag{hr("a", 0, TypeUint16)}
	cases := map[string]Config{
		"unknown scheme":   {URL: "udp://h:502", Tags: ok},
		"no host":          {URL: "tcp://", Tags: ok},
		"no address":       {URL: "tcp://h", Tags: []Tag{{Name: "x", Type: TypeUint16}}},
		"bad modicon":      {URL: "tcp://h", Tags: []Tag{{Name: "x", Address: 20001}}},
		"string too long":  {URL: "tcp://h", Tags: []Tag{{Name: "x", Address: 40001, Type: TypeString, Length: 126}}},
		"string no length": {URL: "tcp://h", Tags: []Tag{{Name: "x", Address: 40001, Type: TypeString}}},
		"bit 16":           {URL: "tcp://h", Tags: []Tag{{Name: "x", Address: 40001, Type: TypeBool, Bit: u8(16)}}},
		"float on coil":    {URL: "tcp://h", Tags: []Tag{{Name: "x", Address: 1, Type: TypeFloat32}}},
		"past the end":     {URL: "tcp://h", Tags: []Tag{{Name: "x", Address: 465536, Type: TypeFloat32}}},
		"no tags":          {URL: "tcp://h"},
	}
	for name, cfg := range cases {
		cfg.Poll = time.Second
		if _, err := New("dev", cfg, discard()); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
