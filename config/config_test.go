package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestLoadGolden loads testdata/<case>/config.yaml and compares the result
// with want.json (the loaded Config) or want.err (the exact error text,
// with the case's folder cut from file names). An optional env file sets
// environment variables, one NAME=value a line. -update rewrites the
// golden files from what Load returns.
func TestLoadGolden(t *testing.T) {
	dirs, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range dirs {
		if !dir.IsDir() || dir.Name() == "fuzz" { // fuzz holds go test -fuzz failures
			continue
		}
		t.Run(dir.Name(), func(t *testing.T) {
			d := filepath.Join("testdata", dir.Name())
			setEnvFile(t, filepath.Join(d, "env"))
			cfg, err := Load(filepath.Join(d, "config.yaml"))
			var got []byte
			name, other := "want.json", "want.err"
			if err != nil {
				got = []byte(strings.ReplaceAll(err.Error(), d+string(filepath.Separator), "") + "\n")
				name, other = other, name
			} else {
				// Devices[i].Tags is the same slice as Devices[i].Modbus.Tags,
				// and OPCUATags as OPCUA.Tags; check that, and show it once.
				for i, dev := range cfg.Devices {
					switch {
					case dev.OPCUA != nil:
						if dev.Modbus != nil || len(dev.Tags) != 0 || len(dev.OPCUATags) == 0 || &dev.OPCUA.Tags[0] != &dev.OPCUATags[0] || dev.OPCUA.Poll != dev.Poll {
							t.Errorf("devices[%d]: opcua.Tags and Poll are not the device's", i)
						}
					case dev.Modbus == nil || len(dev.Tags) == 0 || &dev.Modbus.Tags[0] != &dev.Tags[0] || dev.Modbus.Poll != dev.Poll:
						t.Errorf("devices[%d]: modbus.Tags and Poll are not the device's", i)
					}
					cfg.Devices[i].Tags = nil
				}
				if got, err = json.MarshalIndent(cfg, "", "  "); err != nil {
					t.Fatal(err)
				}
				got = append(got, '\n')
			}
			if *update {
				if err := os.WriteFile(filepath.Join(d, name), got, 0o644); err != nil {
					t.Fatal(err)
				}
				os.Remove(filepath.Join(d, other))
				return
			}
			want, err := os.ReadFile(filepath.Join(d, name))
			if err != nil {
				t.Fatalf("got %s:\n%s\n(run go test ./config -run TestLoadGolden -update to accept)", name, got)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
			}
		})
	}
}

func setEnvFile(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			t.Setenv(k, v)
		}
	}
}
