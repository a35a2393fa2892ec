package config

import (
	"path/filepath"
	"testing"
)

// TestOPCUACertificateDefaultsBesideBuffer: a secure OPC UA device without
// cert_file gets the gateway's certificate in pki/ beside the buffer file;
// one with security None gets none, and explicit files are kept.
func TestOPCUACertificateDefaultsBesideBuffer(t *testing.T) {
	c, err := Parse("/etc/fieldgate/gw.yaml", []byte(`
gateway: { id: g }
buffer: { path: /var/lib/fieldgate/buffer.db }
mqtt: { url: tcp://b }
devices:
  - name: secure
    opcua: { url: "opc.tcp://10.0.0.30:4840", security_policy: Basic256Sha256 }
    tags: [ { name: a, node: "ns=3;i=1" } ]
  - name: plain
    opcua: { url: "opc.tcp://10.0.0.31:4840" }
    tags: [ { name: a, node: "ns=3;i=1" } ]
  - name: own
    opcua: { url: "opc.tcp://10.0.0.32:4840", security_policy: Basic256Sha256, cert_file: gw.crt, key_file: gw.key }
    tags: [ { name: a, node: "ns=3;i=1" } ]
  - name: usercert
    opcua: { url: "opc.tcp://10.0.0.33:4840", auth: { mode: certificate } }
    tags: [ { name: a, node: "ns=3;i=1" } ]
`))
	if err != nil {
		t.Fatal(err)
	}
	pki := "/var/lib/fieldgate/pki"
	for i, want := range [][2]string{
		{filepath.Join(pki, "fieldgate.crt"), filepath.Join(pki, "fieldgate.key")},
		{"", ""},
		{"/etc/fieldgate/gw.crt", "/etc/fieldgate/gw.key"},
		{filepath.Join(pki, "fieldgate.crt"), filepath.Join(pki, "fieldgate.key")},
	} {
		ua := c.Devices[i].OPCUA
		if ua.CertFile != want[0] || ua.KeyFile != want[1] {
			t.Errorf("%s: cert_file %q key_file %q, want %q %q", c.Devices[i].Name, ua.CertFile, ua.KeyFile, want[0], want[1])
		}
	}
	if got := c.Devices[0].OPCUA.TrustFolder(); got != pki {
		t.Errorf("trust folder %q, want %q", got, pki)
	}
}
