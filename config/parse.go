package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/collector/opcua"
)

// Parse decodes, defaults and validates the YAML in data; name is the file
// it came from, used in error messages and to resolve relative paths. It
// reads the device profiles and tags_csv files that devices name,
// mqtt.password_file and api.token_file, and expands ${ENV} in
// mqtt.password, opcua auth passwords and the paths of secret and
// certificate files, but otherwise does no I/O. The error joins every problem
// found (each an *Error), sorted by file (this one first) and position.
func Parse(name string, data []byte) (*Config, error) {
	src := newSource(name)
	root, perr := readYAML(name, data)
	if perr != nil {
		return nil, perr
	}
	src.root = root

	c := &Config{Source: name}
	d := &decoder{src: src, active: map[*yaml.Node]bool{}, budget: 100000 + 10*len(data)}
	d.decode("", root, reflect.ValueOf(c).Elem())
	errs := d.errs
	if d.budget < 0 {
		return nil, joinErrors(errs[len(errs)-1:], nil)
	}
	files := []string{name}
	if root.Kind == yaml.MappingNode {
		x := newExtras(c, src, filepath.Dir(name))
		x.expand(c, src)
		errs = append(errs, x.errs...)
		files = append(files, x.files...)
		setDefaults(c, src)
		errs = append(errs, expandPaths(c, src)...)
		resolvePaths(c, filepath.Dir(name))
		errs = append(errs, validate(c, src)...)
		errs = append(errs, resolveSecrets(c, src)...)
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs, files)
	}
	return c, nil
}

// readYAML reads the one YAML document in data and returns its root node;
// an empty file gives an empty mapping.
func readYAML(name string, data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		e := &Error{File: name, Line: extra.Line, Column: extra.Column, Msg: "a config file holds one YAML document; remove the second one"}
		return nil, e
	} else if !errors.Is(err, io.EOF) {
		return nil, syntaxError(name, err)
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	if root.Kind == 0 { // an empty file
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: 1, Column: 1}
	}
	return root, nil
}

func joinErrors(errs []*Error, files []string) error {
	errs = sortErrors(errs, files)
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}

