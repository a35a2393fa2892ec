package buffer

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// TestQueueFileStopsGrowing writes 20-point batches through a bounded
// buffer until three times the bound has passed, then three times more, with
// a consumer acking part of the backlog now and then. Once the bound is
// reached the bbolt file must stop growing (pages freed by drops and acks
// are reused), in both sync modes; the sizes it settles at are logged, and
// docs/durability.md quotes them.
func TestQueueFileStopsGrowing(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 12 MiB")
	}
	const maxBytes = 1 << 20
	for _, interval := range []time.Duration{0, 50 * time.Millisecond} {
		path := filepath.Join(t.TempDir(), "b.db")
		q := openQueue(t, path, Options{MaxBytes: maxBytes, SyncInterval: interval}, nil)
		batch := sustainedBatch("device-01", time.Now())
		encoded := int64(len(telemetry.AppendBatch(nil, batch)))
		size := func() int64 {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			return fi.Size()
		}
		var dropped uint64
		fill := func(times int64) (largest int64) {
			var written int64
			for i := 0; written < times*maxBytes; i++ {
				if err := q.Append(context.Background(), batch); err != nil {
					t.Fatal(err)
				}
				written += encoded
				if i%500 == 0 {
					recs, err := q.Peek(0, 200)
					if err != nil {
						t.Fatal(err)
					}
					seqs := make([]uint64, 0, len(recs)/2)
					for _, r := range recs[:len(recs)/2] {
						seqs = append(seqs, r.Seq)
					}
					if err := q.AckSeqs(seqs); err != nil {
						t.Fatal(err)
					}
					largest = max(largest, size())
				}
			}
			// Close commits what sync: interval still holds; then reopen.
			dropped += q.Stats().DroppedRecords
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			largest = max(largest, size())
			q = openQueue(t, path, Options{MaxBytes: maxBytes, SyncInterval: interval}, nil)
			return largest
		}
		first := fill(3)
		second := fill(3)
		if dropped == 0 {
			t.Fatal("the bound was never reached")
		}
		t.Logf("sync interval %v: bound %d value bytes; file at most %d bytes (%.2f×) after 3× the bound, %d (%.2f×) after 6×",
			interval, maxBytes, first, float64(first)/maxBytes, second, float64(second)/maxBytes)
		// One allocation step of slack: the file may grow once more by it.
		if step := int64(1 << 20); second > first+step {
			t.Errorf("sync interval %v: the file kept growing: %d bytes after 3× the bound, %d after 6×", interval, first, second)
		}
		_ = q.Close()
	}
}
