package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestByteSizeParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
	}{
		{"1048576", 1 << 20},
		{"1GiB", 1 << 30},
		{"256MiB", 256 << 20},
		{"500MB", 500e6},
		{"64 KiB", 64 << 10},
		{"1gib", 1 << 30},
		{"1.5GiB", 3 << 29},
		{"2TB", 2e12},
		{"0", 0},
		{"10B", 10},
	} {
		var got ByteSize
		if err := got.UnmarshalText([]byte(tc.in)); err != nil || got != tc.want {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "GiB", "-1MiB", "1 GiBs", "lots", "NaN", "Inf", "0x10", "1e30GiB", "9223372036854775807KiB"} {
		var got ByteSize
		if err := got.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) = %d, want an error", in, got)
		}
	}
}

func TestByteSizeStringRoundTrips(t *testing.T) {
	for _, s := range []ByteSize{0, 1, 1000, 1024, 1 << 30, 500e6, 1000001, 3 << 29} {
		var back ByteSize
		if err := back.UnmarshalText([]byte(s.String())); err != nil || back != s {
			t.Errorf("%d prints as %q, which parses as %d, %v", int64(s), s, back, err)
		}
	}
	if got := ByteSize(1 << 30).String(); got != "1GiB" {
		t.Errorf("1<<30 prints as %q, want 1GiB", got)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c := Config{MQTT: MQTT{Username: "u", Password: "hunter2"}, API: API{Token: "tok3n"}}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	ys, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{
		fmt.Sprint(c), fmt.Sprintf("%v", &c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c),
		fmt.Sprintf("%s", c.MQTT.Password), string(js), string(ys),
	} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "tok3n") {
			t.Errorf("secret printed: %s", out)
		}
	}
	if string(c.MQTT.Password) != "hunter2" {
		t.Error("string(Secret) must give the value")
	}
	if Secret("").String() != "" {
		t.Error("an empty secret should print as empty, so that its absence shows")
	}
}
