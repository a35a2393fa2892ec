package config

import (
	"strings"
	"testing"
	"time"
)

// TestOPCUAWriteKeys decodes the write keys of an OPC UA tag, which has no
// type in the config: min and max are taken as they are.
func TestOPCUAWriteKeys(t *testing.T) {
	c := parseOK(t, `
gateway: { id: g }
mqtt: { url: tcp://b }
devices:
  - name: cnc-2
    opcua: { url: "opc.tcp://10.0.0.30:4840" }
    tags:
      - { name: feed, node: "ns=3;i=1003", writable: true, min: -5.5, max: 5.5, rate_limit: 100/h, verify: true }
      - { name: spindle, node: "ns=3;i=1004" }
`)
	tags := c.Devices[0].OPCUA.Tags
	if f := tags[0]; !f.Writable || f.Min == nil || *f.Min != -5.5 || f.Max == nil || *f.Max != 5.5 || f.RateLimit != "100/h" || !f.Verify {
		t.Errorf("feed: %+v", f)
	}
	if s := tags[1]; s.Writable || s.Min != nil || s.Max != nil || s.RateLimit != "" || s.Verify {
		t.Errorf("spindle: %+v, want no write settings", s)
	}
}

func TestParseRateLimit(t *testing.T) {
	for _, c := range []struct {
		in  string
		n   int
		per time.Duration
	}{{"1/s", 1, time.Second}, {"10/min", 10, time.Minute}, {"100/h", 100, time.Hour}, {" 5 / minute ", 5, time.Minute}, {"3/hour", 3, time.Hour}, {"2/second", 2, time.Second}} {
		n, per, err := ParseRateLimit(c.in)
		if err != nil || n != c.n || per != c.per {
			t.Errorf("ParseRateLimit(%q) = %d, %v, %v; want %d, %v", c.in, n, per, err, c.n, c.per)
		}
	}
	for _, bad := range []string{"", "1", "/s", "x/s", "1/d", "0/s", "-1/s", "10001/s", "1.5/s", "1/s/s"} {
		if _, _, err := ParseRateLimit(bad); err == nil {
			t.Errorf("ParseRateLimit(%q) accepted", bad)
		}
	}
}

// TestAuditDefaults puts the audit log beside the buffer file, resolved
// against the config file's folder like the buffer.
func TestAuditDefaults(t *testing.T) {
	c, err := Parse("/etc/fieldgate/gw.yaml", []byte("gateway: {id: g}\nbuffer: {path: data/buffer.db}\nmqtt: {url: tcp://b}\n"+okDevices))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Audit; a.Path != "/etc/fieldgate/data/audit.log" || a.MaxBytes != DefaultAuditBytes || a.Files != DefaultAuditFiles {
		t.Errorf("audit defaults: %+v", a)
	}
	_, err = Parse("gw.yaml", []byte("gateway: {id: g}\naudit: {path: '', max_bytes: 1KiB, files: 0}\nmqtt: {url: tcp://b}\n"+okDevices))
	for _, want := range []string{"audit.path: must not be empty", "audit.max_bytes: must be at least 64KiB, got 1KiB", "audit.files: must be 1..100, got 0"} {
		if err == nil || !strings.Contains(strings.Join(problemTexts(err), "\n"), want) {
			t.Errorf("no problem %q in %v", want, err)
		}
	}
}

func problemTexts(err error) []string {
	var out []string
	for _, p := range problems(err) {
		out = append(out, p.Path+": "+p.Msg)
	}
	return out
}
