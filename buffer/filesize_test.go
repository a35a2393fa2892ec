package buffer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

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

// fileBoundSize sizes TestQueueFileNeverPassesItsBound: rounds of appends
// with a reopen after each, each appending volume times the bound.
// FIELDGATE_BUFFER_LONG=1 runs the long version; under the race detector,
// which makes every step several times slower, a shorter one runs. Every
// version reaches the bound in the first round and stays at it.
func fileBoundSize() (rounds int, volume float64) {
	switch {
	case os.Getenv("FIELDGATE_BUFFER_LONG") == "1":
		return 3, 6
	case raceEnabled:
		return 2, 1.5
	default:
		return 3, 3
	}
}

// allocWatch checks every write transaction a Queue commits: bbolt must
// allocate no more pages than the bound write checked against the file's
// room, and one page per node (a node of several pages needs contiguous
// free pages, which a scattered freelist may not have: see record.go).
type allocWatch struct {
	mu     sync.Mutex
	txs    int64
	pages  int64
	failed string // the first violation
}

func (w *allocWatch) watch(q *Queue) {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.allocHook = func(bound, pages, nodes int64) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.txs++
		w.pages += pages
		switch {
		case w.failed != "":
		case pages > bound:
			w.failed = fmt.Sprintf("transaction %d allocated %d pages, its bound was %d", w.txs, pages, bound)
		case pages != nodes:
			w.failed = fmt.Sprintf("transaction %d wrote %d nodes to %d pages", w.txs, nodes, pages)
		}
	}
}

func (w *allocWatch) check(t *testing.T, when string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != "" {
		t.Fatalf("%s: %s", when, w.failed)
	}
}

// uplinkReader does what the uplink does to the queue while the test
// appends: it peeks the backlog 20 records at a time, from the oldest to
// the newest and then waiting for more, and acknowledges every fourth
// record it sees (out of order, so the freelist gets scattered; no more
// than a quarter of what is appended, so the bound is still reached). Now
// and then it holds a read transaction open for a few milliseconds, which
// keeps the pages freed meanwhile pending. It returns when ctx is done,
// with the first error.
func uplinkReader(ctx context.Context, q *Queue) error {
	var after uint64
	for i := 0; ; i++ {
		if err := q.Wait(ctx, after); err != nil {
			return nil // ctx is done
		}
		recs, err := q.Peek(after, 20)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			// What was waited for was acknowledged or dropped already.
			_, after = q.Depth()
			continue
		}
		var seqs []uint64
		for j := i % 4; j < len(recs); j += 4 {
			seqs = append(seqs, recs[j].Seq)
		}
		after = recs[len(recs)-1].Seq
		if err := q.AckSeqs(seqs); err != nil {
			return err
		}
		if i%4 == 0 {
			_ = q.view(func(*bolt.Tx) error {
				time.Sleep(3 * time.Millisecond)
				return nil
			})
		}
	}
}

