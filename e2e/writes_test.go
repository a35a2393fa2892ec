package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/gateway"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/sim"
)

// mosquittoClient returns the path of mosquitto_pub or mosquitto_sub, or
// skips the test naming the package.
func mosquittoClient(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found (apt-get install -y mosquitto-clients)", name)
		}
		t.Skipf("%s not found; apt-get install -y mosquitto-clients", name)
	}
	return p
}

// TestSetCommandsThroughMosquitto sends set commands with mosquitto_pub
// through a real Mosquitto broker and reads the results with mosquitto_sub:
// a write within range reaches the device, one out of range does not, and
// both are in the audit log.
func TestSetCommandsThroughMosquitto(t *testing.T) {
	pub, subBin := mosquittoClient(t, "mosquitto_pub"), mosquittoClient(t, "mosquitto_sub")
	m := peers.StartMosquitto(t, peers.MosquittoOptions{})
	dev := sim.NewModbus(sim.ModbusOptions{})
	if err := dev.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	dir := t.TempDir()
	cfg, err := config.Parse(filepath.Join(dir, "gw.yaml"), []byte(fmt.Sprintf(`gateway: { id: gw }
buffer: { path: buffer.db }
mqtt: { url: "tcp://%s" }
devices:
  - name: press-1
    modbus: { url: "tcp://%s" }
    poll: 200ms
    tags:
      - { name: speed, address: 40001, type: uint16, writable: true, min: 0, max: 1500, verify: true }
`, m.Addr(), dev.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, gateway.Options{}, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// mosquitto_sub prints "topic payload" per result until killed.
	sctx, scancel := context.WithCancel(context.Background())
	sub := exec.CommandContext(sctx, subBin, "-h", "127.0.0.1", "-p", strconv.Itoa(m.Port()), "-q", "1", "-v", "-t", "fieldgate/gw/+/set/result")
	out, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	results := map[string]string{} // id → payload
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			_, payload, _ := strings.Cut(sc.Text(), " ")
			var r struct{ ID string }
			_ = json.Unmarshal([]byte(payload), &r)
			mu.Lock()
			results[r.ID] = payload
			mu.Unlock()
		}
	}()
	defer func() { scancel(); _ = sub.Wait(); <-read }()
	send := func(payload string) {
		t.Helper()
		c := exec.Command(pub, "-h", "127.0.0.1", "-p", strconv.Itoa(m.Port()), "-q", "1", "-t", "fieldgate/gw/press-1/set", "-m", payload)
		if b, err := c.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, b)
		}
	}
	result := func(id string) string {
		mu.Lock()
		defer mu.Unlock()
		return results[id]
	}
	// Until the gateway and mosquitto_sub have subscribed, commands or
	// results may be lost: ping until one round trip works.
	pings := 0
	peers.CheckFor(t, 30*time.Second, "a ping answered", func() error {
		pings++
		send(fmt.Sprintf(`{"id":"ping-%d","tag":"speed","value":0}`, pings))
		for i := 1; i <= pings; i++ {
			if result(fmt.Sprint("ping-", i)) != "" {
				return nil
			}
		}
		time.Sleep(300 * time.Millisecond)
		return fmt.Errorf("%d pings unanswered", pings)
	})
	send(`{"id":"in-range","tag":"speed","value":1200}`)
	send(`{"id":"too-fast","tag":"speed","value":1501}`)
	peers.CheckFor(t, 20*time.Second, "both results", func() error {
		if result("in-range") == "" || result("too-fast") == "" {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Errorf("results so far: %v", results)
		}
		return nil
	})
	if got, want := result("in-range"), `{"id":"in-range","device":"press-1","tag":"speed","ok":true}`; got != want {
		t.Errorf("in-range: %s, want %s", got, want)
	}
	if got, want := result("too-fast"), `{"id":"too-fast","device":"press-1","tag":"speed","ok":false,"code":"out_of_range","reason":"1501 is above max 1500"}`; got != want {
		t.Errorf("too-fast: %s, want %s", got, want)
	}
	if got := dev.Holding(0, 1)[0]; got != 1200 {
		t.Errorf("register 40001 = %d, want 1200", got)
	}
	b, err := os.ReadFile(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"id":"in-range","device":"press-1","tag":"speed","old":0,"new":1200,"result":"ok"`, `"id":"too-fast"`, `"result":"out_of_range","reason":"1501 is above max 1500"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("audit log lacks %s:\n%s", want, b)
		}
	}
}
