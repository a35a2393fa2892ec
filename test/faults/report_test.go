package faults

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// row is one scenario's line in the report.
type row struct {
	scenario                        string
	readings, lost, dup, outOfOrder int
	result, note                    string
}

var report struct {
	sync.Mutex
	rows []row
}

// record adds t's scenario to the report; result follows t's outcome at
// the end of the test.
func record(t *testing.T, r row) {
	t.Cleanup(func() {
		r.result = "PASS"
		if t.Failed() {
			r.result = "FAIL"
		}
		report.Lock()
		report.rows = append(report.rows, r)
		report.Unlock()
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	report.Lock()
	defer report.Unlock()
	if len(report.rows) > 0 {
		var b strings.Builder
		mode := "short"
		if long() {
			mode = "long"
		}
		fmt.Fprintf(&b, "fieldgate fault-injection report (%s mode)\n", mode)
		fmt.Fprintf(&b, "%-40s %9s %6s %10s %12s %-6s %s\n", "scenario", "readings", "lost", "duplicated", "out-of-order", "result", "notes")
		for _, r := range report.rows {
			fmt.Fprintf(&b, "%-40s %9d %6d %10d %12d %-6s %s\n", r.scenario, r.readings, r.lost, r.dup, r.outOfOrder, r.result, r.note)
		}
		_, _ = os.Stdout.WriteString(b.String())
		if path := os.Getenv("FIELDGATE_FAULTS_REPORT"); path != "" {
			_ = os.WriteFile(path, []byte(b.String()), 0o644)
		}
	}
	os.Exit(code)
}