// TestQueueFileNeverPassesItsBound: a long outage with many appends, drops
// and, as the uplink does, peeks and out-of-order acknowledgements of part
// of the backlog from another goroutine while the appends commit. The bbolt
// file must never be larger than MaxBytes: its size (which never shrinks)
// is checked after every 10 appends and at every reopen, in both sync
// modes, with small batches, with batches larger than a page and with a
// mix of sizes. Every record is accounted for: appended = stored + acked +
// dropped.
func TestQueueFileNeverPassesItsBound(t *testing.T) {
	if testing.Short() {
		t.Skip("writes several MiB with an fsync per commit")
	}
	const maxBytes = 1 << 20
	rounds, volume := fileBoundSize()
	shapes := []struct {
		name    string
		sizes   []int // readings per batch, chosen at random
		perCall int   // batches per Append, as devices polled at once
	}{
		{"20_readings", []int{20}, 20},    // 4 KiB per call
		{"1000_readings", []int{1000}, 5}, // about 10 KiB a batch: 11 parts
		{"mixed", []int{1, 20, 120, 700, 3000}, 5},
	}
	for _, shape := range shapes {
		for _, interval := range []time.Duration{0, 50 * time.Millisecond} {
			t.Run(fmt.Sprintf("%s/sync_interval=%v", shape.name, interval), func(t *testing.T) {
				t.Parallel()
				path := filepath.Join(t.TempDir(), "b.db")
				opts := Options{MaxBytes: maxBytes, SyncInterval: interval}
				q := openQueue(t, path, opts, nil)
				var w allocWatch
				w.watch(q)
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
				for round := range rounds {
					ctx, stop := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- uplinkReader(ctx, q) }()
					for i := 0; written < int64(volume*maxBytes); i++ {
						bs := make([]*telemetry.Batch, shape.perCall)
						for j := range bs {
							bs[j] = sizedBatch("d", len(bs)*i+j, shape.sizes[rng.IntN(len(shape.sizes))])
							written += encodedLen(bs[j])
						}
						if err := q.Append(context.Background(), bs...); err != nil {
							t.Fatal(err)
						}
						handed += uint64(len(bs))
						if i%10 == 9 {
							check(fmt.Sprintf("round %d, append %d", round, i))
							w.check(t, fmt.Sprintf("round %d, append %d", round, i))
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
					stop()
					if err := <-done; err != nil {
						t.Fatalf("round %d: uplink: %v", round, err)
					}
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
					w.check(t, fmt.Sprintf("round %d, closed", round))
					q = openQueue(t, path, opts, nil)
					w.watch(q)
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
				t.Logf("file at most %d bytes (%.2f of the bound); after %d rounds %d records, %d value bytes (%.2f of the bound) stored; %d acked, %d dropped; %d write transactions allocated %d pages",
					largest, float64(largest)/maxBytes, rounds, st.Records, st.Bytes, float64(st.Bytes)/maxBytes, acked, dropped, w.txs, w.pages)
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

// TestQueueCommitLargerThanTheFile: one commit of four times what the file
// can hold (appends queued during a long sync interval, committed at Close)
// keeps the newest batches that fit, counts the rest as dropped, and leaves
// the file within its bound.
func TestQueueCommitLargerThanTheFile(t *testing.T) {
	const maxBytes = 1 << 20
	path := filepath.Join(t.TempDir(), "b.db")
	opts := Options{MaxBytes: maxBytes, SyncInterval: time.Hour}
	q := openQueue(t, path, opts, nil)
	var w allocWatch
	w.watch(q)
	const n = 16000 // 20 readings each: about 4 MiB
	for i := range n / 100 {
		bs := make([]*telemetry.Batch, 100)
		for j := range bs {
			bs[j] = sizedBatch("d", 100*i+j, 20)
		}
		mustAppend(t, q, bs...)
	}
	start := time.Now()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	w.check(t, "closed")
	st := q.Stats()
	if st.WriteErrors > 0 || st.LostRecords > 0 || st.DroppedRecords == 0 {
		t.Fatalf("after the commit: %+v", st)
	}
	if size := sizeOf(t, path); size > maxBytes {
		t.Fatalf("the file is %d bytes, bound %d", size, maxBytes)
	}
	q = openQueue(t, path, opts, nil)
	st2 := q.Stats()
	if uint64(st2.Records)+st.DroppedRecords != n || st2.LastSeq-st2.FirstSeq+1 != uint64(st2.Records) {
		t.Fatalf("%d records (%d..%d) stored + %d dropped, %d appended", st2.Records, st2.FirstSeq, st2.LastSeq, st.DroppedRecords, n)
	}
	recs, err := q.Peek(st2.LastSeq-1, 1)
	if err != nil || len(recs) != 1 || recs[0].Batch.Points[0].Tag != fmt.Sprintf("t%07d-0000", n-1) {
		t.Fatalf("the newest record is not the last batch appended: %v %v", recs, err)
	}
	t.Logf("the commit at Close took %v in %d write transactions; kept the newest %d batches, dropped %d", took, w.txs, st2.Records, st.DroppedRecords)
}
