package config

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// largeConfig returns a config of n Modbus devices with m tags each,
// written out inline (no profile), as the load harness writes it.
func largeConfig(dir string, n, m int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "gateway: { id: fb }\nbuffer: { path: %s, sync: always }\n", filepath.Join(dir, "buffer.db"))
	b.WriteString("mqtt:\n  url: tcp://127.0.0.1:1883\n  topic: \"fb/data/{device}\"\ndevices:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: d%03d\n    modbus: { url: tcp://127.0.0.1:%d, unit: 1, timeout: 2s }\n    poll: 50ms\n    tags:\n", i, 20000+i)
		for j := range m {
			fmt.Fprintf(&b, "      - { name: r%03d, table: holding, offset: %d, type: uint16 }\n", j, j)
		}
	}
	return []byte(b.String())
}

// BenchmarkParseLarge parses 100 devices of 120 inline tags (12 000 tag
// lines, 790 kB). peak-MiB is the most heap in use seen by a sampler
// while Parse runs (every 1 ms), less what was in use before it.
func BenchmarkParseLarge(b *testing.B) {
	dir := b.TempDir()
	data := largeConfig(dir, 100, 120)
	name := filepath.Join(dir, "fieldgate.yaml")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var peak uint64
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := make(chan struct{})
		got := make(chan uint64)
		go func() {
			var m runtime.MemStats
			var hi uint64
			for {
				runtime.ReadMemStats(&m)
				hi = max(hi, m.HeapInuse)
				select {
				case <-stop:
					got <- hi
					return
				default:
				}
				time.Sleep(time.Millisecond)
			}
		}()
		if _, err := Parse(name, data); err != nil {
			b.Fatal(err)
		}
		close(stop)
		peak = max(peak, <-got-before.HeapInuse)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
}
