package opcua

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
)

// Config is one OPC UA server connection as written in the gateway's YAML
// file under devices[i].opcua, plus the device's tags. The config package
// decodes it and calls Validate; New trusts a validated Config.
type Config struct {
	URL string `yaml:"url"` // opc.tcp://host:port[/path]
	// SecurityPolicy is None (the default), Basic256Sha256,
	// Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss.
	SecurityPolicy string `yaml:"security_policy"`
	// SecurityMode is None (the default with policy None), Sign or
	// SignAndEncrypt (the default with any other policy).
	SecurityMode string `yaml:"security_mode"`
	// CertFile and KeyFile are the gateway's application instance
	// certificate and RSA key (PEM or DER), needed by any policy but None
	// and by certificate identity. When both are set and neither file
	// exists, the driver generates a self-signed pair there on its first
	// connect (key mode 0600).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// TrustDir is the folder of the servers' certificates: trusted/ holds
	// the certificates (or their CAs) the gateway accepts, and rejected/
	// receives each server certificate it refused. Unset, it is the folder
	// of CertFile. Only policies other than None check the server's
	// certificate.
	TrustDir string        `yaml:"trust_dir"`
	Auth     Auth          `yaml:"auth"`
	Timeout  time.Duration `yaml:"timeout"` // per request, and for connecting; 5s when unset

	// Filled from the device entry, not from the opcua: section.
	Poll time.Duration `yaml:"-"` // the device's default poll interval
	Tags []Tag         `yaml:"-"`
}

// Auth is the user identity the session is activated with.
type Auth struct {
	// Mode is anonymous (the default), username or certificate.
	Mode     string `yaml:"mode"`
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// CertFile and KeyFile are the user certificate for mode certificate;
	// when unset, the application certificate (Config.CertFile) is used.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Secret is a string that is never printed: fmt, encoding/json and yaml
// show "[redacted]" (or "" when empty). Use string(s) for the value.
type Secret string

// String returns "[redacted]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString makes %#v redact too.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// MarshalText returns String, so that encoders redact.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// TrustFolder returns the folder of the trusted/ and rejected/ server
// certificates: TrustDir, or else the folder of CertFile ("" without
// either).
func (c *Config) TrustFolder() string {
	if c.TrustDir != "" || c.CertFile == "" {
		return c.TrustDir
	}
	return filepath.Dir(c.CertFile)
}

// Defaults and limits.
const (
	DefaultTimeout = 5 * time.Second
	MaxQueueSize   = 1000 // queue_size of a subscribed tag
)

// Tag is one variable read from the server.
type Tag struct {
	Name string `yaml:"name"`
	// Node is the variable's NodeId in any standard string form: i=85,
	// ns=3;i=1002, ns=2;s=Line3.Temp, ns=1;g=<guid>, ns=1;b=<base64>, or
	// with a namespace URI instead of an index: nsu=urn:vendor:cnc;s=Spindle.
	// A namespace URI is resolved to the server's index at every connect.
	Node        string        `yaml:"node"`
	Mode        Mode          `yaml:"mode"` // poll (the default) or subscribe
	Unit        string        `yaml:"unit"`
	Description string        `yaml:"description"` // free text for people; not sent
	Poll        time.Duration `yaml:"poll"`        // overrides the device's poll (and sampling) interval
	// Deadband, Report and MaxSilence control report-by-exception; see
	// collector.Filter. They apply to polled and subscribed tags alike.
	Deadband   Deadband      `yaml:"deadband"`
	Report     Report        `yaml:"report"`
	MaxSilence time.Duration `yaml:"max_silence"`
	// QueueSize is how many changes the server keeps for a subscribed tag
	// between two publishes (1 when unset: only the latest); all of them
	// are reported, each with its source timestamp.
	QueueSize uint32 `yaml:"queue_size" json:",omitempty"`

	// Writable allows cloud-to-device writes of the tag; off by default.
	// Min, Max, RateLimit and Verify need it.
	Writable bool `yaml:"writable" json:",omitempty"`
	// Min and Max bound the numeric values a write may set; a write of a
	// bool or string to a tag with either is refused.
	Min *float64 `yaml:"min" json:",omitempty"`
	Max *float64 `yaml:"max" json:",omitempty"`
	// RateLimit caps the writes accepted for the tag: N per second,
	// minute or hour, written 1/s, 10/min or 100/h. Empty: no cap.
	RateLimit string `yaml:"rate_limit" json:",omitempty"`
	// Verify reads the node back after each write and compares it with
	// the value written.
	Verify bool `yaml:"verify" json:",omitempty"`
}

// Mode is how a tag is collected.
type Mode uint8

// The collection modes. ModeDefault is ModePoll.
const (
	ModeDefault   Mode = iota
	ModePoll           // batched Read requests at the poll interval
	ModeSubscribe      // a monitored item sampled at the poll interval
)

// UnmarshalText accepts poll or subscribe.
func (m *Mode) UnmarshalText(b []byte) error {
	switch strings.ToLower(string(b)) {
	case "poll":
		*m = ModePoll
	case "subscribe":
		*m = ModeSubscribe
	default:
		return fmt.Errorf("%q is not a mode; use poll or subscribe", b)
	}
	return nil
}

func (m Mode) String() string {
	if m == ModeSubscribe {
		return "subscribe"
	}
	return "poll"
}

// MarshalText returns the mode's config name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Deadband is how far a numeric value must move from the last reported one
// before it is reported again: an absolute amount ("0.5") or a percentage
// of the last reported value ("2%"). The zero Deadband reports every
// change.
type Deadband struct {
	Value   float64
	Percent bool
}

// UnmarshalText accepts a non-negative number, optionally followed by %.
func (d *Deadband) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return fmt.Errorf("%q is not a deadband; use a non-negative number (0.5) or a percentage (2%%)", b)
	}
	*d = Deadband{Value: v, Percent: pct}
	return nil
}

