package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv(farmEnv) == "1" {
		os.Exit(farmMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestTinyWorkload runs the whole harness for a few seconds, with an
// outage, and checks that every record the gateway produced was delivered
// exactly once or is still in its buffer.
func TestTinyWorkload(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gateway")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := t.TempDir() + "/r.json"
	var stdout, stderr bytes.Buffer
	code := benchMain(ctx, []string{"-n", "3", "-m", "130", "-float-every", "4", "-poll", "100ms", "-d", "2s", "-warmup", "1s", "-outage", "1s", "-json", out}, &stdout, &stderr)
	t.Logf("%s%s", stdout.String(), stderr.String())
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct{ Median result }
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	r := rep.Median
	if r.ProducedRecords == 0 || r.DeliveredRecords+r.LeftInBuffer != r.ProducedRecords || r.LostRecords != 0 || r.DupRecords != 0 {
		t.Errorf("produced %d records, delivered %d, left %d, lost %d, dup %d", r.ProducedRecords, r.DeliveredRecords, r.LeftInBuffer, r.LostRecords, r.DupRecords)
	}
	if r.LeftInBuffer != 0 {
		t.Logf("%d records left in the buffer at stop (durable, not delivered)", r.LeftInBuffer)
	}
	if r.RequestsPerCycle < r.OptimumPerCycle || r.RequestsPerCycle > r.OptimumPerCycle*1.05 {
		t.Errorf("Modbus requests per cycle %.3f, optimum %.0f", r.RequestsPerCycle, r.OptimumPerCycle)
	}
	if r.BacklogReadings == 0 {
		t.Error("no backlog replayed after the outage")
	}
	if r.CommitsPerSec <= 0 || r.BatchesPerCommit < 1 {
		t.Errorf("buffer commits %.1f/s of %.2f batches: not measured from the gateway's metrics", r.CommitsPerSec, r.BatchesPerCommit)
	}
}

func TestParsePayload(t *testing.T) {
	p := []byte(`{"gateway":"fb","device":"d001","seq":42,"historical":true,"points":[{"tag":"a","ts":1700000000123,"value":1},{"tag":"b","ts":1700000000123,"value":2.5}]}`)
	dev, seq, ts, n, hist, ok := parsePayload(p)
	if !ok || string(dev) != "d001" || seq != 42 || ts != 1700000000123 || n != 2 || !hist {
		t.Fatalf("got %q %d %d %d %v %v", dev, seq, ts, n, hist, ok)
	}
}
