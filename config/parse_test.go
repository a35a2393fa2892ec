package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const okDevices = `
devices:
  - name: d1
    modbus: { url: tcp://10.0.0.21 }
    tags: [{ name: t, address: 40001, type: uint16 }]
`

func parseOK(t *testing.T, text string) *Config {
	t.Helper()
	c, err := Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func problems(err error) []*Error {
	var out []*Error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			var ce *Error
			if errors.As(e, &ce) {
				out = append(out, ce)
			}
		}
	}
	return out
}

func TestParseReportsEveryProblemSortedByLine(t *testing.T) {
	_, err := Parse("plant.yaml", []byte(`devices:
  - name: d1
    modbus: { url: tcp://10.0.0.21, unit: 250 }
    tags: [{ name: t, address: 40001, type: flaot32 }]
gateway: { id: "bad id" }
mqtt: { url: "ftp://x" }
`))
	ps := problems(err)
	if len(ps) != 4 {
		t.Fatalf("got %d problems, want 4:\n%v", len(ps), err)
	}
	for i, want := range []struct {
		line int
		path string
	}{{3, "devices[0].modbus.unit"}, {4, "devices[0].tags[0].type"}, {5, "gateway.id"}, {6, "mqtt.url"}} {
		if p := ps[i]; p.File != "plant.yaml" || p.Line != want.line || p.Path != want.path || p.Column == 0 {
			t.Errorf("problem %d = %+v, want plant.yaml line %d path %s", i, p, want.line, want.path)
		}
	}
	if !strings.HasPrefix(err.Error(), "plant.yaml:3:") {
		t.Errorf("error text starts %q", err.Error())
	}
}

func TestNotSupportedIsDetectable(t *testing.T) {
	reserved[tagType] = map[string]string{"x_later": "x_later is"}
	defer delete(reserved, tagType)
	_, err := Parse("p.yaml", []byte("gateway: {id: g}\nmqtt: {url: tcp://b}\ndevices: [{name: d1, modbus: {url: tcp://10.0.0.21}, tags: [{name: t, address: 40001, type: uint16, x_later: true}]}]\n"))
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("errors.Is(ErrNotSupported) false for %v", err)
	}
	_, err = Parse("p.yaml", []byte("gateway: {id: g}\nmqtt: {url: tcp://b, format: xml}\n"+okDevices))
	if err == nil || errors.Is(err, ErrNotSupported) {
		t.Fatalf("format xml: got %v, want a plain error", err)
	}
}

func TestDefaultsKeepExplicitZeros(t *testing.T) {
	c := parseOK(t, `
gateway: { id: g }
mqtt: { url: tcp://b }
devices:
  - name: d1
    modbus: { url: tcp://10.0.0.21, unit: 0, max_gap: 0 }
    tags: [{ name: t, address: 40001, type: uint16 }]
  - name: d2
    modbus: { url: tcp://10.0.0.22, unit: ~ }
    tags: [{ name: t, address: 40001, type: uint16 }]
`)
	if m := c.Devices[0].Modbus; m.Unit != 0 || *m.MaxGap != 0 {
		t.Errorf("explicit unit 0 / max_gap 0 became %d / %d", m.Unit, *m.MaxGap)
	}
	if m := c.Devices[1].Modbus; m.Unit != 1 || *m.MaxGap != 10 || m.Timeout != time.Second || m.Poll != time.Second {
		t.Errorf("defaults not applied: %+v", m)
	}
	if c.MQTT.URL != "tcp://b:1883" {
		t.Errorf("mqtt url %q, want the default port added", c.MQTT.URL)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate on a loaded config: %v", err)
	}
}

