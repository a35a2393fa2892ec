package telemetry

import "testing"

func TestQualityString(t *testing.T) {
	cases := map[Quality]string{
		Good:                     "good",
		Bad | ReasonTimeout:      "bad:timeout",
		Bad | ReasonNoConnection: "bad:no_connection",
		Uncertain | ReasonStale:  "uncertain:stale",
		Bad | 0x3f:               "bad:reason_63",
		0xC0:                     "bad",
	}
	for q, want := range cases {
		if got := q.String(); got != want {
			t.Errorf("Quality(%#x).String() = %q, want %q", uint8(q), got, want)
		}
	}
	if !Good.IsGood() || (Bad | ReasonTimeout).IsGood() || Uncertain.IsGood() {
		t.Error("IsGood is wrong")
	}
}

func TestValueConversions(t *testing.T) {
	if v := Int(-3); v.AsFloat() != -3 || v.AsInt() != -3 || v.String() != "-3" {
		t.Errorf("Int(-3) = %v / %v / %q", v.AsFloat(), v.AsInt(), v.String())
	}
	if v := Float(2.5); v.AsInt() != 2 || v.String() != "2.5" || v.Kind() != KindFloat {
		t.Errorf("Float(2.5) = %v / %q / %v", v.AsInt(), v.String(), v.Kind())
	}
	if v := Bool(true); !v.AsBool() || v.AsFloat() != 1 || v.String() != "true" {
		t.Errorf("Bool(true) = %v / %v / %q", v.AsBool(), v.AsFloat(), v.String())
	}
	if v := (Value{}); !v.IsNone() || v.String() != "none" {
		t.Errorf("zero Value = %v / %q", v.IsNone(), v.String())
	}
	if v := Float32(0.1); v.String() != "0.1" || !v.IsFloat32() || v.AsFloat() != float64(float32(0.1)) {
		t.Errorf("Float32(0.1) = %q / %v / %v", v.String(), v.IsFloat32(), v.AsFloat())
	}
	if v := String("x"); v.AsString() != "x" || v.Kind() != KindString {
		t.Errorf("String(x) = %q / %v", v.AsString(), v.Kind())
	}
}
