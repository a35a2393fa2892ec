package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must not panic, and every
// line of an error must start with the file name, or with the name of a
// file that the config made Parse read (a profile or a tags_csv file).
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/config.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("a: &a {<<: *a}\n"))
	f.Add([]byte("devices: [{tags: [&t {name: a}, *t]}]"))
	f.Add([]byte("devices: [{name: m, profile: eastron-sdm630, modbus: {url: 'rtu:///dev/ttyS0', max_registers: 1}, poll: 1h}]"))
	f.Add([]byte("profiles_dir: testdata/profile_local/profiles\ndevices: [{name: p, profile: pump-drive, tags_csv: testdata/tags_csv/meters.csv}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.yaml"
		_, err := Parse(name, data)
		if err == nil {
			return
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, name+":") && !namesReadFile(line) {
				t.Fatalf("error line %q does not start with %s or a file it read; whole error:\n%v", line, name, err)
			}
		}
	})
}

// namesReadFile reports whether an error line starts with a file that
// exists, or a built-in profile, followed by a colon.
func namesReadFile(line string) bool {
	for i := range len(line) {
		if line[i] != ':' {
			continue
		}
		file := line[:i]
		if strings.HasPrefix(file, builtinPrefix) {
			_, err := builtinProfiles.ReadFile("profiles/" + strings.TrimPrefix(file, builtinPrefix))
			return err == nil
		}
		if _, err := os.Stat(file); err == nil {
			return true
		}
	}
	return false
}