func TestTLSDefaultPort(t *testing.T) {
	c := parseOK(t, "gateway: {id: g}\nmqtt: {url: 'tls://[::1]'}\n"+okDevices)
	if c.MQTT.URL != "tls://[::1]:8883" {
		t.Errorf("url %q", c.MQTT.URL)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	err := (&Config{}).Validate()
	ps := problems(err)
	if len(ps) == 0 {
		t.Fatal("zero Config validated")
	}
	for _, p := range ps {
		if p.File != "" || p.Line != 0 || p.Path == "" {
			t.Errorf("problem %+v: want a path and no position", p)
		}
	}
	if !strings.Contains(err.Error(), "gateway.id: required") {
		t.Errorf("missing gateway.id problem in:\n%v", err)
	}
}

func TestPasswordEnvExpansion(t *testing.T) {
	t.Setenv("FG_PW", "s3cret")
	for _, tc := range []struct{ in, want string }{
		{"${FG_PW}", "s3cret"},
		{"a-${FG_PW}-b", "a-s3cret-b"},
		{"pa$$word", "pa$$word"},
		{"$${FG_PW}", "${FG_PW}"},
	} {
		c := parseOK(t, "gateway: {id: g}\nmqtt: {url: tcp://b, username: u, password: '"+tc.in+"'}\n"+okDevices)
		if got := string(c.MQTT.Password); got != tc.want {
			t.Errorf("password %q expanded to %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{"${FG_UNSET_X}", "${", "${1A}"} {
		_, err := Parse("p.yaml", []byte("gateway: {id: g}\nmqtt: {url: tcp://b, username: u, password: '"+in+"'}\n"+okDevices))
		if err == nil || !strings.Contains(err.Error(), "mqtt.password:") {
			t.Errorf("password %q: got %v, want an mqtt.password error", in, err)
		}
	}
}

func TestPasswordFileIsRelativeToConfig(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("from-file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gw.yaml")
	text := "gateway: {id: g}\nbuffer: {path: buf.db}\nmqtt: {url: tcp://b, username: u, password_file: pw}\n" + okDevices
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.MQTT.Password) != "from-file" || c.Buffer.Path != filepath.Join(dir, "buf.db") || c.Source != path {
		t.Errorf("password %q, buffer %q, source %q", string(c.MQTT.Password), c.Buffer.Path, c.Source)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v", err)
	}
}

func TestAliasCycleIsAnError(t *testing.T) {
	for _, text := range []string{
		"gateway: &a {id: g, x: *a}\n",
		"gateway: &a {<<: *a, id: g}\n",
	} {
		if _, err := Parse("p.yaml", []byte(text)); err == nil {
			t.Errorf("%q: want an error", text)
		}
	}
}

func TestDeviceGetsPollAndTags(t *testing.T) {
	c := parseOK(t, "gateway: {id: g}\nmqtt: {url: tcp://b}\ndevices:\n  - name: d\n    poll: 250ms\n    modbus: {url: tcp://h}\n    tags: [{name: t, table: input, offset: 3, type: int32}]\n")
	m := c.Devices[0].Modbus
	if m.Poll != 250*time.Millisecond || len(m.Tags) != 1 || m.Tags[0].Name != "t" || *m.Tags[0].Offset != 3 {
		t.Errorf("modbus config: %+v", m)
	}
}

// A small file must not expand into millions of tags through aliases.
func TestAliasBombIsRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("gateway: {id: g}\nmqtt: {url: tcp://b}\nx-t: &t {name: a, address: 40001, type: uint16}\nx-ts: &ts [*t")
	b.WriteString(strings.Repeat(", *t", 499))
	b.WriteString("]\ndevices:\n")
	b.WriteString(strings.Repeat("  - {name: d, modbus: {url: tcp://h}, tags: *ts}\n", 500))
	_, err := Parse("b.yaml", []byte(b.String()))
	if !errors.Is(err, errTooBig) || strings.Count(err.Error(), "\n") != 0 {
		t.Fatalf("got %.300v", err)
	}
}

// Sharing one tag list between identical devices through an alias is fine.
func TestAliasSharedTagList(t *testing.T) {
	var b strings.Builder
	b.WriteString("gateway: {id: g}\nmqtt: {url: tcp://b}\nx-ts: &ts\n")
	for i := range 100 {
		b.WriteString("  - {name: t" + strings.Repeat("x", i) + ", address: 40001, type: uint16}\n")
	}
	b.WriteString("devices:\n")
	for i := range 30 {
		b.WriteString("  - {name: d" + strings.Repeat("x", i) + ", modbus: {url: tcp://h}, tags: *ts}\n")
	}
	c := parseOK(t, b.String())
	if len(c.Devices) != 30 || len(c.Devices[29].Modbus.Tags) != 100 {
		t.Fatalf("got %d devices", len(c.Devices))
	}
}

func TestPollOffset(t *testing.T) {
	c := parseOK(t, `gateway: { id: g }
mqtt: { url: tcp://b }
devices:
  - name: d1
    modbus: { url: tcp://10.0.0.21 }
    poll: 1s
    poll_offset: 250ms
    tags: [{ name: t, address: 40001, type: uint16 }]
`)
	if got := c.Devices[0].PollOffset; got != 250*time.Millisecond {
		t.Errorf("poll_offset %v, want 250ms", got)
	}
	for _, bad := range []string{"-1s", "1s", "600ms"} {
		_, err := Parse("plant.yaml", []byte(`gateway: { id: g }
mqtt: { url: tcp://b }
devices:
  - name: d1
    modbus: { url: tcp://10.0.0.21 }
    poll: 1s
    poll_offset: `+bad+`
    tags:
      - { name: t, address: 40001, type: uint16 }
      - { name: fast, address: 40002, type: uint16, poll: 500ms }
`))
		ps := problems(err)
		if len(ps) != 1 || ps[0].Path != "devices[0].poll_offset" || ps[0].Line != 7 ||
			!strings.Contains(ps[0].Error(), "less than the device's shortest poll interval 500ms") {
			t.Errorf("poll_offset %s: %v, want one error at devices[0].poll_offset, line 7, naming 500ms", bad, err)
		}
	}
}
