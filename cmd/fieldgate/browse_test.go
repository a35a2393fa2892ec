package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gopcua/opcua/ua"

	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/sim/opcuasim"
)

func startOPCUASim(t *testing.T, opts opcuasim.Options) *opcuasim.Server {
	t.Helper()
	s := opcuasim.New(opts)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestBrowsePrintsTree(t *testing.T) {
	s := startOPCUASim(t, opcuasim.Options{Pad: 1})
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"browse", "--url", s.URL()}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	t.Log(out)
	for _, re := range []string{
		`(?m)^Objects  i=85$`,
		`(?m)^  Server  i=2253  \(the server.s own nodes: list them with --node i=2253\)$`,
		`(?m)^    Temperature  nsu=urn:fieldgate:sim;s=Temperature  Double = 21\.5$`,
		`(?m)^    Pressure  nsu=urn:fieldgate:sim;s=Pressure  Float = 1\.25$`,
		`(?m)^    Running  nsu=urn:fieldgate:sim;s=Running  Boolean = true$`,
		`(?m)^    Mode  nsu=urn:fieldgate:sim;s=Mode  String = "auto"$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s", re)
		}
	}
}

// TestBrowseEmitYAMLLoads checks that the tags: list browse prints is a
// valid OPC UA device config.
func TestBrowseEmitYAMLLoads(t *testing.T) {
	s := startOPCUASim(t, opcuasim.Options{})
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"browse", "--url", s.URL(), "--emit", "yaml"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	t.Log(out)
	for _, want := range []string{
		`- { name: Temperature, node: "nsu=urn:fieldgate:sim;s=Temperature", mode: subscribe }  # Double = 21.5`,
		`- { name: Total, node: "nsu=urn:fieldgate:sim;s=Total", mode: subscribe }`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s", want)
		}
	}
	if strings.Contains(out, "i=2256") {
		t.Error("the server's own variables (namespace 0) are in the tag list")
	}
	var indented strings.Builder
	for line := range strings.Lines(out) {
		indented.WriteString("    " + line)
	}
	yaml := "gateway: { id: gw }\nmqtt: { url: tcp://127.0.0.1:1883 }\ndevices:\n  - name: sim\n    opcua: { url: \"" + s.URL() + "\" }\n" + indented.String()
	cfg, err := config.Parse("browse.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("%v\n%s", err, yaml)
	}
	if n := len(cfg.Devices[0].OPCUA.Tags); n != len(opcuasim.Defaults()) {
		t.Errorf("%d tags, want %d", n, len(opcuasim.Defaults()))
	}
}

func TestBrowseFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"browse"}, "--url is required"},
		{[]string{"browse", "--url", "http://x:4840"}, `--url: "http://x:4840": use opc.tcp://host:port`},
		{[]string{"browse", "--url", "opc.tcp://x:4840", "--security-policy", "Basic128"}, "--security-policy: use one of None"},
		{[]string{"browse", "--url", "opc.tcp://x:4840", "--node", "Temp"}, `--node: "Temp" is not a node id`},
		{[]string{"browse", "--url", "opc.tcp://x:4840", "--emit", "json"}, `--emit: "json" is not a format`},
		{[]string{"browse", "--url", "opc.tcp://x:4840", "--security-policy", "Basic256Sha256"}, "--trust-dir: a secure policy checks the server's certificate"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != exitConfig || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr.String(), exitConfig, tc.want)
		}
	}
}

func TestBrowseFromNamespaceURINode(t *testing.T) {
	s := startOPCUASim(t, opcuasim.Options{Pad: 3})
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"browse", "--url", s.URL(), "--node", s.NodeID("Counter"), "--depth", "0"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	if got, want := stdout.String(), "Counter  nsu=urn:fieldgate:sim;s=Counter  Uint32 = 0\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	stdout.Reset()
	code = run(context.Background(), []string{"browse", "--url", s.URL(), "--node", "nsu=urn:other;s=X"}, &stdout, &stderr)
	if code != exitFail || !strings.Contains(stderr.String(), `namespace "urn:other" is not on the server`) {
		t.Errorf("unknown namespace: exit %d, %s", code, stderr.String())
	}
}

// TestBrowseRefusesUntrustedServer: browse connects through the driver's
// setup, so a secure policy checks the server's certificate against
// --trust-dir and says where the refused one went.
func TestBrowseRefusesUntrustedServer(t *testing.T) {
	s := startOPCUASim(t, opcuasim.Options{Security: []opcuasim.Security{{Policy: "Basic256Sha256", Mode: ua.MessageSecurityModeSignAndEncrypt}}})
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"browse", "--url", s.URL(), "--security-policy", "Basic256Sha256", "--trust-dir", dir}, &stdout, &stderr)
	want := "the server's certificate is not trusted, saved as " + filepath.Join(dir, "rejected")
	if code != exitFail || !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "move it to "+filepath.Join(dir, "trusted")+"/ to trust it") {
		t.Errorf("exit %d, stderr %s", code, stderr.String())
	}
}
