package opcua

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// securePeer starts node-opcua with every security policy (see server.js:
// it accepts the gateway's certificate on its own, with
// automaticallyAcceptUnknownCertificate) and returns it with a config for
// it: the gateway's certificate generated in a temporary folder, and a
// trust folder that already trusts the server's certificate.
func securePeer(t *testing.T) (*peer, func(policy, mode string, auth Auth) Config) {
	t.Helper()
	p := startPeer(t, t.TempDir())
	own := t.TempDir()
	return p, func(policy, mode string, auth Auth) Config {
		trust := t.TempDir()
		trustCert(t, p, trust)
		return Config{URL: p.url, SecurityPolicy: policy, SecurityMode: mode, Auth: auth,
			CertFile: filepath.Join(own, "gw.crt"), KeyFile: filepath.Join(own, "gw.key"), TrustDir: trust, Timeout: 10 * time.Second,
			Tags: []Tag{
				{Name: "double", Node: "nsu=urn:fieldgate:peer;s=Double"},
				{Name: "counter", Node: "nsu=urn:fieldgate:peer;s=Counter", Mode: ModeSubscribe, Poll: 100 * time.Millisecond},
			}}
	}
}

// trustCert copies the peer's certificate into dir/trusted.
func trustCert(t *testing.T, p *peer, dir string) {
	t.Helper()
	b, err := os.ReadFile(p.serverCert())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "trusted"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "trusted", "peer.pem"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readsBoth reads the polled and the subscribed tag of securePeer's
// config through d.
func readsBoth(t *testing.T, d *Driver) {
	t.Helper()
	pg, sg := 0, 1
	if d.Mode(0) == ModeSubscribe {
		pg, sg = 1, 0
	}
	pts, err := read(t, d, pg)
	if err != nil || len(pts) != 1 || pts[0].Value != telemetry.Float(3.25) {
		t.Fatalf("read = %v, %v", pts, err)
	}
	first := waitPoints(t, d, sg, func(m map[string]telemetry.Point) bool { return m["counter"].Quality.IsGood() })
	c0 := first["counter"].Value.AsUint()
	waitPoints(t, d, sg, func(m map[string]telemetry.Point) bool { return m["counter"].Value.AsUint() > c0 })
}

// TestNodeOPCUASecurity opens secure channels with node-opcua: each
// policy the driver offers, Sign and SignAndEncrypt, and the anonymous,
// user-name and certificate identities; a wrong password is refused with
// a clear error.
func TestNodeOPCUASecurity(t *testing.T) {
	_, cfg := securePeer(t)
	user := Auth{Mode: "username", Username: "line3", Password: "s3cret"}
	cases := []struct {
		policy, mode string
		auth         Auth
	}{
		{"Basic256Sha256", "Sign", Auth{}},
		{"Basic256Sha256", "SignAndEncrypt", Auth{}},
		{"Aes128_Sha256_RsaOaep", "SignAndEncrypt", Auth{}},
		{"Aes256_Sha256_RsaPss", "SignAndEncrypt", Auth{}},
		{"Aes128_Sha256_RsaOaep", "Sign", user},
		{"Basic256Sha256", "SignAndEncrypt", user},
		{"Basic256Sha256", "SignAndEncrypt", Auth{Mode: "certificate"}},
	}
	for _, c := range cases {
		name := c.policy + "/" + c.mode + "/" + cmpOr(c.auth.Mode, "anonymous")
		t.Run(name, func(t *testing.T) {
			d := newDriver(t, cfg(c.policy, c.mode, c.auth))
			connect(t, d)
			readsBoth(t, d)
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		d := newDriver(t, cfg("Basic256Sha256", "SignAndEncrypt", Auth{Mode: "username", Username: "line3", Password: "hunter2"}))
		ctx, cancel := context.WithTimeout(context.Background(), d.Timeout())
		defer cancel()
		err := d.Connect(ctx)
		if err == nil || !strings.Contains(err.Error(), `the server refused user "line3"`) || !strings.Contains(err.Error(), "BadUserAccessDenied") {
			t.Fatalf("connect = %v", err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password: %v", err)
		}
	})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestNodeOPCUAUntrustedServer: a server certificate that is not trusted
// is refused and saved in rejected/; the test moves the file into
// trusted/, as the error says, and the next connect works.
func TestNodeOPCUAUntrustedServer(t *testing.T) {
	p, cfg := securePeer(t)
	c := cfg("Basic256Sha256", "SignAndEncrypt", Auth{})
	c.TrustDir = filepath.Join(t.TempDir(), "pki") // empty: nothing trusted
	d := newDriver(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), d.Timeout())
	defer cancel()
	err := d.Connect(ctx)
	var ue *UntrustedError
	if !errors.As(err, &ue) {
		t.Fatalf("connect = %v, want the server's certificate refused", err)
	}
	trusted := filepath.Join(c.TrustDir, "trusted")
	if want := "the server's certificate is not trusted, saved as " + ue.Saved + "; move it to " + trusted + "/ to trust it"; !strings.HasSuffix(err.Error(), want) {
		t.Errorf("error %q\ndoes not end with %q", err, want)
	}
	b, err := os.ReadFile(ue.Saved)
	if err != nil {
		t.Fatal(err)
	}
	own, err := os.ReadFile(p.serverCert())
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCerts(own)
	if err != nil || string(certs[0].Raw) != string(b) {
		t.Fatalf("saved certificate is not the server's: %v", err)
	}
	if err := os.Rename(ue.Saved, filepath.Join(trusted, filepath.Base(ue.Saved))); err != nil {
		t.Fatal(err)
	}
	connect(t, d)
	readsBoth(t, d)
}
