package telemetry

import (
	"encoding/binary"
	"math"
	"testing"
)

// appendBatchV1 is AppendBatch as version 1 wrote it, kept to prove that
// buffer files written before version 2 still decode.
func appendBatchV1(dst []byte, b *Batch) []byte {
	dst = append(dst, codecV1)
	dst = appendString(dst, b.Device)
	var base int64
	if len(b.Points) > 0 {
		base = unixNano(b.Points[0].Time)
	}
	dst = binary.AppendVarint(dst, base)
	dst = binary.AppendUvarint(dst, uint64(len(b.Points)))
	for i := range b.Points {
		p := &b.Points[i]
		dst = appendString(dst, p.Tag)
		dst = appendString(dst, p.Unit)
		dst = append(dst, byte(p.Quality))
		k := byte(p.Value.kind)
		if (p.Value.kind == KindBool && p.Value.bits != 0) || p.Value.f32 {
			k |= 0x80
		}
		dst = append(dst, k)
		switch p.Value.kind {
		case KindInt:
			dst = binary.AppendVarint(dst, int64(p.Value.bits))
		case KindUint:
			dst = binary.AppendUvarint(dst, p.Value.bits)
		case KindFloat:
			if p.Value.f32 {
				dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(math.Float64frombits(p.Value.bits))))
			} else {
				dst = binary.LittleEndian.AppendUint64(dst, p.Value.bits)
			}
		case KindString:
			dst = appendString(dst, p.Value.str)
		}
		dst = binary.AppendVarint(dst, unixNano(p.Time)-base)
	}
	return dst
}

func TestDecodeVersion1(t *testing.T) {
	want := sampleBatch()
	enc := appendBatchV1(nil, &want)
	var got Batch
	if err := DecodeBatch(enc, &got); err != nil {
		t.Fatal(err)
	}
	equalBatch(t, got, want)
	if n, err := BatchPointCount(enc); err != nil || n != len(want.Points) {
		t.Fatalf("BatchPointCount = %d, %v", n, err)
	}
}

func TestVersion2IsSmaller(t *testing.T) {
	b := registerBatch(120)
	v1, v2 := len(appendBatchV1(nil, &b)), len(AppendBatch(nil, &b))
	per := float64(v2) / float64(len(b.Points))
	t.Logf("120 uint16 registers: version 1 %d bytes, version 2 %d bytes (%.1f per point)", v1, v2, per)
	if per > 8 {
		t.Errorf("version 2 takes %.1f bytes per uint16 register, want ≤ 8", per)
	}
}

// TestDecodeDoesNotAllocate: decoding a device's batches into the Batch that
// held the previous one, as a replay loop does, allocates nothing.
func TestDecodeDoesNotAllocate(t *testing.T) {
	for _, tc := range []struct {
		name string
		enc  func([]byte, *Batch) []byte
	}{{"v1", appendBatchV1}, {"v2", AppendBatch}} {
		b := registerBatch(120)
		b.Points[3].Unit = "bar"
		b.Points[7].Quality = Bad | ReasonTimeout
		enc := tc.enc(nil, &b)
		var out Batch
		if err := DecodeBatch(enc, &out); err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(100, func() {
			if err := DecodeBatch(enc, &out); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: DecodeBatch into a reused Batch allocated %.1f times per call, want 0", tc.name, allocs)
		}
		equalBatch(t, out, b)
	}
}

func TestDecodeRejectsBadPrefix(t *testing.T) {
	b := Batch{Device: "d", Points: []Point{{Tag: "abc", Value: Uint(1)}, {Tag: "abd", Value: Uint(2)}}}
	enc := AppendBatch(nil, &b)
	hdr := AppendBatch(nil, &Batch{Device: "d"})
	// header = version, device, base, count(0); with 2 points the count is
	// still one byte, so the first head is at len(hdr).
	bad := append([]byte(nil), enc...)
	bad[len(hdr)+1] = 5 // shares 5 bytes of an empty previous tag
	var got Batch
	if err := DecodeBatch(bad, &got); err == nil {
		t.Fatal("decoded a tag sharing bytes with nothing")
	}
}

func registerBatch(n int) Batch {
	b := Batch{Device: "d042", Points: make([]Point, n)}
	t0 := fromUnixNano(1764100000123000000)
	for i := range b.Points {
		b.Points[i] = Point{Tag: "r" + string([]byte{'0' + byte(i/100%10), '0' + byte(i/10%10), '0' + byte(i%10)}), Value: Uint(uint64(i * 37)), Time: t0}
	}
	return b
}

// TestDecodeFreshBatchAllocations: decoding into an empty Batch (as the
// buffer's Peek does) allocates the Points and one block for all the new
// strings, not one string per tag.
func TestDecodeFreshBatchAllocations(t *testing.T) {
	b := registerBatch(120)
	b.Points[3].Unit = "bar"
	b.Points[9].Value = String("recipe-7")
	enc := AppendBatch(nil, &b)
	allocs := testing.AllocsPerRun(100, func() {
		var out Batch
		if err := DecodeBatch(enc, &out); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Errorf("DecodeBatch into a fresh Batch allocated %.1f times per call, want ≤ 2 (points, strings)", allocs)
	}
	var out Batch
	if err := DecodeBatch(enc, &out); err != nil {
		t.Fatal(err)
	}
	equalBatch(t, out, b)
}
