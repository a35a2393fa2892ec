package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/collector/modbus"
)

// Validate checks a configuration whose defaults are set, as Load returns
// it or as a program builds it, and returns every problem joined (each an
// *Error without a file position), or nil. It does no I/O.
func (c *Config) Validate() error {
	if errs := validate(c, nil); len(errs) > 0 {
		return joinErrors(errs, nil)
	}
	return nil
}

// validator collects the problems of one Config; src (nil for Validate)
// gives positions and tells explicit keys from absent ones.
type validator struct {
	src  *source
	errs []*Error
}

// errorf reports a problem at path, unless decoding already reported one
// there or above.
func (v *validator) errorf(path, format string, args ...any) {
	if !v.src.covered(path) {
		v.errs = append(v.errs, v.src.errorAt(nil, path, nil, format, args...))
	}
}

func (v *validator) unsupported(path, what string) {
	if !v.src.covered(path) {
		v.errs = append(v.errs, v.src.errorAt(nil, path, ErrNotSupported, "%s %v", what, ErrNotSupported))
	}
}

func validate(c *Config, src *source) []*Error {
	v := &validator{src: src}
	v.name("gateway.id", c.Gateway.ID, "the gateway's name, e.g. line3-gw")
	v.buffer(&c.Buffer)
	v.api(&c.API)
	v.mqtt(&c.MQTT)
	if len(c.Devices) == 0 {
		v.errorf("devices", "at least one device is required")
	}
	names := map[string]string{} // device name → path of its first use
	for i := range c.Devices {
		v.device(fmt.Sprintf("devices[%d]", i), &c.Devices[i], names)
	}
	v.buses(c)
	v.audit(c)
	v.commandTopic(c)
	return v.errs
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// name checks a required name; example says what it is when missing.
func (v *validator) name(path, s, example string) bool {
	switch {
	case s == "":
		v.errorf(path, "required: %s", example)
	case !nameRE.MatchString(s):
		v.errorf(path, "%q is not a valid name; use letters, digits, '_', '.' and '-'", s)
	default:
		return true
	}
	return false
}

// unique reports a name already used at another path of names.
func (v *validator) unique(path, s, what string, names map[string]string) {
	if s == "" {
		return
	}
	if first, ok := names[s]; ok {
		at := first
		if n := v.src.node(first); n != nil {
			at = "line " + strconv.Itoa(n.Line)
		}
		v.errorf(path, "duplicate %s name %q; first used at %s", what, s, at)
		return
	}
	names[s] = path
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.errorf(path, "must be positive, got %v", d)
	}
}

func (v *validator) buffer(b *Buffer) {
	if b.Path == "" {
		v.errorf("buffer.path", "must not be empty")
	}
	if b.MaxBytes < MinMaxBytes {
		v.errorf("buffer.max_bytes", "must be at least %v, got %v", MinMaxBytes, b.MaxBytes)
	}
	switch b.Sync {
	case SyncAlways:
		if b.SyncInterval != 0 {
			v.errorf("buffer.sync_interval", "only with sync: interval")
		}
	case SyncInterval:
		v.positive("buffer.sync_interval", b.SyncInterval)
	default:
		v.errorf("buffer.sync", "%q is not a sync mode; use always or interval", b.Sync)
	}
	if b.MaxAge != 0 && b.MaxAge < time.Minute {
		v.errorf("buffer.max_age", "must be at least 1m (or 0 for no age bound), got %v", b.MaxAge)
	}
}

func (v *validator) api(a *API) {
	host, port, err := net.SplitHostPort(a.Listen)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		v.errorf("api.listen", "%q is not host:port, e.g. 127.0.0.1:8080", a.Listen)
		return
	}
	ip := net.ParseIP(host)
	if a.TokenFile == "" && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		v.errorf("api.token_file", "required when api.listen is not a loopback address (%s): the API must not be open to the network without a bearer token", a.Listen)
	}
}

