package telemetry

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sampleBatch() Batch {
	t0 := time.Unix(1764100000, 123456789)
	return Batch{
		Device: "press-1",
		Points: []Point{
			{Tag: "running", Value: Bool(true), Time: t0},
			{Tag: "stopped", Value: Bool(false), Time: t0},
			{Tag: "count", Value: Int(-42), Time: t0.Add(time.Millisecond), Unit: "pcs"},
			{Tag: "total", Value: Uint(math.MaxUint64), Time: t0.Add(-time.Second)},
			{Tag: "oil_temp", Value: Float(42.25), Time: t0, Unit: "degC"},
			{Tag: "nan", Value: Float(math.NaN()), Time: t0},
			{Tag: "f32", Value: Float32(0.1), Time: t0},
			{Tag: "f32nan", Value: Float32(float32(math.NaN())), Time: t0},
			{Tag: "recipe", Value: String("PN-4711"), Time: t0},
			{Tag: "lost", Quality: Bad | ReasonTimeout, Time: t0},
			{Tag: "zero-time", Value: Int(1)},
		},
	}
}

// equalBatch compares batches with time.Time by instant and Value by bits.
func equalBatch(t *testing.T, got, want Batch) {
	t.Helper()
	if diff := cmp.Diff(want, got,
		cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
		cmp.Comparer(func(a, b Value) bool { return a.Equal(b) })); diff != "" {
		t.Fatalf("batch mismatch (-want +got):\n%s", diff)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, b := range []Batch{sampleBatch(), {Device: "empty"}, {}} {
		enc := AppendBatch(nil, &b)
		var got Batch
		if err := DecodeBatch(enc, &got); err != nil {
			t.Fatalf("decode %q: %v", b.Device, err)
		}
		if len(b.Points) == 0 {
			b.Points = got.Points[:0] // nil and empty are the same batch
			if len(got.Points) != 0 {
				t.Fatalf("decoded %d points from an empty batch", len(got.Points))
			}
		}
		equalBatch(t, got, b)
		n, err := BatchPointCount(enc)
		if err != nil || n != len(b.Points) {
			t.Fatalf("BatchPointCount = %d, %v; want %d", n, err, len(b.Points))
		}
	}
}

func TestCodecReusesPoints(t *testing.T) {
	b := sampleBatch()
	enc := AppendBatch(nil, &b)
	got := Batch{Points: make([]Point, 0, 64)}
	p := &got.Points[:1][0]
	if err := DecodeBatch(enc, &got); err != nil {
		t.Fatal(err)
	}
	if &got.Points[0] != p {
		t.Fatal("DecodeBatch did not reuse the Points capacity")
	}
}

func TestDecodeRejectsCorruptInput(t *testing.T) {
	b := sampleBatch()
	enc := AppendBatch(nil, &b)
	cases := map[string][]byte{
		"empty":        {},
		"bad version":  append([]byte{9}, enc[1:]...),
		"truncated":    enc[:len(enc)-1],
		"trailing":     append(append([]byte{}, enc...), 0),
		"huge count":   {codecVersion, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge string":  {codecVersion, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"unknown kind": {codecVersion, 0, 0, 1, 0, 0, 0, 0x3f, 0},
		"flag on int":  {codecVersion, 0, 0, 1, 0, 0, 0, byte(KindInt) | 0x80, 0, 0},
	}
	for name, in := range cases {
		var got Batch
		if err := DecodeBatch(in, &got); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestAppendBatchDoesNotAllocate(t *testing.T) {
	b := sampleBatch()
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() { buf = AppendBatch(buf[:0], &b) })
	if allocs != 0 {
		t.Fatalf("AppendBatch allocated %.1f times per call, want 0", allocs)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	b := sampleBatch()
	f.Add(AppendBatch(nil, &b))
	f.Add(AppendBatch(nil, &Batch{Device: "d"}))
	f.Add([]byte{codecVersion})
	f.Fuzz(func(t *testing.T, in []byte) {
		var got Batch
		if err := DecodeBatch(in, &got); err != nil {
			return
		}
		// Whatever decodes must encode back to a batch that decodes the same.
		again := AppendBatch(nil, &got)
		var got2 Batch
		if err := DecodeBatch(again, &got2); err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		equalBatch(t, got2, got)
	})
}

func BenchmarkAppendBatch(b *testing.B) {
	batch := benchBatch(120)
	buf := AppendBatch(nil, &batch)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBatch(buf[:0], &batch)
	}
}

func BenchmarkDecodeBatch(b *testing.B) {
	batch := benchBatch(120)
	buf := AppendBatch(nil, &batch)
	var out Batch
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeBatch(buf, &out); err != nil {
			b.Fatal(err)
		}
	}
}

func benchBatch(n int) Batch {
	t0 := time.Now()
	b := Batch{Device: "device-001", Points: make([]Point, n)}
	for i := range b.Points {
		b.Points[i] = Point{Tag: "reg" + string(rune('a'+i%26)) + "00" + string(rune('0'+i%10)), Value: Float(float64(i) * 1.5), Time: t0, Unit: "bar"}
	}
	return b
}

// BenchmarkDecodeBatchFresh decodes into a new Batch each time, as the
// buffer's Peek does for every record it returns.
func BenchmarkDecodeBatchFresh(b *testing.B) {
	batch := registerBatch(120)
	buf := AppendBatch(nil, &batch)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		var out Batch
		if err := DecodeBatch(buf, &out); err != nil {
			b.Fatal(err)
		}
	}
}
