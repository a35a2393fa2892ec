package opcua

import (
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// UntrustedError is the error of a connect refused because the server's
// certificate is not in the trusted folder (nor signed by a CA there).
// The certificate has been saved as Saved; moving it into Trusted makes
// the next connect accept it.
type UntrustedError struct {
	Thumbprint string // SHA-1 of the certificate's DER bytes, lower-case hex
	Saved      string // rejected/<thumbprint>.der
	Trusted    string // the trusted/ folder
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("the server's certificate is not trusted, saved as %s; move it to %s to trust it", e.Saved, e.Trusted)
}

// Thumbprint returns a certificate's OPC UA thumbprint: the SHA-1 of its
// DER bytes, in lower-case hex.
func Thumbprint(der []byte) string {
	sum := sha1.Sum(der)
	return hex.EncodeToString(sum[:])
}

// verifyServer checks the certificate a server's endpoint presents
// (der: one DER certificate, or a chain of them, leaf first) against the
// trust folder dir:
//
//   - the certificate must be in dir/trusted (the same DER bytes, in a
//     .der, .cer, .crt or .pem file), or be signed by a CA certificate
//     there;
//   - it must be valid at now;
//   - when it names application URIs, one must be appURI (the server's
//     application URI from its endpoint description).
//
// An untrusted certificate is written to dir/rejected/<thumbprint>.der and
// the error is an *UntrustedError saying where to move it. hostOK says
// whether the certificate names host (the endpoint URL's host) among its
// DNS names or IP addresses; a mismatch is not an error (many servers are
// reached by an address their certificate does not name), the driver logs
// it.
func verifyServer(dir string, der []byte, appURI, host string, now time.Time) (hostOK bool, err error) {
	if len(der) == 0 {
		return false, errors.New("the server's endpoint has no certificate")
	}
	chain, err := x509.ParseCertificates(der)
	if err != nil || len(chain) == 0 {
		return false, fmt.Errorf("the server's certificate cannot be parsed: %v", err)
	}
	leaf := chain[0]
	trusted := filepath.Join(dir, "trusted")
	certs, err := loadCerts(trusted)
	if err != nil {
		return false, err
	}
	ok := false
	roots := x509.NewCertPool()
	cas := 0
	for _, c := range certs {
		if slices.Equal(c.Raw, leaf.Raw) {
			ok = true
			break
		}
		if c.IsCA {
			roots.AddCert(c)
			cas++
		}
	}
	if !ok && cas > 0 {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		_, verr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		ok = verr == nil
	}
	if !ok {
		return false, reject(dir, leaf)
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return false, fmt.Errorf("the server's certificate (%s) is valid from %s to %s only; renew it on the server",
			Thumbprint(leaf.Raw), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if appURI != "" && len(leaf.URIs) > 0 && !slices.ContainsFunc(leaf.URIs, func(u *url.URL) bool { return u.String() == appURI }) {
		var have []string
		for _, u := range leaf.URIs {
			have = append(have, u.String())
		}
		return false, fmt.Errorf("the server's certificate is for application URI %s, but the server says it is %s", strings.Join(have, ", "), appURI)
	}
	return leaf.VerifyHostname(host) == nil, nil
}

// reject saves leaf in dir/rejected and returns the UntrustedError.
func reject(dir string, leaf *x509.Certificate) error {
	thumb := Thumbprint(leaf.Raw)
	e := &UntrustedError{
		Thumbprint: thumb,
		Saved:      filepath.Join(dir, "rejected", thumb+".der"),
		Trusted:    filepath.Join(dir, "trusted") + string(filepath.Separator),
	}
	if err := os.MkdirAll(filepath.Join(dir, "rejected"), 0o755); err != nil {
		return fmt.Errorf("the server's certificate is not trusted, and saving it failed: %w", err)
	}
	if _, err := os.Stat(e.Saved); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(e.Saved, leaf.Raw, 0o644); err != nil {
			return fmt.Errorf("the server's certificate is not trusted, and saving it failed: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "trusted"), 0o755); err != nil {
		return fmt.Errorf("the server's certificate is not trusted, and creating %s failed: %w", e.Trusted, err)
	}
	return e
}

// loadCerts reads every certificate in folder: DER files and PEM files
// (any number of CERTIFICATE blocks), by content, whatever their names
// end with. A missing folder holds none; a file that is no certificate is
// an error naming it.
func loadCerts(folder string) ([]*x509.Certificate, error) {
	ents, err := os.ReadDir(folder)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trusted certificates: %w", err)
	}
	var out []*x509.Certificate
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(folder, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("trusted certificates: %w", err)
		}
		certs, err := parseCerts(b)
		if err != nil {
			return nil, fmt.Errorf("trusted certificate %s: %v", path, err)
		}
		out = append(out, certs...)
	}
	return out, nil
}

// parseCerts parses PEM CERTIFICATE blocks, or else DER.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) > 0 {
		return out, nil
	}
	certs, err := x509.ParseCertificates(b)
	if err != nil {
		return nil, errors.New("neither a PEM nor a DER certificate")
	}
	return certs, nil
}

// urlHost returns the host of an opc.tcp:// URL without its port.
func urlHost(u string) string {
	rest := strings.TrimPrefix(u, "opc.tcp://")
	hostport, _, _ := strings.Cut(rest, "/")
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
