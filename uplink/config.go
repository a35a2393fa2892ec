package uplink

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultPublishTimeout = 10 * time.Second
	DefaultWindow         = 100
	DefaultQoS            = 1
	DefaultTopic          = "fieldgate/{gateway}/{device}"
	DefaultPrefix         = "fieldgate"
	DefaultStatusTopic    = "fieldgate/{gateway}/status"
	DefaultReconnectMin   = time.Second
	DefaultReconnectMax   = time.Minute
)

// maxWindow is the number of MQTT packet identifiers; a larger window could
// never be filled.
const maxWindow = 65535

// Config configures an Uplink. The zero value of every field except URL and
// Gateway means "use the default" (see the Default* constants).
type Config struct {
	// URL is the broker address: tcp://host[:port] (port 1883 by default) or
	// tls://host[:port] (port 8883 by default).
	URL string
	// ClientID is the fixed MQTT client identifier; empty means Gateway.
	ClientID string
	// Username and Password authenticate to the broker. A password needs a
	// username (MQTT 3.1.1).
	Username, Password string
	// TLS is used for tls:// URLs. Nil means the system roots and the URL's
	// host as server name. The gateway builds it from the ca/cert/key files.
	TLS *tls.Config

	KeepAlive      time.Duration // MQTT keepalive; default 30s
	ConnectTimeout time.Duration // dial + TLS + CONNECT/CONNACK; default 10s
	// PublishTimeout is the longest wait for one PUBACK (and for handing one
	// PUBLISH to the socket) before the connection is considered dead and
	// is replaced; default 10s.
	PublishTimeout time.Duration
	// Window is the most PUBLISHes sent and not yet acknowledged by the
	// broker; default 100. It bounds the duplicates a broker can see after a
	// reconnect. Records the broker has acknowledged stay in the Source
	// until their deletion is durable; at most 8 windows of them are
	// waiting for that at a time, and after a crash those are sent again
	// too.
	Window int
	// QoS of data and status messages. Only 1 (at-least-once) is supported,
	// and the zero value means 1: the buffer deletes a record only when the
	// broker's PUBACK for it has arrived, which QoS 0 never sends. QoS 2
	// would add a round trip and still not remove duplicates after a
	// reconnect with a clean session; platforms drop those by seq. The
	// config layer should reject `qos: 0` rather than pass it as zero.
	QoS byte
	// Topic is the data topic template; placeholders {prefix}, {gateway} and
	// {device}. Default "fieldgate/{gateway}/{device}".
	Topic string
	// Prefix is the value of {prefix}; default "fieldgate".
	Prefix string
	// StatusTopic is the retained online/offline topic, also the last will;
	// placeholders {prefix} and {gateway}. Default "fieldgate/{gateway}/status".
	StatusTopic string
	// Gateway is the gateway id used in topics and payloads. Required.
	Gateway string

	// ReplayRate limits how many backlog records (those committed before
	// the current connection was established, sent with historical=true)
	// are published per second, so that live records keep their latency
	// while a long outage's backlog drains. Live records are always sent
	// first and are not limited. 0 means unlimited: the backlog fills
	// whatever the window leaves free.
	ReplayRate float64

	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// connection attempts (with jitter); defaults 1s and 1min.
	ReconnectMin, ReconnectMax time.Duration

	// Writes carries out the cloud-to-device writes of the formats'
	// command topics; nil rejects every write (RejectDisabled).
	Writes *Writes
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.ClientID == "" {
		c.ClientID = c.Gateway
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.QoS == 0 {
		c.QoS = DefaultQoS
	}
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.StatusTopic == "" {
		c.StatusTopic = DefaultStatusTopic
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = DefaultReconnectMin
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	return c
}

// Validate reports every problem in c at once, joined with errors.Join.
// Each problem starts with the field's name in snake_case (as in the YAML
// mqtt section), for example
// `topic: unknown placeholder {devce}; use {prefix}, {gateway}, {device}`.
// Zero fields are checked with their defaults. Validate does no I/O and does
// not modify c.
func (c *Config) Validate() error {
	d := c.withDefaults()
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf(field+": "+format, args...))
	}
	if _, _, err := brokerAddr(d.URL); err != nil {
		add("url", "%v", err)
	}
	if d.Gateway == "" {
		add("gateway", "required")
	} else if bad := badTopicChars(d.Gateway); bad != "" {
		add("gateway", "%q must not contain %s (it is used in topics)", d.Gateway, bad)
	}
	if !utf8.ValidString(d.ClientID) {
		add("client_id", "not valid UTF-8")
	}
	if d.Password != "" && d.Username == "" {
		add("password", "set without username (MQTT 3.1.1 requires a username)")
	}
	if d.KeepAlive < time.Second {
		add("keepalive", "must be at least 1s, got %v", d.KeepAlive)
	}
	if d.ConnectTimeout < 0 {
		add("connect_timeout", "must be positive, got %v", d.ConnectTimeout)
	}
	if d.PublishTimeout < 0 {
		add("publish_timeout", "must be positive, got %v", d.PublishTimeout)
	}
	if d.Window < 1 || d.Window > maxWindow {
		add("window", "must be 1..%d, got %d", maxWindow, d.Window)
	}
	if d.QoS != 1 {
		add("qos", "only 1 is supported (at-least-once; platforms drop duplicates by seq), got %d", d.QoS)
	}
	if bad := badTopicChars(d.Prefix); bad != "" {
		add("prefix", "%q must not contain %s", d.Prefix, bad)
	}
	if _, err := parseTemplate(d.Topic, true); err != nil {
		add("topic", "%v", err)
	}
	if _, err := parseTemplate(d.StatusTopic, false); err != nil {
		add("status_topic", "%v", err)
	}
	if d.ReplayRate < 0 || d.ReplayRate != d.ReplayRate {
		add("replay_rate", "must be 0 (unlimited) or a positive number of messages per second, got %v", d.ReplayRate)
	}
	if d.ReconnectMin < 0 || d.ReconnectMax < d.ReconnectMin {
		add("reconnect", "need 0 < min <= max, got min %v max %v", d.ReconnectMin, d.ReconnectMax)
	}
	return errors.Join(errs...)
}