func (v *validator) mqtt(m *MQTT) {
	if m.URL == "" {
		v.errorf("mqtt.url", "required: the broker, e.g. tls://broker.example:8883 or tcp://10.0.0.5:1883")
	} else if u, ok := v.url("mqtt.url", m.URL, "tcp://host:port or tls://host:port"); ok {
		switch u.Scheme {
		case "tcp", "tls":
		case "mqtt", "ssl", "mqtts":
			v.errorf("mqtt.url", "scheme %s:// is not supported; write tcp:// for plain MQTT or tls:// for MQTT over TLS", u.Scheme)
		default:
			v.errorf("mqtt.url", "scheme %s:// is not supported; use tcp:// or tls://", u.Scheme)
		}
		if m.TLS != nil && u.Scheme != "tls" {
			v.errorf("mqtt.tls", "only with a tls:// url")
		}
	}
	if t := m.TLS; t != nil {
		switch {
		case t.CertFile != "" && t.KeyFile == "":
			v.errorf("mqtt.tls.cert_file", "set key_file too: a client certificate needs its private key (or set neither)")
		case t.CertFile == "" && t.KeyFile != "":
			v.errorf("mqtt.tls.key_file", "set cert_file too: a private key needs its client certificate (or set neither)")
		}
		if t.InsecureSkipVerify && t.CAFile != "" {
			v.errorf("mqtt.tls.insecure_skip_verify", "ca_file is never used when the broker's certificate is not verified; remove one of them")
		}
		if t.ServerName != "" && (strings.ContainsAny(t.ServerName, " /:@") || !utf8.ValidString(t.ServerName)) {
			v.errorf("mqtt.tls.server_name", "%q is not a host name", t.ServerName)
		}
	}
	if m.Username == "" && (m.Password != "" || m.PasswordFile != "") {
		v.errorf("mqtt.username", "required with a password (MQTT 3.1.1 sends no password without a user name)")
	}
	if m.KeepAlive < time.Second || m.KeepAlive > 65535*time.Second {
		v.errorf("mqtt.keepalive", "must be 1s..18h12m15s, got %v", m.KeepAlive)
	}
	v.positive("mqtt.connect_timeout", m.ConnectTimeout)
	v.positive("mqtt.publish_timeout", m.PublishTimeout)
	if m.ReplayRate < 0 || math.IsNaN(m.ReplayRate) || math.IsInf(m.ReplayRate, 0) {
		v.errorf("mqtt.replay_rate", "must be 0 (no cap) or a positive number of messages per second, got %v", m.ReplayRate)
	}
	if m.Window < 1 || m.Window > 65535 {
		v.errorf("mqtt.window", "must be 1..65535, got %d", m.Window)
	}
	switch m.QoS {
	case 1:
	case 0:
		v.errorf("mqtt.qos", "0 is not supported: the buffer deletes data only when the broker acknowledges it, and QoS 0 has no acknowledgement; use 1")
	default:
		v.errorf("mqtt.qos", "must be 1, got %d (QoS 2 is not supported)", m.QoS)
	}
	switch m.Format {
	case FormatJSON, FormatThingsBoard:
		if m.Sparkplug != nil {
			v.errorf("mqtt.sparkplug", "only for format: sparkplugb (format is %s)", m.Format)
		}
	case FormatSparkplugB:
		v.sparkplug(m.Sparkplug)
	default:
		v.errorf("mqtt.format", "%q is not a format; use json, sparkplugb or thingsboard", m.Format)
	}
	v.topic("mqtt.topic", m.Topic, "{prefix}", "{gateway}", "{device}")
	v.topic("mqtt.status_topic", m.StatusTopic, "{prefix}", "{gateway}")
	switch {
	case m.Prefix == "":
		v.errorf("mqtt.prefix", "must not be empty")
	case strings.ContainsAny(m.Prefix, "+#{}\x00"):
		v.errorf("mqtt.prefix", "%q must not contain +, #, { or }", m.Prefix)
	case strings.HasPrefix(m.Prefix, "/") || strings.HasSuffix(m.Prefix, "/"):
		v.errorf("mqtt.prefix", "%q must not start or end with /", m.Prefix)
	}
}

