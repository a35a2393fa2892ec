package modbus

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
// decodes strictly into the driver's config types and plans.
func TestExampleParses(t *testing.T) {
	var dev struct {
		Name   string        `yaml:"name"`
		Modbus Config        `yaml:"modbus"`
		Poll   time.Duration `yaml:"poll"`
		Tags   []Tag         `yaml:"tags"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(exampleYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&dev); err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	if len(dev.Tags) != 11 || dev.Modbus.Timeout != time.Second || dev.Poll != time.Second {
		t.Fatalf("example.yaml decoded to %+v", dev)
	}
	if dev.Tags[0].Order != CDAB || dev.Tags[0].Type != TypeFloat32 || dev.Tags[7].Poll != 200*time.Millisecond {
		t.Errorf("tags decoded to %+v", dev.Tags)
	}
	cfg := dev.Modbus
	cfg.Poll, cfg.Tags = dev.Poll, dev.Tags
	d, err := New(dev.Name, cfg, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("plan:\n%s", d.Plan())
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