// brokerAddr parses a broker URL into host:port and whether it uses TLS.
func brokerAddr(raw string) (addr string, useTLS bool, err error) {
	if raw == "" {
		return "", false, errors.New("required (tcp://host:port or tls://host:port)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, err
	}
	port := "1883"
	switch u.Scheme {
	case "tcp":
	case "tls":
		useTLS, port = true, "8883"
	default:
		return "", false, fmt.Errorf("scheme %q not supported; use tcp:// or tls://", u.Scheme)
	}
	if u.Hostname() == "" {
		return "", false, fmt.Errorf("%q has no host", raw)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("%q: only scheme://host:port is allowed (credentials go in username/password)", raw)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	return net.JoinHostPort(u.Hostname(), port), useTLS, nil
}

// badTopicChars names the first character of s that may not appear in a
// published topic level, or returns "".
func badTopicChars(s string) string {
	switch {
	case strings.ContainsAny(s, "+#"):
		return `MQTT wildcards "+" or "#"`
	case strings.ContainsRune(s, 0):
		return "NUL"
	case strings.Contains(s, "/"):
		return `"/"`
	case !utf8.ValidString(s):
		return "invalid UTF-8"
	}
	return ""
}

// HuaweiTopicPrefix starts the topics of Huawei Cloud IoTDA
// ($oc/devices/{device_id}/sys/properties/report): the one $ topic prefix
// a template may have. The MQTT specification keeps topics starting with $
// for the server's own use ($SYS/... statistics), and a server may refuse
// or drop a client's PUBLISH to them, so any other $ template is a mistake.
const HuaweiTopicPrefix = "$oc/"

// template is a topic template split around its placeholders.
type template struct {
	lits  []string // len(lits) == len(names)+1
	names []string // placeholder names between the literals
}

// parseTemplate splits a topic template. device says whether {device} is
// allowed.
func parseTemplate(s string, device bool) (template, error) {
	use := "use {prefix}, {gateway}"
	if device {
		use += ", {device}"
	}
	var t template
	if s == "" {
		return t, errors.New("empty")
	}
	if strings.ContainsAny(s, "+#") {
		return t, fmt.Errorf("%q contains an MQTT wildcard (+ or #); a publish topic cannot", s)
	}
	if strings.HasPrefix(s, "$") && !strings.HasPrefix(s, HuaweiTopicPrefix) {
		return t, fmt.Errorf("%q starts with $, which brokers reserve for their own topics ($SYS/...); of those only Huawei IoTDA's %s is allowed", s, HuaweiTopicPrefix)
	}
	if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
		return t, fmt.Errorf("%q contains NUL or invalid UTF-8", s)
	}
	rest := s
	for {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			t.lits = append(t.lits, rest)
			return t, nil
		}
		if rest[i] == '}' {
			return t, fmt.Errorf("unmatched } in %q", s)
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("unclosed { in %q", s)
		}
		name := rest[i+1 : i+j]
		switch name {
		case "prefix", "gateway":
		case "device":
			if !device {
				return t, fmt.Errorf("placeholder {device} is not allowed here; %s", use)
			}
		default:
			return t, fmt.Errorf("unknown placeholder {%s}; %s", name, use)
		}
		t.lits = append(t.lits, rest[:i])
		t.names = append(t.names, name)
		rest = rest[i+j+1:]
	}
}

// bind replaces {prefix} and {gateway}, leaving a template whose only
// placeholders are {device}.
func (t template) bind(prefix, gateway string) template {
	out := template{lits: []string{t.lits[0]}}
	for i, n := range t.names {
		switch n {
		case "prefix":
			out.lits[len(out.lits)-1] += prefix + t.lits[i+1]
		case "gateway":
			out.lits[len(out.lits)-1] += gateway + t.lits[i+1]
		default:
			out.names = append(out.names, n)
			out.lits = append(out.lits, t.lits[i+1])
		}
	}
	return out
}

// expand returns the topic for device of a bound template.
func (t template) expand(device string) string {
	if len(t.names) == 0 {
		return t.lits[0]
	}
	return strings.Join(t.lits, device)
}