// url parses a broker URL that needs a host and, if given, a
// numeric port.
func (v *validator) url(path, s, form string) (*url.URL, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" || !strings.Contains(s, "://") {
		v.errorf(path, "%q is not a URL; use %s", s, form)
		return nil, false
	}
	if u.User != nil {
		v.errorf(path, "must not hold credentials; use username and password")
	}
	if u.Hostname() == "" {
		v.errorf(path, "%q has no host; use %s", s, form)
		return nil, false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			v.errorf(path, "port %s must be 1..65535", p)
		}
	}
	return u, true
}

// topic checks an MQTT topic template against its allowed placeholders.
// sparkplug checks mqtt.sparkplug for format sparkplugb.
func (v *validator) sparkplug(s *Sparkplug) {
	if s == nil {
		v.errorf("mqtt.format", "format sparkplugb needs mqtt.sparkplug: { group: ... }")
		return
	}
	for _, f := range []struct{ path, val string }{{"mqtt.sparkplug.group", s.Group}, {"mqtt.sparkplug.primary_host", s.PrimaryHost}} {
		if strings.ContainsAny(f.val, "+#/\x00") {
			v.errorf(f.path, "%q must not contain +, #, / or NUL (it is a topic level)", f.val)
		}
	}
	if s.Group == "" {
		v.errorf("mqtt.sparkplug.group", "required: the Sparkplug group id, e.g. plant-a")
	}
	if s.DataQoS > 1 {
		v.errorf("mqtt.sparkplug.data_qos", "must be 0 (the specification's) or 1 (at-least-once), got %d", s.DataQoS)
	}
}

