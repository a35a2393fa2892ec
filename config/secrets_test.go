package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCredentialsDirectoryInPaths checks that the paths of secret and
// certificate files expand ${ENV}, as a systemd unit with LoadCredential=
// needs (password_file: ${CREDENTIALS_DIRECTORY}/mqtt.pass), and that the
// expanded absolute paths are not joined to the config's folder.
func TestCredentialsDirectoryInPaths(t *testing.T) {
	creds := t.TempDir()
	for name, content := range map[string]string{"mqtt.pass": "s3cret-mqtt\n", "api.token": "s3cret-token\n"} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	c := parseOK(t, `
gateway: { id: g }
api: { token_file: "${CREDENTIALS_DIRECTORY}/api.token" }
mqtt:
  url: tls://b
  username: gw
  password_file: ${CREDENTIALS_DIRECTORY}/mqtt.pass
  tls: { ca_file: ca.crt, cert_file: "${CREDENTIALS_DIRECTORY}/gw.crt", key_file: "${CREDENTIALS_DIRECTORY}/gw.key" }
`+okDevices)
	if c.MQTT.Password != "s3cret-mqtt" || c.API.Token != "s3cret-token" {
		t.Errorf("password %q token %q, want the files' contents", string(c.MQTT.Password), string(c.API.Token))
	}
	if want := filepath.Join(creds, "mqtt.pass"); c.MQTT.PasswordFile != want {
		t.Errorf("password_file %q, want %q", c.MQTT.PasswordFile, want)
	}
	if want := filepath.Join(creds, "gw.key"); c.MQTT.TLS.KeyFile != want {
		t.Errorf("key_file %q, want %q", c.MQTT.TLS.KeyFile, want)
	}
	if want := filepath.Join(creds, "gw.crt"); c.MQTT.TLS.CertFile != want {
		t.Errorf("cert_file %q, want %q", c.MQTT.TLS.CertFile, want)
	}
	if c.MQTT.TLS.CAFile != "ca.crt" { // relative to the config's folder, "." here
		t.Errorf("ca_file %q, want ca.crt", c.MQTT.TLS.CAFile)
	}
}

// TestUnsetVariableInPath checks that an unset variable in a path is an
// error naming the variable, the file, the line and the key.
func TestUnsetVariableInPath(t *testing.T) {
	os.Unsetenv("CREDENTIALS_DIRECTORY") // t.Setenv cannot unset; restore below
	t.Cleanup(func() { os.Unsetenv("CREDENTIALS_DIRECTORY") })
	for _, tc := range []struct{ key, yaml, path string }{
		{"mqtt.password_file", "mqtt: { url: tcp://b, username: u, password_file: \"${CREDENTIALS_DIRECTORY}/mqtt.pass\" }", "mqtt.password_file"},
		{"api.token_file", "mqtt: { url: tcp://b }\napi: { token_file: \"${CREDENTIALS_DIRECTORY}/api.token\" }", "api.token_file"},
		{"mqtt.tls.key_file", "mqtt:\n  url: tls://b\n  tls: { cert_file: gw.crt, key_file: \"${CREDENTIALS_DIRECTORY}/gw.key\" }", "mqtt.tls.key_file"},
		{"opcua key_file", "mqtt: { url: tcp://b }\ndevices:\n  - name: d\n    opcua: { url: \"opc.tcp://h:4840\", cert_file: a.crt, key_file: \"${FG_NO_SUCH_VAR}/a.key\" }\n    tags: [{ name: t, node: \"ns=1;i=1\" }]", "devices[0].opcua.key_file"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			text := "gateway: { id: g }\n" + tc.yaml + "\n"
			if !strings.Contains(text, "devices:") {
				text += okDevices
			}
			_, err := Parse("plant.yaml", []byte(text))
			var found *Error
			for _, p := range problems(err) {
				if p.Path == tc.path {
					found = p
				}
			}
			if found == nil {
				t.Fatalf("no problem at %s in:\n%v", tc.path, err)
			}
			v := "CREDENTIALS_DIRECTORY"
			if strings.Contains(tc.yaml, "FG_NO_SUCH_VAR") {
				v = "FG_NO_SUCH_VAR"
			}
			if found.File != "plant.yaml" || found.Line < 2 || !strings.Contains(found.Error(), "environment variable "+v+" is not set") {
				t.Errorf("got %q (line %d), want plant.yaml, its line, and the unset variable %s", found.Error(), found.Line, v)
			}
			if v == "CREDENTIALS_DIRECTORY" && !strings.Contains(found.Error(), "LoadCredential=") {
				t.Errorf("%q does not point at LoadCredential=", found.Error())
			}
		})
	}
}

func TestTLSOptionsValidated(t *testing.T) {
	for _, tc := range []struct{ tls, path, want string }{
		{"{ cert_file: gw.crt }", "mqtt.tls.cert_file", "set key_file too"},
		{"{ key_file: gw.key }", "mqtt.tls.key_file", "set cert_file too"},
		{"{ ca_file: ca.crt, insecure_skip_verify: true }", "mqtt.tls.insecure_skip_verify", "ca_file is never used"},
		{"{ server_name: \"a b\" }", "mqtt.tls.server_name", "not a host name"},
	} {
		_, err := Parse("plant.yaml", []byte(fmt.Sprintf("gateway: { id: g }\nmqtt:\n  url: tls://b\n  tls: %s\n%s", tc.tls, okDevices)))
		ps := problems(err)
		if len(ps) != 1 || ps[0].Path != tc.path || ps[0].Line != 4 || !strings.Contains(ps[0].Msg, tc.want) {
			t.Errorf("tls %s: got %v, want one problem at plant.yaml:4 %s: %s", tc.tls, err, tc.path, tc.want)
		}
	}
	c := parseOK(t, "gateway: { id: g }\nmqtt:\n  url: tls://10.0.0.5\n  tls: { insecure_skip_verify: true, server_name: broker.plant }\n"+okDevices)
	if !c.MQTT.TLS.InsecureSkipVerify || c.MQTT.TLS.ServerName != "broker.plant" {
		t.Errorf("tls = %+v", *c.MQTT.TLS)
	}
	_, err := Parse("plant.yaml", []byte("gateway: { id: g }\nmqtt:\n  url: tcp://b\n  tls: { insecure_skip_verify: true }\n"+okDevices))
	if ps := problems(err); len(ps) != 1 || ps[0].Path != "mqtt.tls" || !strings.Contains(ps[0].Msg, "tls://") {
		t.Errorf("tls with tcp://: got %v", err)
	}
}

// TestSecretsNotPrinted checks that printing a loaded config, in every fmt
// form, shows none of its secrets.
func TestSecretsNotPrinted(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api.token"), []byte("tok-3f9a1c"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FG_TEST_MQTT_PW", "pw-77b2e4")
	c := parseOK(t, `
gateway: { id: g }
api: { listen: 0.0.0.0:8080, token_file: `+filepath.Join(dir, "api.token")+` }
mqtt: { url: tcp://b, username: gw, password: "${FG_TEST_MQTT_PW}" }
`+okDevices)
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(f, c)
		for _, secret := range []string{"pw-77b2e4", "tok-3f9a1c"} {
			if strings.Contains(out, secret) {
				t.Errorf("fmt %s of the config shows a secret:\n%s", f, out)
			}
		}
	}
}