var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): `)

// syntaxError turns "yaml: line 3: did not find expected key" into
// "plant.yaml:3: did not find expected key".
func syntaxError(name string, err error) error {
	msg := err.Error()
	e := &Error{File: name, Err: err}
	if m := syntaxLine.FindStringSubmatch(msg); m != nil {
		fmt.Sscan(m[1], &e.Line)
		msg = msg[len(m[0]):]
	}
	e.Msg = strings.TrimPrefix(msg, "yaml: ")
	return e
}

// setDefaults fills every key that was absent (or null) with its default.
// It is the one place defaults live; docs/config.md lists the same values.
// Explicit values, even zero ones, are left for validate to judge.
func setDefaults(c *Config, src *source) {
	def := func(path string, set func()) {
		if !src.has(path) {
			set()
		}
	}
	def("buffer.path", func() { c.Buffer.Path = DefaultBufferPath })
	def("buffer.max_bytes", func() { c.Buffer.MaxBytes = DefaultMaxBytes })
	def("buffer.sync", func() { c.Buffer.Sync = SyncAlways })
	if c.Buffer.Sync == SyncInterval {
		def("buffer.sync_interval", func() { c.Buffer.SyncInterval = DefaultSyncInterval })
	}
	def("api.listen", func() { c.API.Listen = DefaultAPIListen })
	def("audit.path", func() { c.Audit.Path = filepath.Join(filepath.Dir(c.Buffer.Path), "audit.log") })
	def("audit.max_bytes", func() { c.Audit.MaxBytes = DefaultAuditBytes })
	def("audit.files", func() { c.Audit.Files = DefaultAuditFiles })

	m := &c.MQTT
	if u, err := url.Parse(m.URL); err == nil && u.Host != "" && u.Port() == "" {
		switch u.Scheme {
		case "tcp":
			u.Host = net.JoinHostPort(u.Hostname(), "1883")
		case "tls":
			u.Host = net.JoinHostPort(u.Hostname(), "8883")
		}
		m.URL = u.String()
	}
	def("mqtt.keepalive", func() { m.KeepAlive = DefaultKeepAlive })
	def("mqtt.connect_timeout", func() { m.ConnectTimeout = DefaultConnectTimeout })
	def("mqtt.publish_timeout", func() { m.PublishTimeout = DefaultPublishTimeout })
	def("mqtt.window", func() { m.Window = DefaultWindow })
	def("mqtt.qos", func() { m.QoS = DefaultQoS })
	def("mqtt.format", func() { m.Format = FormatJSON })
	def("mqtt.topic", func() { m.Topic = DefaultTopic })
	def("mqtt.prefix", func() { m.Prefix = DefaultPrefix })
	def("mqtt.status_topic", func() { m.StatusTopic = DefaultStatusTopic })

	def("profiles_dir", func() { c.ProfilesDir = DefaultProfilesDir })

	for i := range c.Devices {
		dev := &c.Devices[i]
		p := fmt.Sprintf("devices[%d]", i)
		// A profile's poll and modbus settings come between the device's
		// own keys and the built-in defaults.
		var prof profile
		var pm profileModbus
		if x := src.devices[p]; x != nil && x.profile != nil {
			prof = *x.profile
			if prof.Modbus != nil {
				pm = *prof.Modbus
			}
			// What the device takes from its profile was checked in the
			// profile file; don't report it again at the device.
			for _, key := range []string{"poll", "modbus.timeout", "modbus.max_registers", "modbus.max_bits", "modbus.pause"} {
				if !src.has(p+"."+key) && prof.src.has(key) {
					src.bad[p+"."+key] = true
				}
			}
		}
		def(p+".poll", func() { dev.Poll = cmp.Or(prof.Poll, DefaultPoll) })
		if mb := dev.Modbus; mb != nil {
			def(p+".modbus.unit", func() { mb.Unit = 1 })
			def(p+".modbus.timeout", func() { mb.Timeout = cmp.Or(pm.Timeout, modbus.DefaultTimeout) })
			def(p+".modbus.max_registers", func() { mb.MaxRegisters = pm.MaxRegisters })
			def(p+".modbus.max_bits", func() { mb.MaxBits = pm.MaxBits })
			def(p+".modbus.pause", func() { mb.Pause = pm.Pause })
			if mb.MaxGap == nil {
				g := uint16(modbus.DefaultMaxGap)
				if pm.MaxGap != nil {
					g = *pm.MaxGap
				}
				mb.MaxGap = &g
			}
			mb.Poll = dev.Poll
			mb.Tags = dev.Tags
		}
		if ua := dev.OPCUA; ua != nil {
			def(p+".opcua.security_policy", func() { ua.SecurityPolicy = "None" })
			def(p+".opcua.security_mode", func() {
				ua.SecurityMode = "SignAndEncrypt"
				if strings.EqualFold(ua.SecurityPolicy, "None") {
					ua.SecurityMode = "None"
				}
			})
			def(p+".opcua.auth.mode", func() { ua.Auth.Mode = "anonymous" })
			// A secure channel or a certificate identity needs the
			// gateway's own certificate: by default it lives in pki/
			// beside the buffer file, generated there on first connect.
			needCert := !strings.EqualFold(ua.SecurityMode, "None") || strings.EqualFold(ua.Auth.Mode, "certificate")
			if needCert && ua.CertFile == "" && ua.KeyFile == "" {
				pki := filepath.Join(filepath.Dir(c.Buffer.Path), "pki")
				ua.CertFile = filepath.Join(pki, "fieldgate.crt")
				ua.KeyFile = filepath.Join(pki, "fieldgate.key")
			}
			def(p+".opcua.timeout", func() { ua.Timeout = opcua.DefaultTimeout })
			for j := range dev.OPCUATags {
				if t := &dev.OPCUATags[j]; t.Mode == opcua.ModeDefault {
					t.Mode = opcua.ModePoll
				}
			}
			ua.Poll = dev.Poll
			ua.Tags = dev.OPCUATags
		}
	}
}

// resolvePaths makes relative file paths relative to dir, the folder of
// the config file.
func resolvePaths(c *Config, dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.Buffer.Path)
	abs(&c.Audit.Path)
	abs(&c.ProfilesDir)
	for i := range c.Devices {
		abs(&c.Devices[i].TagsCSV)
		if ua := c.Devices[i].OPCUA; ua != nil {
			abs(&ua.CertFile)
			abs(&ua.KeyFile)
			abs(&ua.Auth.CertFile)
			abs(&ua.Auth.KeyFile)
			abs(&ua.TrustDir)
		}
	}
	abs(&c.API.TokenFile)
	abs(&c.MQTT.PasswordFile)
	if t := c.MQTT.TLS; t != nil {
		abs(&t.CAFile)
		abs(&t.CertFile)
		abs(&t.KeyFile)
	}
}

// expandPaths expands ${ENV} in the paths of secret and certificate files,
// so that systemd credentials can be named as
// ${CREDENTIALS_DIRECTORY}/mqtt.pass. It runs before resolvePaths: a path
// that expands to an absolute one is not joined to the config's folder.
func expandPaths(c *Config, src *source) []*Error {
	var errs []*Error
	expand := func(path string, p *string) {
		if !strings.Contains(*p, "${") {
			return
		}
		s, err := expandEnv(*p)
		if err != nil {
			if !src.covered(path) {
				errs = append(errs, src.errorAt(nil, path, err, "%v", err))
				src.bad[path] = true // reported; resolveSecrets does not read it
			}
			return
		}
		*p = s
	}
	expand("api.token_file", &c.API.TokenFile)
	expand("mqtt.password_file", &c.MQTT.PasswordFile)
	if t := c.MQTT.TLS; t != nil {
		expand("mqtt.tls.ca_file", &t.CAFile)
		expand("mqtt.tls.cert_file", &t.CertFile)
		expand("mqtt.tls.key_file", &t.KeyFile)
	}
	for i := range c.Devices {
		if ua := c.Devices[i].OPCUA; ua != nil {
			p := fmt.Sprintf("devices[%d].opcua.", i)
			expand(p+"cert_file", &ua.CertFile)
			expand(p+"key_file", &ua.KeyFile)
			expand(p+"auth.cert_file", &ua.Auth.CertFile)
			expand(p+"auth.key_file", &ua.Auth.KeyFile)
		}
	}
	return errs
}

var envRef = regexp.MustCompile(`\$\$\{|\$\{([^}]*)\}|\$\{`)

// expandEnv replaces ${NAME} in s with the environment variable NAME;
// $${ stands for a literal ${. An unset variable is an error naming it.
func expandEnv(s string) (string, error) {
	var err error
	out := envRef.ReplaceAllStringFunc(s, func(m string) string {
		switch {
		case m == "$${":
			return "${"
		case m == "${":
			err = errors.New("unterminated ${; write $${ for a literal ${")
			return m
		}
		name := m[2 : len(m)-1]
		if !validEnvName(name) {
			err = fmt.Errorf("%q is not an environment variable name", name)
			return m
		}
		v, ok := os.LookupEnv(name)
		if !ok && err == nil {
			err = fmt.Errorf("environment variable %s is not set", name)
			if name == "CREDENTIALS_DIRECTORY" {
				err = fmt.Errorf("%w (systemd sets it for a unit with LoadCredential=; see docs/security.md)", err)
			}
		}
		return v
	})
	return out, err
}

func validEnvName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// resolveSecrets expands ${ENV} in mqtt.password and in each OPC UA
// device's opcua.auth.password, and reads mqtt.password_file and
// api.token_file.
func resolveSecrets(c *Config, src *source) []*Error {
	var errs []*Error
	fail := func(path string, cause error, format string, args ...any) {
		errs = append(errs, src.errorAt(nil, path, cause, format, args...))
	}
	m := &c.MQTT
	switch {
	case m.Password != "" && m.PasswordFile != "":
		fail("mqtt.password_file", nil, "set password or password_file, not both")
	case m.Password != "":
		p, err := expandEnv(string(m.Password))
		if err != nil {
			fail("mqtt.password", err, "%v", err)
		}
		m.Password = Secret(p)
	case m.PasswordFile != "" && !src.covered("mqtt.password_file"):
		p, err := readSecret(m.PasswordFile)
		if err != nil {
			fail("mqtt.password_file", err, "%v", err)
		}
		m.Password = p
	}
	for i, d := range c.Devices {
		if d.OPCUA == nil || d.OPCUA.Auth.Password == "" {
			continue
		}
		path := fmt.Sprintf("devices[%d].opcua.auth.password", i)
		p, err := expandEnv(string(d.OPCUA.Auth.Password))
		if err != nil && !src.covered(path) {
			fail(path, err, "%v", err)
		}
		d.OPCUA.Auth.Password = opcua.Secret(p)
	}
	if c.API.TokenFile != "" && !src.covered("api.token_file") {
		t, err := readSecret(c.API.TokenFile)
		if err != nil {
			fail("api.token_file", err, "%v", err)
		}
		c.API.Token = t
	}
	return errs
}

// readSecret reads a secret file, dropping one trailing newline.
func readSecret(path string) (Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read secret: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return Secret(s), nil
}
