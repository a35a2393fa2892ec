package opcua

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

// clientOptions asks the server for its endpoints, picks the one with the
// configured policy and mode, and returns the client options for it:
// security, the gateway's certificate, and the user identity.
func (d *Driver) clientOptions(ctx context.Context) ([]opcua.Option, error) {
	policy, mode, err := d.cfg.Security()
	if err != nil {
		return nil, err
	}
	var opts []opcua.Option
	var cert *tls.Certificate
	if d.cfg.CertFile != "" {
		c, err := LoadOrCreateCert(d.cfg.CertFile, d.cfg.KeyFile, "urn:fieldgate:gateway")
		if err != nil {
			return nil, err
		}
		cert = &c
		opts = append(opts, opcua.Certificate(c.Certificate[0]), opcua.PrivateKey(c.PrivateKey.(*rsa.PrivateKey)))
	}
	eps, err := opcua.GetEndpoints(ctx, d.cfg.URL, opcua.DialTimeout(d.timeout), opcua.RequestTimeout(d.timeout))
	if err != nil {
		return nil, fmt.Errorf("get endpoints: %w", err)
	}
	ep, err := opcua.SelectEndpoint(eps, policy, mode)
	if err != nil {
		var have []string
		for _, e := range eps {
			have = append(have, strings.TrimPrefix(e.SecurityPolicyURI, ua.SecurityPolicyURIPrefix)+"/"+e.SecurityMode.String())
		}
		return nil, fmt.Errorf("the server offers no endpoint with security_policy %s and security_mode %s (it offers %s)",
			strings.TrimPrefix(policy, ua.SecurityPolicyURIPrefix), mode, strings.Join(have, ", "))
	}
	if mode != ua.MessageSecurityModeNone {
		if err := d.trust(ep); err != nil {
			return nil, err
		}
	}
	opts = append(opts,
		opcua.AutoReconnect(false), // the collector reconnects, with backoff
		opcua.DialTimeout(d.timeout),
		opcua.RequestTimeout(d.timeout),
	)
	var tok ua.UserTokenType
	switch strings.ToLower(d.cfg.Auth.Mode) {
	case "", "anonymous":
		tok = ua.UserTokenTypeAnonymous
		opts = append(opts, opcua.AuthAnonymous())
	case "username":
		tok = ua.UserTokenTypeUserName
		opts = append(opts, opcua.AuthUsername(d.cfg.Auth.Username, string(d.cfg.Auth.Password)))
	case "certificate":
		tok = ua.UserTokenTypeCertificate
		uc := cert
		if d.cfg.Auth.CertFile != "" {
			c, err := LoadOrCreateCert(d.cfg.Auth.CertFile, d.cfg.Auth.KeyFile, "urn:fieldgate:user")
			if err != nil {
				return nil, err
			}
			uc = &c
		}
		opts = append(opts, opcua.AuthCertificate(uc.Certificate[0]), opcua.AuthPrivateKey(uc.PrivateKey.(*rsa.PrivateKey)))
	}
	offered := false
	for _, t := range ep.UserIdentityTokens {
		offered = offered || t.TokenType == tok
	}
	if !offered {
		return nil, fmt.Errorf("the server's %s/%s endpoint does not accept auth mode %s", strings.TrimPrefix(ep.SecurityPolicyURI, ua.SecurityPolicyURIPrefix), ep.SecurityMode, tokenName(tok))
	}
	return append(opts, opcua.SecurityFromEndpoint(ep, tok)), nil
}

// trust checks the certificate of the endpoint ep against the trust
// folder (see verifyServer). It logs a refusal once, when it starts (the
// collector retries Connect with backoff, and the refusal holds until
// someone moves the file), and when a refused server is trusted again.
//
// The certificate checked is the one the endpoint description carries:
// gopcua v0.8.0 encrypts the channel's opening request with its public
// key, so only the holder of its private key can open the channel.
func (d *Driver) trust(ep *ua.EndpointDescription) error {
	appURI := ""
	if ep.Server != nil {
		appURI = ep.Server.ApplicationURI
	}
	hostOK, err := verifyServer(d.cfg.TrustFolder(), ep.ServerCertificate, appURI, urlHost(d.cfg.URL), time.Now())
	var ue *UntrustedError
	if errors.As(err, &ue) {
		if d.rejected != ue.Thumbprint {
			d.rejected = ue.Thumbprint
			d.log.Warn("server certificate not trusted", "saved", ue.Saved, "trusted_dir", ue.Trusted, "thumbprint", ue.Thumbprint)
		}
		return err
	}
	if err != nil {
		return err
	}
	if d.rejected != "" {
		d.log.Info("server certificate trusted now", "thumbprint", Thumbprint(leafDER(ep.ServerCertificate)))
		d.rejected = ""
	}
	if !hostOK && !d.hostWarned {
		d.hostWarned = true
		d.log.Warn("the server's certificate does not name the host of the url; accepted because the certificate is trusted", "host", urlHost(d.cfg.URL))
	}
	return nil
}

// leafDER returns the first certificate of a DER chain.
func leafDER(der []byte) []byte {
	if c, err := x509.ParseCertificates(der); err == nil && len(c) > 0 {
		return c[0].Raw
	}
	return der
}

func tokenName(t ua.UserTokenType) string {
	switch t {
	case ua.UserTokenTypeUserName:
		return "username"
	case ua.UserTokenTypeCertificate:
		return "certificate"
	}
	return "anonymous"
}

// LoadOrCreateCert loads an RSA certificate and key (PEM). When neither
// file exists it first generates a self-signed pair valid for ten years,
// with appURI as its URI (OPC UA requires it), writing the key with mode
// 0600 (and creating missing folders with mode 0700).
func LoadOrCreateCert(certFile, keyFile, appURI string) (tls.Certificate, error) {
	_, cerr := os.Stat(certFile)
	_, kerr := os.Stat(keyFile)
	if errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist) {
		certPEM, keyPEM, err := NewCert(appURI, 10*365*24*time.Hour)
		if err != nil {
			return tls.Certificate{}, err
		}
		for _, f := range []string{keyFile, certFile} {
			if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
				return tls.Certificate{}, fmt.Errorf("create the certificate's folder: %w", err)
			}
		}
		if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
			return tls.Certificate{}, fmt.Errorf("write key: %w", err)
		}
		if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
			return tls.Certificate{}, fmt.Errorf("write certificate: %w", err)
		}
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return c, fmt.Errorf("load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	if _, ok := c.PrivateKey.(*rsa.PrivateKey); !ok {
		return c, fmt.Errorf("key %s: OPC UA needs an RSA key", keyFile)
	}
	return c, nil
}

// NewCert returns a self-signed OPC UA application certificate and its
// RSA key, PEM-encoded.
func NewCert(appURI string, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(appURI)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "fieldgate", Organization: []string{"fieldgate"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              []string{"localhost", host},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return certPEM, keyPEM, nil
}
