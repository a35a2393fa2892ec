package config

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/collector/modbus"
)

// builtinProfiles are the device profiles shipped in the binary, one
// profiles/<name>.yaml each. deploy/profiles/README.md points here.
//
//go:embed profiles/*.yaml
var builtinProfiles embed.FS

// builtinPrefix names built-in profile files in error messages.
const builtinPrefix = "builtin/"

// builtinNames returns the names of the built-in profiles, sorted.
func builtinNames() []string {
	files, _ := fs.Glob(builtinProfiles, "profiles/*.yaml")
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = strings.TrimSuffix(path.Base(f), ".yaml")
	}
	return names
}

// profile is a device profile file: tags shared by identical devices, and
// defaults for the devices that use it.
type profile struct {
	Description string         `yaml:"description"` // for people
	Poll        time.Duration  `yaml:"poll"`        // the device's poll when it sets none
	Modbus      *profileModbus `yaml:"modbus"`
	Tags        []modbus.Tag   `yaml:"tags"`

	name string
	src  *source
}

// profileModbus are the modbus settings a profile may default; the
// connection (url, unit) is always the device's own.
type profileModbus struct {
	Timeout      time.Duration `yaml:"timeout"`
	MaxGap       *uint16       `yaml:"max_gap"`
	MaxRegisters uint16        `yaml:"max_registers"`
	MaxBits      uint16        `yaml:"max_bits"`
	Pause        time.Duration `yaml:"pause"`
}

// expansion is what a device's profile and tags_csv added to it.
type expansion struct {
	profile *profile
	// origins says where each of the device's tags was written, in the
	// order of Device.Tags after expansion.
	origins []origin
	// failed is set when the profile or CSV file could not be read, so
	// that the device's tags are incomplete and "no tags" would mislead.
	failed bool
}

// origin is where a tag was written: the file, the tag's path in it, and
// for other files than the config file, which key brought it in.
type origin struct {
	src  *source
	path string
	from string // "profile NAME" or "tags_csv"; "" for the config file
}

// where names the place of o as seen from a problem in file cur: "line 12",
// or "meters.csv:4 (tags_csv)" when o is in another file.
func (o origin) where(cur *source) string {
	line := 0
	if n := o.src.node(o.path); n != nil {
		line = n.Line
	}
	if o.src == cur {
		if line == 0 {
			return o.path
		}
		return fmt.Sprintf("line %d", line)
	}
	at := o.src.file
	if line > 0 {
		at = fmt.Sprintf("%s:%d", at, line)
	}
	if o.from != "" {
		at += " (" + o.from + ")"
	}
	return at
}

// extras reads the profiles and CSV files that a config's devices name,
// each once.
type extras struct {
	dir         string // the config file's folder
	profilesDir string
	profiles    map[string]*profile // by name
	csvs        map[string]*csvTags // by resolved path
	files       []string            // the files read, in order
	errs        []*Error
}

func newExtras(c *Config, src *source, dir string) *extras {
	x := &extras{dir: dir, profiles: map[string]*profile{}, csvs: map[string]*csvTags{}}
	x.profilesDir = c.ProfilesDir
	if !src.has("profiles_dir") {
		x.profilesDir = DefaultProfilesDir
	} else if x.profilesDir == "" {
		x.errorf(src, "profiles_dir", "must not be empty; leave it out for %q beside the config file", DefaultProfilesDir)
	}
	if !filepath.IsAbs(x.profilesDir) {
		x.profilesDir = filepath.Join(dir, x.profilesDir)
	}
	if src.has("profiles_dir") && c.ProfilesDir != "" {
		if fi, err := os.Stat(x.profilesDir); err != nil {
			x.errorf(src, "profiles_dir", "%v", err)
		} else if !fi.IsDir() {
			x.errorf(src, "profiles_dir", "%s is not a folder", x.profilesDir)
		}
	}
	return x
}

func (x *extras) errorf(src *source, path, format string, args ...any) {
	x.errs = append(x.errs, src.errorAt(nil, path, nil, format, args...))
}

