package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	ibroker "github.com/fieldgate/fieldgate/internal/broker"
)

// The secrets of secretsConfig: none may appear in any output.
const (
	mqttSecret  = "mqtt-pw-5d1e0a"
	opcuaSecret = "opcua-pw-c72b94"
	tokenSecret = "api-token-8e3f61"
)

// secretsConfig writes a config whose MQTT password comes from a file named
// through ${CREDENTIALS_DIRECTORY}, whose OPC UA password comes from
// ${ENV}, and whose API token comes from a file, with a broker that refuses
// the password and devices that refuse connections. It returns the
// config's path.
func secretsConfig(t *testing.T) string {
	t.Helper()
	dir, creds := t.TempDir(), t.TempDir()
	for name, secret := range map[string]string{"mqtt.pass": mqttSecret, "api.token": tokenSecret} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	t.Setenv("FG_TEST_OPCUA_PASSWORD", opcuaSecret)
	cfg := fmt.Sprintf(`gateway: { id: gw }
buffer: { path: %s/buffer.db }
api: { listen: "127.0.0.1:0", token_file: "${CREDENTIALS_DIRECTORY}/api.token" }
mqtt:
  url: "tcp://%s"
  username: line3
  password_file: ${CREDENTIALS_DIRECTORY}/mqtt.pass
  connect_timeout: 1s
devices:
  - name: press-1
    modbus: { url: "tcp://%s", timeout: 200ms }
    poll: 100ms
    tags: [{ name: t, address: 40001, type: uint16 }]
  - name: cnc-2
    opcua:
      url: "opc.tcp://%s"
      timeout: 500ms
      auth: { mode: username, username: ua-user, password: "${FG_TEST_OPCUA_PASSWORD}" }
    poll: 200ms
    tags: [{ name: speed, node: "ns=2;s=Speed" }]
`, dir, refusingBroker(t), closedPort(t), closedPort(t))
	path := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// refusingBroker starts an embedded MQTT broker that accepts the user line3
// only with another password, and returns its address.
func refusingBroker(t *testing.T) string {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	ledger := &auth.Ledger{Auth: auth.AuthRules{{Username: "line3", Password: "not-the-one", Allow: true}}}
	if err := srv.AddHook(new(auth.Hook), &auth.Options{Ledger: ledger}); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ibroker.CloseServer(srv) })
	return l.Address()
}

func noSecrets(t *testing.T, where, text string) {
	t.Helper()
	for _, s := range []string{mqttSecret, opcuaSecret, tokenSecret} {
		if strings.Contains(text, s) {
			t.Errorf("%s shows the secret %q:\n%s", where, s, text)
		}
	}
}

// TestValidateShowsNoSecrets runs fieldgate validate, with and without
// --plan, on a valid config and on one with an error.
func TestValidateShowsNoSecrets(t *testing.T) {
	path := secretsConfig(t)
	for _, args := range [][]string{{"validate", "-c", path}, {"validate", "--plan", "-c", path}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitOK {
			t.Fatalf("%v: exit %d:\n%s%s", args, code, stdout.String(), stderr.String())
		}
		noSecrets(t, strings.Join(args, " "), stdout.String()+stderr.String())
	}
	// A config with problems, some next to the secrets.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(data), "username: line3", "username: \"\"", 1)
	bad = strings.Replace(bad, "mode: username,", "mode: usrname,", 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"validate", "-c", path}, &stdout, &stderr); code == exitOK {
		t.Fatalf("validate accepted a bad config:\n%s", stdout.String())
	}
	noSecrets(t, "validate of a bad config", stdout.String()+stderr.String())
	t.Logf("validate of a bad config:\n%s", stderr.String())
}

var apiAddr = regexp.MustCompile(`msg="management API listening".* addr=(http://\S+)`)

// TestRunShowsNoSecrets runs the gateway at debug level against a broker
// and devices that refuse connections, so that every failure is logged, and
// reads every management API endpoint, with and without the token.
func TestRunShowsNoSecrets(t *testing.T) {
	path := secretsConfig(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout bytes.Buffer
	stderr := new(lockedBuffer)
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"run", "--log-level", "debug", "-c", path}, &stdout, stderr) }()

	var base string
	checkFor(t, 20*time.Second, "broker and device failures logged and the API listening", func() error {
		s := stderr.String()
		for _, want := range []string{"cannot connect to the broker", "refused the user name or password", "press-1", "cnc-2", "management API listening"} {
			if !strings.Contains(s, want) {
				return fmt.Errorf("no log line says %q yet:\n%s", want, s)
			}
		}
		m := apiAddr.FindStringSubmatch(s)
		if m == nil {
			return fmt.Errorf("no API address in the log")
		}
		base = m[1]
		return nil
	})
	client := &http.Client{Timeout: 5 * time.Second}
	for _, ep := range []string{"/metrics", "/healthz", "/readyz", "/nothing"} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + tokenSecret} {
			req, err := http.NewRequest(http.MethodGet, base+ep, nil)
			if err != nil {
				t.Fatal(err)
			}
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", ep, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if auth != "Bearer "+tokenSecret && resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s with %q: status %d, want 401", ep, auth, resp.StatusCode)
			}
			var hdr strings.Builder
			_ = resp.Header.Write(&hdr)
			noSecrets(t, fmt.Sprintf("GET %s (Authorization %q)", ep, strings.TrimPrefix(auth, "Bearer "+tokenSecret)), hdr.String()+string(body))
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit code %d after stop", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("gateway did not stop within 15 s")
	}
	noSecrets(t, "the log of a run", stderr.String()+stdout.String())
	t.Logf("log:\n%s", stderr.String())
}