// Report says when a tag's value is sent.
type Report uint8

// The report modes. ReportDefault is "always" for a tag without a deadband
// and "change" for a tag with one.
const (
	ReportDefault Report = iota
	ReportAlways
	ReportChange
)

// UnmarshalText accepts always or change.
func (r *Report) UnmarshalText(b []byte) error {
	switch strings.ToLower(string(b)) {
	case "always":
		*r = ReportAlways
	case "change":
		*r = ReportChange
	default:
		return fmt.Errorf("%q is not a report mode; use always or change", b)
	}
	return nil
}

// Policies lists the security_policy names, Modes the security_mode
// names, and AuthModes the auth.mode names a config may use.
var (
	Policies  = []string{"None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}
	Modes     = []string{"None", "Sign", "SignAndEncrypt"}
	AuthModes = []string{"anonymous", "username", "certificate"}
)

// Security returns the security policy URI and message security mode the
// config asks for, with defaults applied.
func (c *Config) Security() (policyURI string, mode ua.MessageSecurityMode, err error) {
	policy := c.SecurityPolicy
	if policy == "" {
		policy = "None"
	}
	ok := false
	for _, p := range Policies {
		if strings.EqualFold(p, policy) {
			policy, ok = p, true
		}
	}
	if !ok {
		return "", 0, fmt.Errorf("security_policy %q: use one of %s", c.SecurityPolicy, strings.Join(Policies, ", "))
	}
	m := c.SecurityMode
	if m == "" {
		m = "SignAndEncrypt"
		if policy == "None" {
			m = "None"
		}
	}
	switch strings.ToLower(m) {
	case "none":
		mode = ua.MessageSecurityModeNone
	case "sign":
		mode = ua.MessageSecurityModeSign
	case "signandencrypt":
		mode = ua.MessageSecurityModeSignAndEncrypt
	default:
		return "", 0, fmt.Errorf("security_mode %q: use one of %s", c.SecurityMode, strings.Join(Modes, ", "))
	}
	if (policy == "None") != (mode == ua.MessageSecurityModeNone) {
		return "", 0, fmt.Errorf("security_policy %s cannot go with security_mode %s: policy None goes with mode None only, and every other policy with Sign or SignAndEncrypt", policy, m)
	}
	return ua.SecurityPolicyURIPrefix + policy, mode, nil
}

// Problem is one thing wrong with a Config: Field is the key path below
// the opcua: section ("security_mode", "auth.username"), or for a tag its
// key ("node") with Tag set to the tag's index.
type Problem struct {
	Tag   int // -1 for the connection section
	Field string
	Err   error
}

func (p Problem) Error() string {
	if p.Tag >= 0 {
		return fmt.Sprintf("tags[%d].%s: %v", p.Tag, p.Field, p.Err)
	}
	return fmt.Sprintf("%s: %v", p.Field, p.Err)
}

// Validate checks the config without any I/O and returns every problem,
// each a Problem, joined.
func (c *Config) Validate() error {
	var errs []error
	add := func(tag int, field string, err error) { errs = append(errs, Problem{tag, field, err}) }
	if err := checkURL(c.URL); err != nil {
		add(-1, "url", err)
	}
	_, mode, err := c.Security()
	if err != nil {
		field := "security_mode"
		if strings.HasPrefix(err.Error(), "security_policy") && !strings.Contains(err.Error(), "cannot go with") {
			field = "security_policy"
		}
		add(-1, field, errors.New(strings.SplitN(err.Error(), ": ", 2)[1]))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		add(-1, "cert_file", errors.New("set cert_file and key_file together"))
	}
	if err == nil && mode != ua.MessageSecurityModeNone && c.CertFile == "" {
		add(-1, "cert_file", errors.New("security_mode Sign and SignAndEncrypt need the gateway's certificate: set cert_file and key_file (generated there on first connect if absent)"))
	}
	switch strings.ToLower(c.Auth.Mode) {
	case "", "anonymous":
		if c.Auth.Username != "" || c.Auth.Password != "" {
			add(-1, "auth.username", errors.New("username and password need auth.mode: username"))
		}
	case "username":
		if c.Auth.Username == "" {
			add(-1, "auth.username", errors.New("auth.mode username needs a username"))
		}
	case "certificate":
		if (c.Auth.CertFile == "") != (c.Auth.KeyFile == "") {
			add(-1, "auth.cert_file", errors.New("set auth.cert_file and auth.key_file together"))
		}
		if c.Auth.CertFile == "" && c.CertFile == "" {
			add(-1, "auth.cert_file", errors.New("auth.mode certificate needs auth.cert_file and auth.key_file, or the application's cert_file and key_file"))
		}
	default:
		add(-1, "auth.mode", fmt.Errorf("%q: use one of %s", c.Auth.Mode, strings.Join(AuthModes, ", ")))
	}
	if c.Timeout < 0 {
		add(-1, "timeout", errors.New("must not be negative"))
	}
	for i := range c.Tags {
		t := &c.Tags[i]
		if t.Node == "" {
			add(i, "node", errors.New("required"))
		} else if _, err := ParseNode(t.Node); err != nil {
			add(i, "node", err)
		}
		if t.Report == ReportAlways && t.Deadband.Value > 0 {
			add(i, "deadband", errors.New("a deadband needs report: change (report: always sends every reading)"))
		}
		if t.Poll < 0 {
			add(i, "poll", errors.New("must not be negative"))
		}
		if t.QueueSize != 0 && t.Mode != ModeSubscribe {
			add(i, "queue_size", errors.New("only with mode: subscribe; a polled tag reads one value per poll"))
		}
		if t.QueueSize > MaxQueueSize {
			add(i, "queue_size", fmt.Errorf("must be at most %d, got %d", MaxQueueSize, t.QueueSize))
		}
	}
	return errors.Join(errs...)
}

func checkURL(s string) error {
	rest, ok := strings.CutPrefix(s, "opc.tcp://")
	if !ok {
		return fmt.Errorf("%q: use opc.tcp://host:port", s)
	}
	host, _, _ := strings.Cut(rest, "/")
	if host == "" {
		return fmt.Errorf("%q: no host", s)
	}
	return nil
}
