package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestDeployExamples loads every example config in deploy/examples, and
// checks that every CSV file there is used by one of them.
func TestDeployExamples(t *testing.T) {
	t.Setenv("MQTT_PASSWORD", "pw")
	t.Setenv("OPCUA_PASSWORD", "pw") // opcua.yaml's
	files, err := filepath.Glob("../deploy/examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d examples", len(files))
	}
	used := map[string]bool{}
	for _, f := range files {
		c, err := Load(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		for _, d := range c.Devices {
			if d.TagsCSV != "" {
				used[filepath.Base(d.TagsCSV)] = true
			}
		}
	}
	csvs, _ := filepath.Glob("../deploy/examples/*.csv")
	for _, f := range csvs {
		if !used[filepath.Base(f)] {
			t.Errorf("%s is not used by any example", f)
		}
	}
	if _, err := os.Stat("../deploy/profiles/README.md"); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat("../deploy/examples/opcua.yaml"); err != nil {
		t.Error(err) // the OPC UA example must stay loaded by this test
	}
	if !slices.Contains(builtinNames(), "eastron-sdm630") {
		t.Error("the built-in eastron-sdm630 profile is missing")
	}
}
