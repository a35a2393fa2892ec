package config

import (
	"os"
	"strings"
	"testing"
)

// TestReferenceExamples parses every complete example (a yaml block that
// starts with gateway:) in docs/config.md, so the reference cannot drift
// from the loader.
func TestReferenceExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MQTT_PASSWORD", "pw")
	t.Setenv("CNC2_PASSWORD", "pw") // the OPC UA example's
	n := 0
	for i, block := range strings.Split(string(doc), "```yaml\n")[1:] {
		text, _, _ := strings.Cut(block, "```")
		if !strings.HasPrefix(text, "gateway:") {
			continue
		}
		n++
		if _, err := Parse("config.md", []byte(text)); err != nil {
			t.Errorf("example %d:\n%s\n%v", i+1, text, err)
		}
	}
	if n < 3 {
		t.Errorf("found %d complete examples, want at least 3", n)
	}
}