func (v *validator) topic(path, t string, allowed ...string) {
	if t == "" {
		v.errorf(path, "must not be empty")
		return
	}
	if strings.ContainsAny(t, "+#\x00") {
		v.errorf(path, "%q must not contain the MQTT wildcards + or #", t)
	}
	// Brokers keep $ topics for themselves ($SYS/...); Huawei IoTDA's
	// $oc/devices/... is the one such prefix a platform asks clients to use.
	if strings.HasPrefix(t, "$") && !strings.HasPrefix(t, "$oc/") {
		v.errorf(path, "%q starts with $, which brokers reserve for their own topics; of those only Huawei IoTDA's $oc/ is allowed", t)
	}
	for rest := t; ; {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if rest[i] == '}' || j < 0 {
			v.errorf(path, "%q has an unmatched brace", t)
			return
		}
		ph := rest[i : i+j+1]
		if !contains(allowed, ph) {
			if !nameRE.MatchString(ph[1 : len(ph)-1]) {
				ph = strconv.Quote(ph)
			}
			v.errorf(path, "unknown placeholder %s; use %s", ph, orList(allowed))
		}
		rest = rest[i+j+1:]
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// orList writes a, b or c.
func orList(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

func (v *validator) device(p string, d *Device, names map[string]string) {
	if v.name(p+".name", d.Name, "the device's name, e.g. press-1") {
		v.unique(p+".name", d.Name, "device", names)
	}
	if v.src != nil && v.src.skip[p] {
		return // reported as not supported while decoding
	}
	if d.Poll < MinPoll {
		v.errorf(p+".poll", "must be at least %v, got %v", MinPoll, d.Poll)
	}
	if d.PollOffset != 0 {
		shortest := d.ShortestPoll()
		if d.PollOffset < 0 || d.PollOffset >= shortest {
			v.errorf(p+".poll_offset", "must be at least 0 and less than the device's shortest poll interval %v, got %v", shortest, d.PollOffset)
		}
	}
	if d.OPCUA != nil {
		v.opcua(p, d)
		for j, t := range d.OPCUA.Tags {
			v.writeKeys(fmt.Sprintf("%s.tags[%d]", p, j), writeKeys{t.Writable, t.Min, t.Max, t.RateLimit, t.Verify}, "")
		}
		return
	}
	if d.Modbus == nil {
		v.errorf(p+".modbus", "required: the device's connection, modbus: { url: tcp://10.0.0.21:502, unit: 1 } or opcua: { url: opc.tcp://10.0.0.30:4840 }")
		return
	}
	maxRegs := v.modbus(p+".modbus", d.Modbus)
	var ex *expansion
	if v.src != nil {
		ex = v.src.devices[p]
	}
	if len(d.Tags) == 0 && (ex == nil || !ex.failed) && !v.src.covered(p+".profile") && !v.src.covered(p+".tags_csv") {
		v.errorf(p+".tags", "at least one tag is required: under tags, from a profile, or in a tags_csv file")
	}
	seen := map[string]origin{} // tag name → where it was first written
	for j := range d.Tags {
		o := origin{src: v.src, path: fmt.Sprintf("%s.tags[%d]", p, j)}
		if ex != nil && j < len(ex.origins) {
			o = ex.origins[j]
		}
		tv, note := v, ""
		if o.src != v.src {
			// A profile or CSV file, which may serve several devices:
			// its problems name that file, and the device where the
			// device's settings matter.
			tv, note = &validator{src: o.src}, " (device "+d.Name+")"
		}
		t := &d.Tags[j]
		if tv.tag(o.path, t, maxRegs, d.Poll, note) {
			if first, ok := seen[t.Name]; ok {
				tv.errorf(o.path+".name", "duplicate tag name %q; first used at %s", t.Name, first.where(o.src))
			} else {
				seen[t.Name] = o
			}
		}
		if tv != v {
			v.errs = append(v.errs, tv.errs...)
		}
	}
}

// modbus checks a device's connection and returns its register limit per
// request.
func (v *validator) modbus(p string, m *modbus.Config) uint16 {
	ep, ok := modbus.Endpoint{}, false
	if m.URL == "" {
		v.errorf(p+".url", "required: where the device is, e.g. tcp://10.0.0.21:502, rtuovertcp://10.0.0.50:4001 or rtu:///dev/ttyUSB0?baud=9600&parity=E&stop=1")
	} else if e, err := modbus.ParseURL(m.URL); err != nil {
		v.errorf(p+".url", "%v", err)
	} else if u, err := url.Parse(m.URL); err == nil && u.User != nil {
		v.errorf(p+".url", "must not hold a user name or password")
	} else {
		ep, ok = e, true
	}
	switch {
	case ok && ep.Transport != modbus.TCP && m.Unit == 0:
		v.errorf(p+".unit", "must be 1..247 on a serial bus (%s), got 0: the broadcast address, which no device answers", ep.Transport)
	case ok && ep.Transport != modbus.TCP && m.Unit > 247:
		v.errorf(p+".unit", "must be 1..247 on a serial bus (%s), got %d", ep.Transport, m.Unit)
	case m.Unit > 247 && m.Unit != 255:
		v.errorf(p+".unit", "must be 0..247, or 255 (Modbus TCP devices that ignore the unit id), got %d", m.Unit)
	}
	v.positive(p+".timeout", m.Timeout)
	v.limits(p, m.MaxRegisters, m.MaxBits, m.Pause)
	if m.MaxRegisters > 0 && m.MaxRegisters <= modbus.MaxRegistersPerRequest {
		return m.MaxRegisters
	}
	return modbus.MaxRegistersPerRequest
}

// limits checks the per-request limits of a device or profile modbus
// section at p.
func (v *validator) limits(p string, maxRegs, maxBits uint16, pause time.Duration) {
	if maxRegs > modbus.MaxRegistersPerRequest {
		v.errorf(p+".max_registers", "must be at most %d (the protocol limit), got %d", modbus.MaxRegistersPerRequest, maxRegs)
	}
	if maxBits > modbus.MaxBitsPerRequest {
		v.errorf(p+".max_bits", "must be at most %d (the protocol limit), got %d", modbus.MaxBitsPerRequest, maxBits)
	}
	if pause < 0 || pause > MaxPause {
		v.errorf(p+".pause", "must be 0s..%v, got %v", MaxPause, pause)
	}
}

const addressForms = "either address, a Modicon number such as 40001, or table (coil, discrete, input or holding) and offset, the zero-based number within the table"

// tag checks the tag at path p on a device whose requests carry at most
// maxRegs registers and whose poll interval is devPoll; note ends the
// messages that depend on the device. It reports whether the name is
// valid (its uniqueness is the caller's to check).
func (v *validator) tag(p string, t *modbus.Tag, maxRegs uint16, devPoll time.Duration, note string) bool {
	nameOK := v.name(p+".name", t.Name, "the tag's name, e.g. oil_temp")

	// Where: address, or table and offset.
	hasAddr := t.Address != 0 || v.src.has(p+".address")
	hasTable, hasOffset := t.Table != modbus.TableNone, t.Offset != nil
	var table modbus.Table
	var offset uint16
	at := p + ".address"
	switch {
	case hasAddr && (hasTable || hasOffset):
		v.errorf(p+".address", "set %s; not both", addressForms)
	case hasAddr:
		var err error
		if table, offset, err = modbus.ParseModicon(t.Address); err != nil {
			v.errorf(p+".address", "%v", err)
		}
	case hasTable && hasOffset:
		table, offset, at = t.Table, *t.Offset, p+".offset"
	case hasTable:
		v.errorf(p+".table", "offset is required with table: the zero-based number within the table")
	case hasOffset:
		v.errorf(p+".offset", "table is required with offset; use one of %s", strings.Join(modbus.TableNames, ", "))
	default:
		v.errorf(p, "needs an address: %s", addressForms)
	}

	typ := t.Type
	numeric := typ.Registers() > 0
	if typ == modbus.TypeNone {
		v.errorf(p+".type", "required; use one of %s", strings.Join(modbus.TypeNames, ", "))
	}
	if t.Bit != nil && (typ != modbus.TypeBool || table.IsBit()) {
		v.errorf(p+".bit", "only for type bool on an input or holding register")
	}
	if t.Length != 0 && typ != modbus.TypeString && typ != modbus.TypeNone {
		v.errorf(p+".length", "only for type string")
	}
	if (t.Scale != nil || t.ValueOffset != nil) && !numeric && typ != modbus.TypeNone {
		key := "scale"
		if t.Scale == nil {
			key = "value_offset"
		}
		v.errorf(p+"."+key, "only for numeric types, not %s", typ)
	}
	if t.Scale != nil && *t.Scale == 0 {
		v.errorf(p+".scale", "must not be 0")
	}
	poll := devPoll
	if t.Poll != 0 || v.src.has(p+".poll") {
		poll = t.Poll
		if t.Poll < MinPoll {
			v.errorf(p+".poll", "must be at least %v, got %v", MinPoll, t.Poll)
		}
	}

	// What: the type, and whether it fits the table.
	regs := typ.Registers()
	switch typ {
	case modbus.TypeBool:
		regs = 1
		if t.Bit == nil && table != modbus.TableNone && !table.IsBit() {
			v.errorf(p+".bit", "required for type bool on a %s register: the bit number, 0 (least significant) to 15", table)
		} else if t.Bit != nil && *t.Bit > 15 {
			v.errorf(p+".bit", "must be 0..15, got %d", *t.Bit)
		}
	case modbus.TypeString:
		regs = t.Length
		if t.Length == 0 {
			v.errorf(p+".length", "required for type string: the number of registers (two characters each), 1..123")
		} else if t.Length > 123 {
			v.errorf(p+".length", "must be 1..123, got %d", t.Length)
		}
	}
	if typ != modbus.TypeBool && typ != modbus.TypeNone && table.IsBit() {
		v.errorf(p+".type", "%s needs registers: use an input (30001-39999) or holding (40001-49999) address, or table input or holding; a %s holds single bits, read it as type bool", typ, bitTableName(table))
	}
	switch t.Order {
	case modbus.OrderNone, modbus.ABCD, modbus.BADC:
		if t.Order != modbus.OrderNone && typ == modbus.TypeBool {
			v.errorf(p+".order", "only for numeric and string types")
		}
	default: // CDAB, DCBA swap words
		if typ == modbus.TypeBool {
			v.errorf(p+".order", "only for numeric and string types")
		} else if typ == modbus.TypeString || regs == 1 {
			v.errorf(p+".order", "%s swaps words, but %s is read register by register; use ABCD, or BADC to swap the bytes in each register", t.Order, typ)
		}
	}

	// Span: the value must end within the table, and fit one request.
	if table != modbus.TableNone && !table.IsBit() && regs > 0 {
		if last := int(offset) + int(regs) - 1; last > 65535 {
			v.errorf(at, "%s needs %d registers from offset %d, past the last offset 65535", typ, regs, offset)
		}
		if regs > maxRegs {
			v.errorf(p+".type", "%s needs %d registers, more than max_registers %d%s", typ, regs, maxRegs, note)
		}
	}

	// For people, and what is done with the value.
	if n := utf8.RuneCountInString(t.Description); n > MaxDescription {
		v.errorf(p+".description", "must be at most %d characters, got %d", MaxDescription, n)
	}
	typed := typ != modbus.TypeNone
	if c := t.Clamp; c != nil {
		switch {
		case !numeric && typed:
			v.errorf(p+".clamp", "only for numeric types, not %s", typ)
		case c.Min == nil && c.Max == nil:
			v.errorf(p+".clamp", "set min, max or both")
		case c.Min != nil && c.Max != nil && *c.Min > *c.Max:
			v.errorf(p+".clamp", "min %g is greater than max %g", *c.Min, *c.Max)
		}
	}
	v.report(p, t, numeric || !typed, poll, note)
	v.modbusWrites(p, t, table)
	return nameOK
}

// report checks deadband, report and max_silence; numeric says whether the
// tag's type takes a deadband, poll is the tag's poll interval.
func (v *validator) report(p string, t *modbus.Tag, numeric bool, poll time.Duration, note string) {
	db := t.Deadband
	if v.src.has(p+".deadband") || db != (modbus.Deadband{}) {
		switch {
		case !numeric:
			v.errorf(p+".deadband", "only for numeric types, not %s; report: change sends a %s when it changes", t.Type, t.Type)
		case db.Value < 0 || math.IsNaN(db.Value) || math.IsInf(db.Value, 0):
			v.errorf(p+".deadband", "must be a non-negative number, got %v", db.Value)
		}
	}
	deadband := db.Value > 0
	switch t.Report {
	case modbus.ReportDefault, modbus.ReportChange:
	case modbus.ReportAlways:
		if deadband {
			v.errorf(p+".report", "always sends every reading, so the deadband would do nothing; a deadband only applies with report: change, or just omit report")
		}
	default:
		v.errorf(p+".report", "%v is not a report mode; use always or change", t.Report)
	}
	if t.MaxSilence == 0 && !v.src.has(p+".max_silence") {
		return
	}
	switch onChange := t.Report == modbus.ReportChange || t.Report == modbus.ReportDefault && deadband; {
	case t.Report == modbus.ReportAlways:
		v.errorf(p+".max_silence", "only with report: change; report: always sends every reading anyway")
	case !onChange:
		v.errorf(p+".max_silence", "only with report: change or a deadband; without them every reading is sent anyway")
	case t.MaxSilence < poll:
		v.errorf(p+".max_silence", "must be at least the tag's poll interval %v, got %v%s", poll, t.MaxSilence, note)
	}
}

func bitTableName(t modbus.Table) string {
	if t == modbus.Coil {
		return "coil"
	}
	return "discrete input"
}

// modbusWrites checks the write keys of the Modbus tag t at path p, read
// from table: only coils and holding registers can be written, and min
// and max need a numeric type.
func (v *validator) modbusWrites(p string, t *modbus.Tag, table modbus.Table) {
	if t.Writable && (table == modbus.DiscreteInput || table == modbus.InputRegister) {
		what := "a discrete input"
		if table == modbus.InputRegister {
			what = "an input register"
		}
		v.errorf(p+".writable", "the tag is %s, which Modbus cannot write; only coils (1-9999) and holding registers (40001-49999) are writable", what)
	}
	kind := ""
	if t.Type == modbus.TypeBool || t.Type == modbus.TypeString {
		kind = t.Type.String()
	}
	v.writeKeys(p, writeKeys{t.Writable, t.Min, t.Max, t.RateLimit, t.Verify}, kind)
}

// writeKeys are a tag's settings for cloud-to-device writes.
type writeKeys struct {
	writable  bool
	min, max  *float64
	rateLimit string
	verify    bool
}

// writeKeys checks the write keys of the tag at p: min, max, rate_limit
// and verify only with writable: true; min and max not on a tag of type
// kind ("bool" or "string"; "" for numeric or unknown types), and min <=
// max; rate_limit in the form ParseRateLimit reads.
func (v *validator) writeKeys(p string, w writeKeys, kind string) {
	if !w.writable {
		for _, k := range []struct {
			key string
			set bool
		}{{"min", w.min != nil}, {"max", w.max != nil}, {"rate_limit", w.rateLimit != ""}, {"verify", w.verify}} {
			if k.set {
				v.errorf(p+"."+k.key, "only with writable: true (%s applies to cloud-to-device writes, which are off for this tag)", k.key)
			}
		}
		return
	}
	switch {
	case kind != "" && w.min != nil:
		v.errorf(p+".min", "only for numeric types, not %s", kind)
	case kind != "" && w.max != nil:
		v.errorf(p+".max", "only for numeric types, not %s", kind)
	case w.min != nil && w.max != nil && *w.min > *w.max:
		v.errorf(p+".min", "min %g is greater than max %g", *w.min, *w.max)
	}
	if w.rateLimit != "" {
		if _, _, err := ParseRateLimit(w.rateLimit); err != nil {
			v.errorf(p+".rate_limit", "%v", err)
		}
	}
}

// MaxRateLimit is the most writes a tag's rate_limit may allow per period.
const MaxRateLimit = 10000

// ParseRateLimit reads a tag's rate_limit: N writes per period, written
// N/s, N/min or N/h (also N/second, N/minute, N/hour), N a whole number
// 1..MaxRateLimit.
func ParseRateLimit(s string) (n int, per time.Duration, err error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if ok {
		switch strings.ToLower(strings.TrimSpace(unit)) {
		case "s", "sec", "second":
			per = time.Second
		case "m", "min", "minute":
			per = time.Minute
		case "h", "hour":
			per = time.Hour
		}
	}
	n, nerr := strconv.Atoi(strings.TrimSpace(num))
	if per == 0 || nerr != nil {
		return 0, 0, fmt.Errorf("%q is not a rate limit; write writes per period as 1/s, 10/min or 100/h", s)
	}
	if n < 1 || n > MaxRateLimit {
		return 0, 0, fmt.Errorf("%q: the number of writes must be 1..%d", s, MaxRateLimit)
	}
	return n, per, nil
}

// commandTopic checks that JSON set commands can name their device: with
// format json and a writable tag, the command topic is mqtt.topic with
// {device} as a + wildcard and /set appended, so {device} must fill whole
// topic levels.
func (v *validator) commandTopic(c *Config) {
	if c.MQTT.Format != FormatJSON || v.src.covered("mqtt.topic") {
		return
	}
	writable := false
	for _, d := range c.Devices {
		for _, t := range d.Tags {
			writable = writable || t.Writable
		}
		for _, t := range d.OPCUATags {
			writable = writable || t.Writable
		}
	}
	if !writable {
		return
	}
	levels := strings.Split(c.MQTT.Topic, "/")
	whole := false
	for _, l := range levels {
		switch {
		case l == "{device}":
			whole = true
		case strings.Contains(l, "{device}"):
			v.errorf("mqtt.topic", "%q: {device} must be a whole topic level (as in fieldgate/{gateway}/{device}) for writable tags, whose set command topic replaces it with the wildcard +", c.MQTT.Topic)
			return
		}
	}
	if !whole {
		v.errorf("mqtt.topic", "%q has no {device} level, so a set command cannot name its device; writable tags need {device} as a whole topic level (as in fieldgate/{gateway}/{device})", c.MQTT.Topic)
	}
}

// audit checks the audit section.
func (v *validator) audit(c *Config) {
	a := &c.Audit
	if a.Path == "" {
		v.errorf("audit.path", "must not be empty; leave the key out for audit.log beside the buffer file")
	}
	if a.MaxBytes < MinAuditBytes {
		v.errorf("audit.max_bytes", "must be at least %v, got %v", MinAuditBytes, a.MaxBytes)
	}
	if a.Files < 1 || a.Files > MaxAuditFiles {
		v.errorf("audit.files", "must be 1..%d, got %d", MaxAuditFiles, a.Files)
	}
}
