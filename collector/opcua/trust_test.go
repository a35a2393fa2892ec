package opcua

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/sim/opcuasim"
)

// testCert makes a certificate for tests: self-signed when parent is nil.
func testCert(t *testing.T, uri string, ca bool, from, to time.Time, parent *x509.Certificate, parentKey *rsa.PrivateKey) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: uri},
		NotBefore:             from,
		NotAfter:              to,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  ca,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// TestVerifyServer checks the trust decisions: the same certificate in
// trusted/ (DER or PEM), a certificate signed by a CA in trusted/, and the
// refusals: unknown (saved in rejected/), expired, wrong application URI.
func TestVerifyServer(t *testing.T) {
	now := time.Now()
	valid := func() (time.Time, time.Time) { return now.Add(-time.Hour), now.Add(time.Hour) }
	from, to := valid()
	server, _ := testCert(t, "urn:srv", false, from, to, nil, nil)
	ca, caKey := testCert(t, "", true, from, to, nil, nil)
	signed, _ := testCert(t, "urn:srv", false, from, to, ca, caKey)
	expired, _ := testCert(t, "urn:srv", false, now.Add(-2*time.Hour), now.Add(-time.Hour), nil, nil)
	pemOf := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	cases := []struct {
		name    string
		trusted map[string][]byte // files in trusted/
		cert    []byte
		uri     string
		want    string // "" for trusted, "untrusted", or part of the error
	}{
		{"same DER", map[string][]byte{"s.der": server.Raw}, server.Raw, "urn:srv", ""},
		{"same PEM, any name", map[string][]byte{"server": pemOf(server)}, server.Raw, "urn:srv", ""},
		{"signed by a trusted CA", map[string][]byte{"ca.pem": pemOf(ca)}, signed.Raw, "urn:srv", ""},
		{"chain with the CA", map[string][]byte{"ca.pem": pemOf(ca)}, append(append([]byte{}, signed.Raw...), ca.Raw...), "urn:srv", ""},
		{"unknown", map[string][]byte{"ca.pem": pemOf(ca)}, server.Raw, "urn:srv", "untrusted"},
		{"empty folder", nil, server.Raw, "urn:srv", "untrusted"},
		{"a CA is not itself trusted as a server", map[string][]byte{"other.der": signed.Raw}, ca.Raw, "", "untrusted"},
		{"expired", map[string][]byte{"e.der": expired.Raw}, expired.Raw, "urn:srv", "is valid from"},
		{"application URI differs", map[string][]byte{"s.der": server.Raw}, server.Raw, "urn:other", "is for application URI urn:srv, but the server says it is urn:other"},
		{"not a certificate in trusted", map[string][]byte{"junk.pem": []byte("junk")}, server.Raw, "urn:srv", "neither a PEM nor a DER certificate"},
		{"no certificate", nil, nil, "urn:srv", "has no certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.trusted != nil {
				if err := os.MkdirAll(filepath.Join(dir, "trusted"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for name, b := range c.trusted {
				if err := os.WriteFile(filepath.Join(dir, "trusted", name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			hostOK, err := verifyServer(dir, c.cert, c.uri, "127.0.0.1", now)
			var ue *UntrustedError
			switch {
			case c.want == "":
				if err != nil || !hostOK {
					t.Fatalf("got %v (host ok %v), want trusted", err, hostOK)
				}
			case c.want == "untrusted":
				if !errors.As(err, &ue) {
					t.Fatalf("got %v, want an UntrustedError", err)
				}
				leaf, _ := x509.ParseCertificates(c.cert)
				saved := filepath.Join(dir, "rejected", Thumbprint(leaf[0].Raw)+".der")
				want := "the server's certificate is not trusted, saved as " + saved + "; move it to " + filepath.Join(dir, "trusted") + "/ to trust it"
				if err.Error() != want {
					t.Errorf("error\n%s\nwant\n%s", err, want)
				}
				if b, err := os.ReadFile(saved); err != nil || string(b) != string(leaf[0].Raw) {
					t.Errorf("saved certificate: %v", err)
				}
			default:
				if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got %v, want an error with %q", err, c.want)
				}
			}
		})
	}
	if ok, err := verifyServer(t.TempDir(), server.Raw, "", "plc.example", now); !errors.As(err, new(*UntrustedError)) || ok {
		t.Errorf("host plc.example: %v %v", ok, err)
	}
	dir := t.TempDir()
	_ = os.MkdirAll(filepath.Join(dir, "trusted"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "trusted", "s.der"), server.Raw, 0o644)
	if ok, err := verifyServer(dir, server.Raw, "", "plc.example", now); err != nil || ok {
		t.Errorf("a host the certificate does not name: host ok %v, err %v; want false, nil", ok, err)
	}
}

// TestUntrustedServerRefused connects with Basic256Sha256 to a simulator
// whose certificate is not trusted yet: the connect fails with the
// message naming both paths, the certificate is in rejected/, and after
// the file is moved to trusted/ the certificate check passes (the connect
// then goes on to open the secure channel, which gopcua v0.8.0's own
// server cannot do, gopcua/opcua#815; the full flow is tested against
// node-opcua in TestNodeOPCUASecurity).
func TestUntrustedServerRefused(t *testing.T) {
	s := startSim(t, opcuasim.Options{Security: []opcuasim.Security{{Policy: "Basic256Sha256", Mode: ua.MessageSecurityModeSignAndEncrypt}}})
	dir := t.TempDir()
	d := newDriver(t, Config{URL: s.URL(), SecurityPolicy: "Basic256Sha256", SecurityMode: "SignAndEncrypt",
		CertFile: filepath.Join(dir, "own", "gw.crt"), KeyFile: filepath.Join(dir, "own", "gw.key"), TrustDir: filepath.Join(dir, "pki"),
		Tags: []Tag{{Name: "temp", Node: s.NodeID("Temperature")}}})
	if err := os.MkdirAll(filepath.Join(dir, "own"), 0o700); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuf{}
	d.log = slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.Connect(ctx)
	var ue *UntrustedError
	if !errors.As(err, &ue) {
		t.Fatalf("connect = %v, want the server's certificate refused", err)
	}
	if !strings.HasSuffix(err.Error(), "the server's certificate is not trusted, saved as "+ue.Saved+"; move it to "+filepath.Join(dir, "pki", "trusted")+"/ to trust it") {
		t.Errorf("error: %v", err)
	}
	if filepath.Dir(ue.Saved) != filepath.Join(dir, "pki", "rejected") {
		t.Errorf("saved as %s", ue.Saved)
	}
	// Refused again: the same error, the file kept.
	if err := d.Connect(ctx); !errors.As(err, &ue) {
		t.Fatalf("second connect = %v", err)
	}
	if err := os.Rename(ue.Saved, filepath.Join(dir, "pki", "trusted", filepath.Base(ue.Saved))); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := d.Connect(ctx2); errors.As(err, &ue) {
		t.Fatalf("connect after trusting = %v", err)
	}
	// Logged once when the refusal started and once when it ended, not
	// at every attempt.
	if n := strings.Count(logs.String(), "server certificate not trusted"); n != 1 {
		t.Errorf("refusal logged %d times:\n%s", n, logs)
	}
	if n := strings.Count(logs.String(), "server certificate trusted now"); n != 1 {
		t.Errorf("trust logged %d times:\n%s", n, logs)
	}
}

// TestTrustFolderDefault: without trust_dir the folder is cert_file's.
func TestTrustFolderDefault(t *testing.T) {
	c := Config{CertFile: "/var/lib/fieldgate/pki/fieldgate.crt"}
	if got := c.TrustFolder(); got != "/var/lib/fieldgate/pki" {
		t.Errorf("TrustFolder = %q", got)
	}
	c.TrustDir = "/etc/fieldgate/opcua"
	if got := c.TrustFolder(); got != "/etc/fieldgate/opcua" {
		t.Errorf("TrustFolder = %q", got)
	}
}

// TestPasswordRedacted: printing a config never shows the password.
func TestPasswordRedacted(t *testing.T) {
	a := Auth{Mode: "username", Username: "u", Password: "s3cret"}
	for _, s := range []string{fmt.Sprintf("%v", a), fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a), fmt.Sprintf("%s", a.Password)} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("printed %s", s)
		}
	}
	if b, _ := a.Password.MarshalText(); string(b) != "[redacted]" {
		t.Errorf("MarshalText = %s", b)
	}
	if string(a.Password) != "s3cret" {
		t.Error("value lost")
	}
}
