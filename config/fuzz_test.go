package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must not panic, and every
// line of an error must start with the file name.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/config.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("a: &a {<<: *a}\n"))
	f.Add([]byte("devices: [{tags: [&t {name: a}, *t]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.yaml"
		_, err := Parse(name, data)
		if err == nil {
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, name) {
				t.Fatalf("error line %q does not start with %s; whole error:\n%v", line, name, err)
			}
		}
	})
}
