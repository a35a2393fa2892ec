package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

type fakeSource struct{ ready error }

func (f fakeSource) Metrics(m *Metrics) {
	m.Family("fieldgate_device_up", "1 when up.", Gauge)(1, "device", `press "1"`)
	m.Family("fieldgate_polls_total", "Reads.", Counter)(42, "device", "press-1")
	m.Family("fieldgate_unused", "Never sampled.", Gauge)
}

func (f fakeSource) Ready() error { return f.ready }

func serve(t *testing.T, cfg Config, src Source) (*Server, func()) {
	t.Helper()
	s, err := New(cfg, src, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return")
		}
	}
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServerEndpoints(t *testing.T) {
	s, stop := serve(t, Config{Listen: "127.0.0.1:0"}, fakeSource{})
	defer stop()
	base := "http://" + s.Addr()
	code, body := get(t, base+"/metrics", "")
	want := `# HELP fieldgate_device_up 1 when up.
# TYPE fieldgate_device_up gauge
fieldgate_device_up{device="press \"1\""} 1
# HELP fieldgate_polls_total Reads.
# TYPE fieldgate_polls_total counter
fieldgate_polls_total{device="press-1"} 42
`
	if code != 200 || body != want {
		t.Errorf("/metrics = %d\n%s\nwant\n%s", code, body, want)
	}
	if code, body := get(t, base+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _ := get(t, base+"/readyz", ""); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
}

func TestServerNotReady(t *testing.T) {
	s, stop := serve(t, Config{Listen: "127.0.0.1:0"}, fakeSource{ready: errors.New("not connected to the MQTT broker")})
	defer stop()
	code, body := get(t, "http://"+s.Addr()+"/readyz", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected to the MQTT broker") {
		t.Errorf("/readyz = %d %q", code, body)
	}
}

func TestServerToken(t *testing.T) {
	s, stop := serve(t, Config{Listen: "127.0.0.1:0", Token: "s3cret"}, fakeSource{})
	defer stop()
	url := "http://" + s.Addr() + "/metrics"
	if code, _ := get(t, url, ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
	if code, _ := get(t, url, "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}
	if code, _ := get(t, url, "s3cret"); code != 200 {
		t.Errorf("right token: %d", code)
	}
}

func TestServerRefusesOpenAddressWithoutToken(t *testing.T) {
	_, err := New(Config{Listen: "0.0.0.0:0"}, fakeSource{}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "api.token_file") {
		t.Fatalf("err = %v", err)
	}
}

func TestLintName(t *testing.T) {
	cases := map[string]MetricType{
		"fieldgate_polls_total":           Counter,
		"fieldgate_buffer_bytes":          Gauge,
		"fieldgate_poll_duration_seconds": Gauge,
	}
	for name, typ := range cases {
		if msg := lintName(name, typ); msg != "" {
			t.Errorf("%s: %s", name, msg)
		}
	}
	bad := map[string]MetricType{
		"fieldgate_polls":       Counter,
		"fieldgate_up_total":    Gauge,
		"polls_total":           Counter,
		"fieldgate_latency_ms":  Gauge,
		"fieldgate_Polls_total": Counter,
	}
	for name, typ := range bad {
		if lintName(name, typ) == "" {
			t.Errorf("%s passed the lint", name)
		}
	}
}

// LintNames checks every family name of m; exported to tests in other
// packages through the function below.
func TestLintNamesHelper(t *testing.T) {
	var m Metrics
	fakeSource{}.Metrics(&m)
	if errs := LintNames(&m); len(errs) != 0 {
		t.Errorf("lint: %v", errs)
	}
}