// expand gives each device the tags of its profile and tags_csv file,
// and records where every tag came from in src.devices.
func (x *extras) expand(c *Config, src *source) {
	src.devices = map[string]*expansion{}
	for i := range c.Devices {
		d := &c.Devices[i]
		p := fmt.Sprintf("devices[%d]", i)
		if src.skip[p] {
			continue
		}
		if d.Profile == "" && src.has(p+".profile") && !src.covered(p+".profile") {
			x.errorf(src, p+".profile", "must not be empty; leave the key out")
		}
		if d.TagsCSV == "" && src.has(p+".tags_csv") && !src.covered(p+".tags_csv") {
			x.errorf(src, p+".tags_csv", "must not be empty; leave the key out")
		}
		if d.Profile == "" && d.TagsCSV == "" {
			continue
		}
		if d.OPCUA != nil {
			if d.Profile != "" {
				x.errorf(src, p+".profile", "profiles hold Modbus tags and are for devices with modbus: only; write an OPC UA device's tags under tags:")
			}
			if d.TagsCSV != "" {
				x.errorf(src, p+".tags_csv", "tags_csv holds Modbus tags and is for devices with modbus: only; write an OPC UA device's tags under tags:")
			}
			src.devices[p] = &expansion{failed: true} // don't also say it has no tags
			continue
		}
		ex := &expansion{}
		var tags []modbus.Tag
		if d.Profile != "" {
			if pr := x.profile(src, p+".profile", d.Profile); pr != nil {
				ex.profile = pr
				ex.failed = len(pr.Tags) == 0 // the profile's own problem
				if len(d.Tags) == 0 && d.TagsCSV == "" {
					// The profile's tags alone: devices of one profile
					// share them (nothing changes a device's tags after
					// loading; the full slice expression makes an append
					// copy).
					tags = pr.Tags[:len(pr.Tags):len(pr.Tags)]
				} else {
					tags = append(tags, pr.Tags...)
				}
				for k := range pr.Tags {
					ex.origins = append(ex.origins, origin{pr.src, fmt.Sprintf("tags[%d]", k), "profile " + pr.name})
				}
			} else {
				ex.failed = true
			}
		}
		tags = append(tags, d.Tags...)
		for j := range d.Tags {
			ex.origins = append(ex.origins, origin{src: src, path: fmt.Sprintf("%s.tags[%d]", p, j)})
		}
		if d.TagsCSV != "" {
			if ct := x.csv(src, p+".tags_csv", d.TagsCSV); ct != nil {
				tags = append(tags, ct.tags...)
				for k := range ct.tags {
					ex.origins = append(ex.origins, origin{ct.src, fmt.Sprintf("tags[%d]", k), "tags_csv"})
				}
				ex.failed = ex.failed || ct.failed
			} else {
				ex.failed = true
			}
		}
		d.Tags = tags
		src.devices[p] = ex
	}
}

// profile finds the profile name for the device key at path: first
// <profiles_dir>/<name>.yaml, then the built-in one. It returns nil after
// reporting a profile that cannot be found or read.
func (x *extras) profile(src *source, at, name string) *profile {
	if pr, ok := x.profiles[name]; ok {
		return pr
	}
	if !nameRE.MatchString(name) {
		x.errorf(src, at, "%q is not a profile name; use letters, digits, '_', '.' and '-' (the file is <name>.yaml in profiles_dir)", name)
		return nil
	}
	file := filepath.Join(x.profilesDir, name+".yaml")
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid):
		b, berr := builtinProfiles.ReadFile("profiles/" + name + ".yaml")
		if berr != nil {
			x.errorf(src, at, "profile %q not found: there is no %s and no built-in profile of that name (built-in: %s)", name, file, strings.Join(builtinNames(), ", "))
			return nil
		}
		file, data = builtinPrefix+name+".yaml", b
	default:
		x.errorf(src, at, "cannot read profile %q: %v", name, err)
		return nil
	}
	pr := x.parseProfile(file, name, data)
	if pr != nil {
		x.profiles[name] = pr
	}
	return pr
}

// parseProfile decodes and checks a profile file; the problems name that
// file. It returns nil when the file is not YAML.
func (x *extras) parseProfile(file, name string, data []byte) *profile {
	x.files = append(x.files, file)
	root, err := readYAML(file, data)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			x.errs = append(x.errs, e)
		}
		return nil
	}
	psrc := newSource(file)
	psrc.root = root
	pr := &profile{name: name, src: psrc}
	d := &decoder{src: psrc, active: map[*yaml.Node]bool{}, budget: 100000 + 10*len(data)}
	d.decode("", root, reflect.ValueOf(pr).Elem())
	if d.budget < 0 {
		x.errs = append(x.errs, d.errs[len(d.errs)-1])
		return nil
	}
	x.errs = append(x.errs, d.errs...)
	v := &validator{src: psrc}
	v.profile(pr)
	x.errs = append(x.errs, v.errs...)
	return pr
}

// profile checks what a profile file holds apart from its tags, which are
// checked with each device that uses them.
func (v *validator) profile(pr *profile) {
	if v.src.has("poll") && pr.Poll < MinPoll {
		v.errorf("poll", "must be at least %v, got %v", MinPoll, pr.Poll)
	}
	if m := pr.Modbus; m != nil {
		if v.src.has("modbus.timeout") {
			v.positive("modbus.timeout", m.Timeout)
		}
		v.limits("modbus", m.MaxRegisters, m.MaxBits, m.Pause)
	}
	if len(pr.Tags) == 0 {
		v.errorf("tags", "at least one tag is required: a profile is a list of tags")
	}
}
