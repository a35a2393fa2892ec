// Package deploy holds the files that install fieldgate (systemd unit,
// example configs, device profiles) and tests that check them.
package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const unitFile = "fieldgate.service"

// maxExposure is the highest `systemd-analyze security` exposure accepted
// for the unit; it measured 1.5 with systemd 252 (docs/security.md).
const maxExposure = 2.0

// readUnit returns the [Service] section's settings, each key with every
// value it is given, and the commented-out settings of the file as
// "#Key" keys.
func readUnit(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	set := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if section != "[Service]" || !ok || strings.HasPrefix(line, "# ") {
			continue
		}
		set[k] = append(set[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return set
}

// TestUnitIsHardened checks that the unit keeps each hardening setting that
// docs/security.md describes.
func TestUnitIsHardened(t *testing.T) {
	set := readUnit(t)
	for _, want := range []struct{ key, value string }{
		{"DynamicUser", "yes"},
		{"SupplementaryGroups", "dialout"},
		{"StateDirectory", "fieldgate"},
		{"StateDirectoryMode", "0700"},
		{"UMask", "0077"},
		{"NoNewPrivileges", "yes"},
		{"CapabilityBoundingSet", ""},
		{"AmbientCapabilities", ""},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"DevicePolicy", "closed"},
		{"DeviceAllow", "char-ttyS rw"},
		{"DeviceAllow", "char-ttyUSB rw"},
		{"DeviceAllow", "char-ttyACM rw"},
		{"RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"SystemCallFilter", "@system-service"},
		{"SystemCallArchitectures", "native"},
		{"MemoryDenyWriteExecute", "yes"},
		{"LockPersonality", "yes"},
		{"ProtectKernelTunables", "yes"},
		{"ProtectKernelModules", "yes"},
		{"ProtectKernelLogs", "yes"},
		{"ProtectControlGroups", "yes"},
		{"ProtectClock", "yes"},
		{"ProtectHostname", "yes"},
		{"RestrictNamespaces", "yes"},
		{"RestrictRealtime", "yes"},
		{"RestrictSUIDSGID", "yes"},
		// Shipped commented out: systemd refuses to start a unit whose
		// credential file is missing, and not every site has each secret.
		{"#LoadCredential", "mqtt.pass:/etc/fieldgate/mqtt.pass"},
		{"#LoadCredential", "api.token:/etc/fieldgate/api.token"},
	} {
		found := false
		for _, v := range set[want.key] {
			found = found || v == want.value
		}
		if !found {
			t.Errorf("%s: no %s=%s in [Service] (has %q)", unitFile, want.key, want.value, set[want.key])
		}
	}
	// PrivateDevices=yes would hide the serial ports that DeviceAllow opens.
	if v := set["PrivateDevices"]; len(v) > 0 {
		t.Errorf("%s: PrivateDevices=%s hides /dev/ttyS*, /dev/ttyUSB* and /dev/ttyACM*; use DevicePolicy=closed and DeviceAllow", unitFile, v)
	}
}

// systemdAnalyze returns the systemd-analyze binary or skips the test.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		msg := "systemd-analyze not found: install the Debian package systemd to check the unit"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestUnitSecurityExposure runs `systemd-analyze security --offline=yes` on
// the unit and checks the overall exposure stays at most maxExposure.
func TestUnitSecurityExposure(t *testing.T) {
	bin := systemdAnalyze(t)
	out, err := exec.Command(bin, "security", "--offline=yes", "--no-pager", unitFile).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposure.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security --offline=yes %s: exposure %.1f", unitFile, score)
	if score > maxExposure {
		t.Errorf("exposure %.1f is above %.1f; the settings that cost most:\n%s", score, maxExposure, out)
	}
}

// TestUnitVerifies runs `systemd-analyze verify` on a copy of the unit whose
// commands point at an executable that exists here and whose credentials
// are loaded, and fails on any complaint (an unknown or misspelt key, a bad
// value).
func TestUnitVerifies(t *testing.T) {
	bin := systemdAnalyze(t)
	data, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "/usr/local/bin/fieldgate", self)
	text = strings.ReplaceAll(text, "\n#LoadCredential=", "\nLoadCredential=")
	path := filepath.Join(t.TempDir(), unitFile)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "verify", "--no-pager", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
}
