package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/gateway"
	"github.com/fieldgate/fieldgate/internal/peers"
)

// testPKI is a throwaway certificate authority with a broker certificate
// (SAN 127.0.0.1 and localhost), a client certificate, and a second,
// unrelated CA. Every file is PEM in one folder.
type testPKI struct {
	dir                      string
	ca, otherCA              string // CA certificates
	serverCert, serverKey    string
	clientCert, clientKey    string
	strangerCert, strangerKy string // a client certificate signed by otherCA
}

var serial atomic.Int64

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	openToBroker(t, p.dir)
	caCert, caKey := makeCert(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "fieldgate test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	otherCert, otherKey := makeCert(t, nil, nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "unrelated CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	srvCert, srvKey := makeCert(t, caCert, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "test broker"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	cliCert, cliKey := makeCert(t, caCert, caKey, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "tls-gw"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	strCert, strKey := makeCert(t, otherCert, otherKey, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "stranger"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.ca = p.writeCert(t, "ca.crt", caCert)
	p.otherCA = p.writeCert(t, "other-ca.crt", otherCert)
	p.serverCert, p.serverKey = p.writeCert(t, "server.crt", srvCert), p.writeKey(t, "server.key", srvKey)
	p.clientCert, p.clientKey = p.writeCert(t, "gw.crt", cliCert), p.writeKey(t, "gw.key", cliKey)
	p.strangerCert, p.strangerKy = p.writeCert(t, "stranger.crt", strCert), p.writeKey(t, "stranger.key", strKey)
	return p
}

// makeCert creates tmpl signed by parent (self-signed when parent is nil).
func makeCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (p *testPKI) writeCert(t *testing.T, name string, c *x509.Certificate) string {
	t.Helper()
	return p.write(t, name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func (p *testPKI) writeKey(t *testing.T, name string, k *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func (p *testPKI) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	// Readable by all, for Mosquitto (see openToBroker); test keys only.
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// openToBroker makes dir and its parent (the test's temporary folder)
// readable by all: Mosquitto started as root reads its certificates and
// password file after dropping to the mosquitto user.
func openToBroker(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// tlsBrokerOptions configure the TLS listener of startTLSMosquitto.
type tlsBrokerOptions struct {
	requireCert bool              // require_certificate: mutual TLS
	users       map[string]string // user → password; empty allows anonymous clients
}

// tlsMosquitto is a Mosquitto with a plain listener for the checking
// subscriber and a TLS listener for the gateway.
type tlsMosquitto struct {
	plain, tls string // host:port of each listener
}

// startTLSMosquitto starts Mosquitto with the PKI's broker certificate on a
// TLS listener configured by o, and a plain anonymous listener.
func startTLSMosquitto(t *testing.T, p *testPKI, o tlsBrokerOptions) *tlsMosquitto {
	t.Helper()
	tlsPort := peers.FreePort(t)
	var b strings.Builder
	fmt.Fprintf(&b, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", tlsPort, p.ca, p.serverCert, p.serverKey)
	fmt.Fprintf(&b, "require_certificate %t\n", o.requireCert)
	if len(o.users) == 0 {
		fmt.Fprintf(&b, "allow_anonymous true\n")
	} else {
		passwd, err := exec.LookPath("mosquitto_passwd")
		if err != nil {
			t.Skip("mosquitto_passwd not found (Debian package mosquitto): skipping the password case")
		}
		dir := t.TempDir()
		openToBroker(t, dir)
		pwFile := filepath.Join(dir, "passwd")
		for user, pw := range o.users {
			args := []string{"-b", pwFile, user, pw}
			if _, err := os.Stat(pwFile); err != nil {
				args = append([]string{"-c"}, args...)
			}
			if out, err := exec.Command(passwd, args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
			}
		}
		if err := os.Chmod(pwFile, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "allow_anonymous false\npassword_file %s\n", pwFile)
	}
	m := peers.StartMosquitto(t, peers.MosquittoOptions{Global: "per_listener_settings true", Extra: b.String()})
	return &tlsMosquitto{plain: m.Addr(), tls: fmt.Sprintf("127.0.0.1:%d", tlsPort)}
}

// tlsGateway is a gateway under test with its log captured.
type tlsGateway struct {
	g   *gateway.Gateway
	log *peers.SyncBuffer
}

// startTLSGateway runs a gateway with one simulated Modbus device against
// brokerURL; mqtt holds the extra lines of its mqtt: section (indented by
// two spaces).
func startTLSGateway(t *testing.T, brokerURL, mqtt string) *tlsGateway {
	t.Helper()
	dir := t.TempDir()
	dev := startDevice(t)
	text := fmt.Sprintf(`gateway: { id: tls-gw }
buffer: { path: %s/buffer.db }
api: { listen: "127.0.0.1:0" }
mqtt:
  url: %s
  keepalive: 5s
  connect_timeout: 3s
  publish_timeout: 3s
%s
devices:
  - name: press
    modbus: { url: "tcp://%s", timeout: 500ms }
    poll: 100ms
    tags: [{ name: r0, address: 40001, type: uint16 }]
`, dir, brokerURL, mqtt, dev)
	path := filepath.Join(dir, "fieldgate.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config:\n%s\n%v", text, err)
	}
	tg := &tlsGateway{log: new(peers.SyncBuffer)}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(tg.log, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelInfo}))
	tg.g, err = gateway.New(cfg, gateway.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	peers.Run(t, 15*time.Second, tg.g.Run)
	return tg
}

// delivers waits until readings from the gateway reach a subscriber on the
// broker's plain listener.
func (tg *tlsGateway) delivers(t *testing.T, m *tlsMosquitto) {
	t.Helper()
	sub := subscribe(t, m.plain, "fieldgate/tls-gw/#")
	peers.CheckFor(t, 30*time.Second, "readings arrive through the TLS listener", func() error {
		sub.mu.Lock()
		n := sub.msgs
		sub.mu.Unlock()
		if n < 3 {
			return fmt.Errorf("%d data messages received; uplink %+v", n, tg.g.Status().Uplink)
		}
		return nil
	})
	if e := tg.g.Status().Uplink.LastError; e != "" {
		t.Errorf("uplink last error %q after delivering", e)
	}
}

// fails waits until the uplink reports a connection error containing each
// of want, checks that the log says the same, and that it never connected.
func (tg *tlsGateway) fails(t *testing.T, want ...string) {
	t.Helper()
	peers.CheckFor(t, 30*time.Second, "the uplink reports a connection error", func() error {
		if e := tg.g.Status().Uplink.LastError; e == "" {
			return fmt.Errorf("no error yet")
		}
		return nil
	})
	st := tg.g.Status().Uplink
	for _, w := range want {
		if !strings.Contains(st.LastError, w) {
			t.Errorf("uplink last error %q does not say %q", st.LastError, w)
		}
	}
	peers.CheckFor(t, 10*time.Second, "the log says why", func() error {
		for _, l := range tg.log.Lines() {
			if strings.Contains(l, "cannot connect to the broker") && strings.Contains(l, want[0]) {
				return nil
			}
		}
		return fmt.Errorf("no warning containing %q in the log", want[0])
	})
	if st.Connected || st.Acked != 0 {
		t.Errorf("uplink connected %v, acked %d: it must not have connected", st.Connected, st.Acked)
	}
}

// TestTLSAgainstMosquitto runs the whole gateway (a simulated Modbus device,
// the buffer, the uplink) against a real Mosquitto with a TLS listener and a
// CA, broker and client certificates generated by the test: the right CA
// delivers, a wrong CA or a wrong server name is refused with an error naming
// the CA file, mutual TLS works with the client certificate and fails
// clearly without it, and user names and passwords work over TLS.
func TestTLSAgainstMosquitto(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	p := newTestPKI(t)

	t.Run("right CA delivers", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{})
		tg := startTLSGateway(t, "tls://"+m.tls, "  tls: { ca_file: "+p.ca+" }")
		tg.delivers(t, m)
	})
	t.Run("server_name picks the name checked", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{})
		tg := startTLSGateway(t, "tls://"+m.tls, "  tls: { ca_file: "+p.ca+", server_name: localhost }")
		tg.delivers(t, m)
	})
	t.Run("wrong CA is refused naming the CA file", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{})
		tg := startTLSGateway(t, "tls://"+m.tls, "  tls: { ca_file: "+p.otherCA+" }")
		tg.fails(t, "mqtt.tls.ca_file "+p.otherCA, "certificate signed by unknown authority")
	})
	t.Run("wrong server name is refused", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{})
		tg := startTLSGateway(t, "tls://"+m.tls, "  tls: { ca_file: "+p.ca+", server_name: broker.example }")
		tg.fails(t, "mqtt.tls.ca_file "+p.ca, "not broker.example")
	})
	t.Run("system roots refuse a private CA", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{})
		tg := startTLSGateway(t, "tls://"+m.tls, "")
		tg.fails(t, "set mqtt.tls.ca_file", "certificate signed by unknown authority")
	})
	t.Run("insecure_skip_verify connects and warns", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{})
		tg := startTLSGateway(t, "tls://"+m.tls, "  tls: { insecure_skip_verify: true }")
		tg.delivers(t, m)
		found := false
		for _, l := range tg.log.Lines() {
			found = found || strings.Contains(l, "level=WARN") && strings.Contains(l, "insecure_skip_verify")
		}
		if !found {
			t.Errorf("no warning about insecure_skip_verify in the log:\n%s", tg.log.String())
		}
	})
	t.Run("mTLS without a client certificate is refused", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{requireCert: true})
		tg := startTLSGateway(t, "tls://"+m.tls, "  tls: { ca_file: "+p.ca+" }")
		// The broker's alert says "certificate required"; if the broker's
		// reset loses it, the gateway still knows the broker asked for one.
		tg.fails(t, "mqtt.tls.cert_file", "client certificate")
	})
	t.Run("mTLS with a certificate of another CA is refused", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{requireCert: true})
		tg := startTLSGateway(t, "tls://"+m.tls, "  tls: { ca_file: "+p.ca+", cert_file: "+p.strangerCert+", key_file: "+p.strangerKy+" }")
		// "refused the client certificate" with the broker's alert, or
		// "closed the connection after the TLS handshake" if a reset lost it.
		tg.fails(t, "mqtt.tls.cert_file")
	})
	t.Run("mTLS with the client certificate delivers", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{requireCert: true})
		tg := startTLSGateway(t, "tls://"+m.tls, "  tls: { ca_file: "+p.ca+", cert_file: "+p.clientCert+", key_file: "+p.clientKey+" }")
		tg.delivers(t, m)
	})
	t.Run("password over TLS delivers", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{users: map[string]string{"line3": "right-pw"}})
		pw := filepath.Join(t.TempDir(), "mqtt.pass")
		if err := os.WriteFile(pw, []byte("right-pw\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("FG_TEST_CREDS", filepath.Dir(pw))
		tg := startTLSGateway(t, "tls://"+m.tls, "  username: line3\n  password_file: ${FG_TEST_CREDS}/mqtt.pass\n  tls: { ca_file: "+p.ca+" }")
		tg.delivers(t, m)
	})
	t.Run("wrong password over TLS is refused", func(t *testing.T) {
		m := startTLSMosquitto(t, p, tlsBrokerOptions{users: map[string]string{"line3": "right-pw"}})
		t.Setenv("FG_TEST_MQTT_PASSWORD", "wrong-pw")
		tg := startTLSGateway(t, "tls://"+m.tls, "  username: line3\n  password: ${FG_TEST_MQTT_PASSWORD}\n  tls: { ca_file: "+p.ca+" }")
		tg.fails(t, "refused the user name or password", "not Authorized")
		if strings.Contains(tg.log.String(), "wrong-pw") {
			t.Errorf("the log shows the password:\n%s", tg.log.String())
		}
	})
}
