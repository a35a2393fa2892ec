package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestBuiltinProfilesLoad gives each built-in profile to a device on a
// serial bus: it must load without problems, and docs/config.md must list it.
func TestBuiltinProfilesLoad(t *testing.T) {
	names := builtinNames()
	if len(names) < 2 {
		t.Fatalf("built-in profiles %v, want at least 2", names)
	}
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			c := parseOK(t, `
gateway: { id: g }
mqtt: { url: tcp://b }
devices:
  - name: m
    profile: `+name+`
    modbus: { url: "rtu:///dev/ttyUSB0?baud=9600&parity=N", unit: 3 }
`)
			d := c.Devices[0]
			if len(d.Tags) == 0 || len(d.Modbus.Tags) != len(d.Tags) {
				t.Fatalf("%d tags, modbus %d", len(d.Tags), len(d.Modbus.Tags))
			}
			for _, tag := range d.Tags {
				if tag.Description == "" {
					t.Errorf("tag %s has no description", tag.Name)
				}
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate after Load: %v", err)
			}
			if !strings.Contains(string(doc), "`"+name+"`") {
				t.Errorf("docs/config.md does not list the built-in profile `%s`", name)
			}
		})
	}
}

// TestProfileSearchOrder: profiles_dir first, then the built-in profiles;
// a device's own keys win over the profile's defaults.
func TestProfileSearchOrder(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "profiles"), 0o755); err != nil {
		t.Fatal(err)
	}
	local := "poll: 3s\nmodbus: { pause: 7ms }\ntags: [{ name: only_local, address: 30001, type: float32 }]\n"
	if err := os.WriteFile(filepath.Join(dir, "profiles", "eastron-sdm630.yaml"), []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := func(extra string) string {
		return "gateway: { id: g }\nmqtt: { url: tcp://b }\n" + extra + `devices:
  - { name: m1, profile: eastron-sdm630, modbus: { url: tcp://10.0.0.1 } }
  - { name: m2, profile: schneider-iem3000, poll: 1s, modbus: { url: tcp://10.0.0.2 } }
  - { name: m3, profile: eastron-sdm630, poll: 1s, modbus: { url: tcp://10.0.0.3, pause: 0s } }
`
	}
	c, err := Parse(filepath.Join(dir, "plant.yaml"), []byte(cfg("")))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Devices[0].Tags; len(got) != 1 || got[0].Name != "only_local" {
		t.Errorf("m1 tags %v, want the local profile's", got)
	}
	if d := c.Devices[0]; d.Poll.String() != "3s" || d.Modbus.Pause.String() != "7ms" {
		t.Errorf("m1 poll %v pause %v, want the profile's 3s and 7ms", d.Poll, d.Modbus.Pause)
	}
	if d := c.Devices[2]; d.Poll.String() != "1s" || d.Modbus.Pause != 0 {
		t.Errorf("m3 poll %v pause %v, want its own 1s and 0s", d.Poll, d.Modbus.Pause)
	}
	if got := c.Devices[1].Tags; len(got) < 10 {
		t.Errorf("m2 has %d tags, want the built-in schneider-iem3000", len(got))
	}
	// With profiles_dir pointing elsewhere, the built-in one is used.
	if err := os.Mkdir(filepath.Join(dir, "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err = Parse(filepath.Join(dir, "plant.yaml"), []byte(cfg("profiles_dir: other\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Devices[0].Tags; len(got) < 10 || c.ProfilesDir != filepath.Join(dir, "other") {
		t.Errorf("profiles_dir other: %d tags, dir %s; want the built-in profile", len(got), c.ProfilesDir)
	}
	_, err = Parse(filepath.Join(dir, "plant.yaml"), []byte(cfg("profiles_dir: nowhere\n")))
	if err == nil || !strings.Contains(err.Error(), "plant.yaml:3:15: profiles_dir: stat ") {
		t.Errorf("missing profiles_dir: %v", err)
	}
}

// TestCSVTagsAreYAMLTags: a row gives exactly the tag its cells would give
// written as YAML.
func TestCSVTagsAreYAMLTags(t *testing.T) {
	dir := t.TempDir()
	csv := "\ufeffname;address;type;order;scale;unit;description;value_offset;poll;deadband;report;max_silence;bit;length;table;offset\r\n" +
		"t1;40001;float32;CDAB;0.1;degC;\"Oil; top\";-40;5s;2%;change;1m;;;;\r\n" +
		"t2;;bool;;;;;;;;;;3;;input;7\r\n" +
		"t3;40010;string;BADC;;;;;;;always;;;4;;\r\n"
	yml := `
      - { name: t1, address: 40001, type: float32, order: CDAB, scale: 0.1, unit: degC, description: "Oil; top", value_offset: -40, poll: 5s, deadband: 2%, report: change, max_silence: 1m }
      - { name: t2, type: bool, bit: 3, table: input, offset: 7 }
      - { name: t3, address: 40010, type: string, order: BADC, report: always, length: 4 }
`
	if err := os.WriteFile(filepath.Join(dir, "tags.csv"), []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	head := "gateway: { id: g }\nmqtt: { url: tcp://b }\ndevices:\n  - name: d\n    modbus: { url: tcp://10.0.0.1 }\n"
	fromCSV, err := Parse(filepath.Join(dir, "a.yaml"), []byte(head+"    tags_csv: tags.csv\n"))
	if err != nil {
		t.Fatal(err)
	}
	fromYAML, err := Parse(filepath.Join(dir, "b.yaml"), []byte(head+"    tags:"+yml))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fromYAML.Devices[0].Tags, fromCSV.Devices[0].Tags); diff != "" {
		t.Errorf("CSV tags differ from YAML tags (-yaml +csv):\n%s", diff)
	}
}

func TestCSVDelimiter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want rune
	}{
		{"name,address,type\n", ','},
		{"name;address;type\r\n", ';'},
		{"name\taddress\ttype\n", '\t'},
		{"# a comment; with a semicolon\n\nname,address\n", ','},
		{"# a, comment\nname;address\n", ';'},
		{"name;description\nx;\"a, b\"\n", ';'},
		{"name\n", ','},
		{"", ','},
		{"# only a comment", ','},
	} {
		if got := delimiter([]byte(tc.in)); got != tc.want {
			t.Errorf("delimiter(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestValidateAfterExpansion: a loaded config whose tags came from
// profiles and CSV files passes Validate, which does no I/O.
func TestValidateAfterExpansion(t *testing.T) {
	for _, name := range []string{"tags_csv", "profile_local", "modbus_new_keys"} {
		c, err := Load(filepath.Join("testdata", name, "config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
