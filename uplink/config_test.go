package uplink

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{URL: "tcp://127.0.0.1:1883", Gateway: "line3-gw"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	cases := []struct {
		name string
		mod  func(*Config)
		want []string // substrings of the error
	}{
		{"no url", func(c *Config) { c.URL = "" }, []string{"url: required"}},
		{"bad scheme", func(c *Config) { c.URL = "mqtt://h:1883" }, []string{`url: scheme "mqtt" not supported; use tcp:// or tls://`}},
		{"no host", func(c *Config) { c.URL = "tcp://:1883" }, []string{"url:", "no host"}},
		{"path", func(c *Config) { c.URL = "tcp://h:1/x" }, []string{"url:", "only scheme://host:port"}},
		{"no gateway", func(c *Config) { c.Gateway = "" }, []string{"gateway: required"}},
		{"wildcard gateway", func(c *Config) { c.Gateway = "a+b" }, []string{"gateway:", "wildcards"}},
		{"password alone", func(c *Config) { c.Password = "x" }, []string{"password: set without username"}},
		{"typo placeholder", func(c *Config) { c.Topic = "f/{gateway}/{devce}" }, []string{"topic: unknown placeholder {devce}; use {prefix}, {gateway}, {device}"}},
		{"unclosed", func(c *Config) { c.Topic = "f/{gateway" }, []string{"topic: unclosed {"}},
		{"wildcard topic", func(c *Config) { c.Topic = "f/+/{device}" }, []string{"topic:", "wildcard"}},
		{"device in status", func(c *Config) { c.StatusTopic = "s/{device}" }, []string{"status_topic: placeholder {device} is not allowed here; use {prefix}, {gateway}"}},
		{"$SYS topic", func(c *Config) { c.Topic = "$SYS/{device}" }, []string{`topic: "$SYS/{device}" starts with $`, "only Huawei IoTDA's $oc/"}},
		{"qos 2", func(c *Config) { c.QoS = 2 }, []string{"qos: only 1 is supported"}},
		{"window", func(c *Config) { c.Window = 70000 }, []string{"window: must be 1..65535, got 70000"}},
		{"negative window", func(c *Config) { c.Window = -1 }, []string{"window: must be 1..65535"}},
		{"keepalive", func(c *Config) { c.KeepAlive = time.Millisecond }, []string{"keepalive: must be at least 1s"}},
		{"backoff", func(c *Config) { c.ReconnectMin = time.Minute; c.ReconnectMax = time.Second }, []string{"reconnect:"}},
		{"all at once", func(c *Config) { c.URL = ""; c.Topic = "{x}"; c.Window = -5 }, []string{"url:", "window:", "topic:"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := ok
			c.mod(&cfg)
			before := cfg
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			if cfg != before {
				t.Error("Validate modified the config")
			}
			msg := err.Error()
			for _, w := range c.want {
				i := strings.Index(msg, w)
				if i < 0 {
					t.Fatalf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestConfigValidateTLS(t *testing.T) {
	c := Config{URL: "tls://broker.example", Gateway: "g"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	addr, useTLS, _ := brokerAddr(c.URL)
	if addr != "broker.example:8883" || !useTLS {
		t.Errorf("tls default address %q %v", addr, useTLS)
	}
	if addr, _, _ := brokerAddr("tcp://[::1]"); addr != "[::1]:1883" {
		t.Errorf("tcp default address %q", addr)
	}
}

func TestTopicTemplate(t *testing.T) {
	cases := []struct{ tmpl, device, want string }{
		{DefaultTopic, "press-1", "fieldgate/gw/press-1"},
		{"{prefix}/{gateway}/{device}/data", "d", "acme/gw/d/data"},
		{"{device}/{device}", "d", "d/d"},
		{"static/topic", "d", "static/topic"},
		{"$oc/devices/{device}/sys/properties/report", "d1", "$oc/devices/d1/sys/properties/report"}, // Huawei IoTDA
	}
	for _, c := range cases {
		tp, err := parseTemplate(c.tmpl, true)
		if err != nil {
			t.Fatalf("%q: %v", c.tmpl, err)
		}
		if got := tp.bind("acme", "gw").expand(c.device); got != c.want {
			t.Errorf("%q with %q = %q, want %q", c.tmpl, c.device, got, c.want)
		}
	}
}

func TestTopicForSanitizesAndCaches(t *testing.T) {
	u, err := New(Config{URL: "tcp://127.0.0.1:1", Gateway: "gw"}, newMemSource(), refuseSeq{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := u.format.(*encoderFormat)
	if got := f.topicFor("a+b#c"); got != "fieldgate/gw/a_b_c" {
		t.Errorf("topicFor = %q", got)
	}
	f.topicFor("press-1")
	if n := testing.AllocsPerRun(100, func() { f.topicFor("press-1") }); n != 0 {
		t.Errorf("cached topicFor allocates %.0f times", n)
	}
}

func TestBackoffGrowsToTheCapWithJitter(t *testing.T) {
	u := &Uplink{cfg: Config{ReconnectMin: time.Second, ReconnectMax: time.Minute}}
	for n, want := range map[int]time.Duration{0: time.Second, 1: 2 * time.Second, 3: 8 * time.Second, 10: time.Minute, 100: time.Minute} {
		for range 20 {
			if d := u.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
			}
		}
	}
}
