package opcua

import (
	"bytes"
	_ "embed"
	"os"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed example.yaml
var exampleYAML []byte

// TestExampleParses keeps example.yaml (shown in README.md) valid: it
// decodes strictly into the driver's config types, validates, and builds
// a driver.
func TestExampleParses(t *testing.T) {
	var dev struct {
		Name  string        `yaml:"name"`
		OPCUA Config        `yaml:"opcua"`
		Poll  time.Duration `yaml:"poll"`
		Tags  []Tag         `yaml:"tags"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(exampleYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&dev); err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	cfg := dev.OPCUA
	cfg.Poll, cfg.Tags = dev.Poll, dev.Tags
	if len(cfg.Tags) != 4 || cfg.Timeout != 5*time.Second || cfg.Poll != 500*time.Millisecond || cfg.Auth.Mode != "username" {
		t.Fatalf("example.yaml decoded to %+v", cfg)
	}
	if cfg.Tags[0].Mode != ModeSubscribe || cfg.Tags[2].Mode != ModePoll || cfg.Tags[3].Mode != ModeDefault || cfg.Tags[2].Poll != 5*time.Second {
		t.Errorf("tags decoded to %+v", cfg.Tags)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := New(dev.Name, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(d.Groups()); got != 3 { // 500ms subscribe, 500ms poll, 5s poll
		t.Errorf("%d groups, want 3", got)
	}
}

// TestReadmeShowsExample keeps README.md's configuration example identical
// to example.yaml.
func TestReadmeShowsExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, exampleYAML) {
		t.Error("README.md does not contain example.yaml verbatim; copy it in")
	}
}
