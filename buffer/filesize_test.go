package buffer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

func sizeOf(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// sizedBatch is a batch of n readings whose tags name id, so that what
// arrives can be told apart.
func sizedBatch(device string, id, n int) *telemetry.Batch {
	b := &telemetry.Batch{Device: device, Points: make([]telemetry.Point, n)}
	now := time.Now()
	for i := range b.Points {
		b.Points[i] = telemetry.Point{Tag: fmt.Sprintf("t%07d-%04d", id, i), Value: telemetry.Int(int64(i)), Time: now}
	}
	return b
}

// TestQueueFileNeverPassesItsBound: a long outage with many appends, drops
// and now and then an out-of-order acknowledgement of part of the backlog.
// The bbolt file must never be larger than MaxBytes: its size is checked
// after every 50 appends and at every reopen, in both sync modes, with
// small batches, with batches larger than a page (overflow runs) and with a
// mix of sizes. Every record is accounted for: appended = stored + acked +
// dropped.
func TestQueueFileNeverPassesItsBound(t *testing.T) {
	if testing.Short() {
		t.Skip("writes about 20 MiB")
	}
	const maxBytes = 1 << 20
	shapes := []struct {
		name  string
		sizes []int // readings per batch, chosen at random
	}{
		{"20_readings", []int{20}},
		{"1000_readings", []int{1000}}, // about 10 KiB: three-page overflow runs
		{"mixed", []int{1, 20, 120, 700, 3000}},
	}
	for _, shape := range shapes {
		for _, interval := range []time.Duration{0, 50 * time.Millisecond} {
			t.Run(fmt.Sprintf("%s/sync_interval=%v", shape.name, interval), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "b.db")
				opts := Options{MaxBytes: maxBytes, SyncInterval: interval}
				q := openQueue(t, path, opts, nil)
				rng := rand.New(rand.NewPCG(1, uint64(len(shape.sizes))))
				var largest, written int64
				var acked, dropped uint64
				check := func(when string) {
					t.Helper()
					if n := sizeOf(t, path); n > maxBytes {
						t.Fatalf("%s: the file is %d bytes, bound %d", when, n, maxBytes)
					} else {
						largest = max(largest, n)
					}
				}
				var handed uint64 // batches given to Append
				for round := range 3 {
					for i := 0; written < 6*maxBytes; i++ {
						// Five batches per call, as five devices polled at once.
						bs := make([]*telemetry.Batch, 5)
						for j := range bs {
							bs[j] = sizedBatch("d", 5*i+j, shape.sizes[rng.IntN(len(shape.sizes))])
							written += encodedLen(bs[j])
						}
						if err := q.Append(context.Background(), bs...); err != nil {
							t.Fatal(err)
						}
						handed += uint64(len(bs))
						if i%10 == 9 {
							check(fmt.Sprintf("round %d, append %d", round, i))
						}
						if i%80 == 79 {
							// Acknowledge every other record of the oldest 100.
							recs, err := q.Peek(0, 100)
							if err != nil {
								t.Fatal(err)
							}
							var seqs []uint64
							for j := 0; j < len(recs); j += 2 {
								seqs = append(seqs, recs[j].Seq)
							}
							if err := q.AckSeqs(seqs); err != nil {
								t.Fatal(err)
							}
							check(fmt.Sprintf("round %d, ack after append %d", round, i))
						}
					}
					written = 0
					if err := q.Close(); err != nil {
						t.Fatal(err)
					}
					check(fmt.Sprintf("round %d, closed", round))
					st := q.Stats()
					acked += st.Acked
					dropped += st.DroppedRecords
					if st.LostRecords > 0 || st.WriteErrors > 0 {
						t.Fatalf("write errors: %+v", st)
					}
					q = openQueue(t, path, opts, nil)
					check(fmt.Sprintf("round %d, reopened", round))
					if n := q.Stats().Records; uint64(n)+acked+dropped != handed {
						t.Fatalf("round %d: %d records stored + %d acked + %d dropped != %d appended",
							round, n, acked, dropped, handed)
					}
				}
				if dropped == 0 {
					t.Fatal("the bound was never reached")
				}
				st := q.Stats()
				t.Logf("file at most %d bytes (%.2f of the bound); after 3 rounds %d records, %d value bytes (%.2f of the bound) stored",
					largest, float64(largest)/maxBytes, st.Records, st.Bytes, float64(st.Bytes)/maxBytes)
			})
		}
	}
}

// TestQueueCompactsAnOversizedFile: a file written with a larger bound (or
// by a version that bounded only the stored bytes) is compacted at Open to
// within the new bound. The newest records are kept, in order and with
// their sequence numbers; the rest are counted as dropped, per device.
func TestQueueCompactsAnOversizedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	q := openQueue(t, path, Options{MaxBytes: 16 << 20}, nil)
	const n = 3000
	for i := 0; i < n; i += 100 {
		var bs []*telemetry.Batch
		for j := i; j < i+100; j++ {
			bs = append(bs, sizedBatch(fmt.Sprintf("dev-%d", j%3), j, 200))
		}
		mustAppend(t, q, bs...)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	before := sizeOf(t, path)
	const bound = 1 << 20
	if before <= bound {
		t.Fatalf("test file is only %d bytes", before)
	}
	q = openQueue(t, path, Options{MaxBytes: bound}, nil)
	after := sizeOf(t, path)
	st := q.Stats()
	t.Logf("compacted %d bytes to %d; kept %d records, dropped %d", before, after, st.Records, st.DroppedRecords)
	if after > bound {
		t.Fatalf("file is %d bytes after compaction, bound %d", after, bound)
	}
	if st.Records == 0 || st.DroppedRecords == 0 || uint64(st.Records)+st.DroppedRecords != n {
		t.Fatalf("stats after compaction %+v", st)
	}
	if st.FirstSeq != st.DroppedRecords+1 || st.LastSeq != n {
		t.Fatalf("kept seqs %d..%d (last issued %d), want the newest %d", st.FirstSeq, q.lastKey, st.LastSeq, st.Records)
	}
	var perDev uint64
	for _, d := range q.DroppedByDevice() {
		perDev += d.Records
	}
	if perDev != st.DroppedRecords {
		t.Fatalf("per device drops add up to %d, counted %d", perDev, st.DroppedRecords)
	}
	got := peekSeqs(t, q, 0, n)
	if len(got) != int(st.Records) || got[0] != st.FirstSeq || got[len(got)-1] != n {
		t.Fatalf("peek after compaction: %d records from %d to %d", len(got), got[0], got[len(got)-1])
	}
	recs, err := q.Peek(n-1, 1)
	if err != nil || len(recs) != 1 || recs[0].Batch.Points[0].Tag != fmt.Sprintf("t%07d-0000", n-1) {
		t.Fatalf("newest record after compaction: %v %v", recs, err)
	}
	mustAppend(t, q, sizedBatch("dev-0", n, 40))
	if s := peekSeqs(t, q, n, 10); len(s) != 1 || s[0] != n+1 {
		t.Fatalf("numbering after compaction: %v, want [%d]", s, n+1)
	}
	if aside, _ := filepath.Glob(path + ".compact"); len(aside) != 0 {
		t.Fatalf("left behind: %v", aside)
	}
}
