package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/fieldgate/fieldgate/telemetry"
)

var t0 = time.Unix(1764100000, 0)

// batch returns a batch of n points whose values identify it: point j holds
// Int(id*1000+j).
func batch(device string, id, n int) *telemetry.Batch {
	b := &telemetry.Batch{Device: device, Points: make([]telemetry.Point, n)}
	for j := range b.Points {
		b.Points[j] = telemetry.Point{
			Tag:   fmt.Sprintf("tag%03d", j),
			Value: telemetry.Int(int64(id*1000 + j)),
			Time:  t0.Add(time.Duration(id) * time.Second),
			Unit:  "bar",
		}
	}
	return b
}

// batchID is the id batch() encoded in b.
func batchID(b telemetry.Batch) int {
	if len(b.Points) == 0 {
		return -1
	}
	return int(b.Points[0].Value.AsInt() / 1000)
}

func encodedLen(b *telemetry.Batch) int64 { return int64(len(telemetry.AppendBatch(nil, b))) }

var batchCmp = []cmp.Option{
	cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) }),
	cmp.Comparer(func(a, b telemetry.Value) bool { return a.Equal(b) }),
}

// logRecorder is a slog.Handler that keeps the messages it was given.
type logRecorder struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newLogRecorder() logRecorder { return logRecorder{mu: new(sync.Mutex), msgs: new([]string)} }

func (h logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.msgs = append(*h.msgs, r.Level.String()+" "+r.Message)
	return nil
}
func (h logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logRecorder) WithGroup(string) slog.Handler      { return h }

func (h logRecorder) count(substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range *h.msgs {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

func openQueue(t testing.TB, path string, opts Options, log *slog.Logger) *Queue {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q, err := Open(path, opts, log)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func mustAppend(t testing.TB, q *Queue, bs ...*telemetry.Batch) {
	t.Helper()
	if err := q.Append(context.Background(), bs...); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func peekSeqs(t testing.TB, q *Queue, after uint64, max int) []uint64 {
	t.Helper()
	recs, err := q.Peek(after, max)
	if err != nil {
		t.Fatalf("Peek(%d, %d): %v", after, max, err)
	}
	seqs := make([]uint64, len(recs))
	for i, r := range recs {
		seqs[i] = r.Seq
	}
	return seqs
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestQueueAppendPeekAck(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "sub", "dir", "buffer.db"), Options{}, nil)
	var want []*telemetry.Batch
	var bytes, points int64
	for i := range 10 {
		b := batch(fmt.Sprintf("dev-%d", i%3), i, 1+i%4)
		want = append(want, b)
		bytes += encodedLen(b)
		points += int64(len(b.Points))
	}
	mustAppend(t, q, want[:4]...) // several batches in one call
	for _, b := range want[4:] {
		mustAppend(t, q, b)
	}

	recs, err := q.Peek(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 10 {
		t.Fatalf("Peek returned %d records, want 10", len(recs))
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Errorf("record %d has seq %d, want %d", i, r.Seq, i+1)
		}
		if diff := cmp.Diff(*want[i], r.Batch, batchCmp...); diff != "" {
			t.Errorf("record %d (-want +got):\n%s", i, diff)
		}
	}
	st := q.Stats()
	if st.Records != 10 || st.Bytes != bytes || st.Points != points || st.FirstSeq != 1 || st.LastSeq != 10 || st.Appended != 10 {
		t.Fatalf("Stats after appends = %+v; want 10 records, %d bytes, %d points, seqs 1..10", st, bytes, points)
	}
	if got := peekSeqs(t, q, 3, 2); !cmp.Equal(got, []uint64{4, 5}) {
		t.Fatalf("Peek(3, 2) = %v, want [4 5]", got)
	}
	if got := peekSeqs(t, q, 10, 5); len(got) != 0 {
		t.Fatalf("Peek(10, 5) = %v, want nothing", got)
	}

	if err := q.Ack(5); err != nil {
		t.Fatal(err)
	}
	if got := peekSeqs(t, q, 0, 100); !cmp.Equal(got, seqRange(6, 10)) {
		t.Fatalf("after Ack(5) Peek = %v, want 6..10", got)
	}
	if err := q.Ack(3); err != nil { // already gone: no-op
		t.Fatal(err)
	}
	st = q.Stats()
	var leftBytes, leftPoints int64
	for _, b := range want[5:] {
		leftBytes += encodedLen(b)
		leftPoints += int64(len(b.Points))
	}
	if st.Records != 5 || st.Acked != 5 || st.FirstSeq != 6 || st.Bytes != leftBytes || st.Points != leftPoints {
		t.Fatalf("Stats after Ack(5) = %+v; want 5 records from seq 6, %d bytes, %d points", st, leftBytes, leftPoints)
	}
	if err := q.Ack(1 << 40); err != nil {
		t.Fatal(err)
	}
	st = q.Stats()
	if st.Records != 0 || st.Bytes != 0 || st.Points != 0 || st.FirstSeq != 0 || st.LastSeq != 10 || st.Acked != 10 {
		t.Fatalf("Stats after acking all = %+v", st)
	}
	mustAppend(t, q, batch("dev", 99, 1))
	if got := peekSeqs(t, q, 0, 10); !cmp.Equal(got, []uint64{11}) {
		t.Fatalf("Peek after acking all and appending = %v, want [11]", got)
	}
}

func TestQueueAckAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	q, err := Open(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustAppend(t, q, batch("press-1", i, 3))
	}
	if err := q.Ack(3); err != nil {
		t.Fatal(err)
	}
	before := q.Stats()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := q.Append(context.Background(), batch("press-1", 9, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}

	q = openQueue(t, path, Options{}, nil)
	recs, err := q.Peek(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Seq != 4 || recs[1].Seq != 5 || batchID(recs[0].Batch) != 3 || batchID(recs[1].Batch) != 4 {
		t.Fatalf("after reopen Peek = %+v, want seqs 4, 5 holding batches 3, 4", recs)
	}
	st := q.Stats()
	if st.Records != before.Records || st.Bytes != before.Bytes || st.Points != before.Points ||
		st.FirstSeq != 4 || st.LastSeq != 5 {
		t.Fatalf("Stats after reopen = %+v, before close %+v", st, before)
	}
	mustAppend(t, q, batch("press-1", 5, 3))
	if got := peekSeqs(t, q, 5, 10); !cmp.Equal(got, []uint64{6}) {
		t.Fatalf("seq after reopen = %v, want [6]", got)
	}

	// Ack everything: the sequence must still continue after another reopen.
	if err := q.Ack(6); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, path, Options{}, nil)
	if st := q.Stats(); st.Records != 0 || st.LastSeq != 6 {
		t.Fatalf("Stats of an empty reopened queue = %+v, want 0 records, last seq 6", st)
	}
	mustAppend(t, q, batch("press-1", 6, 3))
	if got := peekSeqs(t, q, 0, 10); !cmp.Equal(got, []uint64{7}) {
		t.Fatalf("seq after acking all and reopening = %v, want [7]", got)
	}
}

func TestQueueConcurrentAppendersGroupCommit(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "buffer.db"), Options{}, nil)
	const goroutines, perG = 8, 150
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			dev := fmt.Sprintf("dev-%d", g)
			for i := range perG {
				if err := q.Append(context.Background(), batch(dev, i, 5)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	recs, err := q.Peek(0, goroutines*perG+10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != goroutines*perG {
		t.Fatalf("stored %d records, want %d", len(recs), goroutines*perG)
	}
	next := map[string]int{}
	for i, r := range recs {
		if i > 0 && r.Seq != recs[i-1].Seq+1 {
			t.Fatalf("seq %d follows %d", r.Seq, recs[i-1].Seq)
		}
		if id := batchID(r.Batch); id != next[r.Batch.Device] {
			t.Fatalf("device %s: record %d holds batch %d, want %d", r.Batch.Device, r.Seq, id, next[r.Batch.Device])
		}
		next[r.Batch.Device]++
	}
	st := q.Stats()
	if st.Appended != goroutines*perG {
		t.Fatalf("Appended = %d, want %d", st.Appended, goroutines*perG)
	}
	if st.Commits >= st.Appended {
		t.Fatalf("Commits = %d for %d appends: appends were not group-committed", st.Commits, st.Appended)
	}
	t.Logf("%d appends in %d commits", st.Appended, st.Commits)
}

func TestQueueByteBoundDropsOldest(t *testing.T) {
	// Batches of different sizes, so dropping too many or too few shows.
	var bs []*telemetry.Batch
	for i := range 30 {
		bs = append(bs, batch("meter-7", i, 1+(i*7)%11))
	}
	maxBytes := 6 * encodedLen(bs[10])
	logs := newLogRecorder()
	path := filepath.Join(t.TempDir(), "buffer.db")
	q := openQueue(t, path, Options{MaxBytes: maxBytes}, slog.New(logs))

	// model: the oldest are dropped until the rest fits.
	var kept []int // indexes into bs
	var droppedRecs, droppedPoints uint64
	fit := func() {
		var sum int64
		for _, i := range kept {
			sum += encodedLen(bs[i])
		}
		for sum > maxBytes {
			sum -= encodedLen(bs[kept[0]])
			droppedRecs++
			droppedPoints += uint64(len(bs[kept[0]].Points))
			kept = kept[1:]
		}
	}
	check := func(when string) {
		t.Helper()
		recs, err := q.Peek(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for _, r := range recs {
			got = append(got, batchID(r.Batch))
		}
		if !cmp.Equal(got, kept) {
			t.Fatalf("%s: stored batches %v, want %v", when, got, kept)
		}
		st := q.Stats()
		if st.Bytes > maxBytes {
			t.Fatalf("%s: %d bytes stored, bound is %d", when, st.Bytes, maxBytes)
		}
		if st.DroppedRecords != droppedRecs || st.DroppedPoints != droppedPoints {
			t.Fatalf("%s: dropped %d records / %d points, want %d / %d",
				when, st.DroppedRecords, st.DroppedPoints, droppedRecs, droppedPoints)
		}
	}
	for i := range 20 {
		mustAppend(t, q, bs[i])
		kept = append(kept, i)
		fit()
		check(fmt.Sprintf("after batch %d", i))
	}
	// Several batches in one call, more than the bound holds: the oldest of
	// them go too.
	mustAppend(t, q, bs[20:30]...)
	for i := 20; i < 30; i++ {
		kept = append(kept, i)
	}
	fit()
	check("after a call larger than the bound")
	if droppedRecs == 0 {
		t.Fatal("test did not reach the bound")
	}
	if n := logs.count("buffer full"); n != 1 {
		t.Errorf("logged %d drop warnings for %d drops, want 1 (throttled)", n, droppedRecs)
	}

	big := batch("meter-7", 99, 400)
	if err := q.Append(context.Background(), big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of a batch larger than the bound = %v, want ErrTooLarge", err)
	}

	// Reopen: the scan of the file agrees, and a smaller bound trims at once.
	st := q.Stats()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, path, Options{MaxBytes: maxBytes}, nil)
	if got := q.Stats(); got.Bytes != st.Bytes || got.Records != st.Records || got.Points != st.Points {
		t.Fatalf("reopened Stats = %+v, before %+v", got, st)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, path, Options{MaxBytes: maxBytes / 2}, nil)
	if got := q.Stats(); got.Bytes > maxBytes/2 || got.Records == 0 || got.DroppedRecords == 0 {
		t.Fatalf("after reopening with half the bound Stats = %+v", got)
	}
}

func TestQueueWait(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "buffer.db"), Options{}, nil)
	ctx := context.Background()

	woke := make(chan error, 3)
	for range 3 {
		go func() { woke <- q.Wait(ctx, 0) }()
	}
	select {
	case err := <-woke:
		t.Fatalf("Wait on an empty queue returned %v", err)
	default:
	}
	mustAppend(t, q, batch("d", 1, 1))
	for range 3 {
		select {
		case err := <-woke:
			if err != nil {
				t.Fatalf("Wait = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Wait did not wake on Append")
		}
	}

	if err := q.Wait(ctx, 0); err != nil { // a record exists: no blocking
		t.Fatalf("Wait(0) with a record = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- q.Wait(cctx, 1) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled ctx = %v, want context.Canceled", err)
	}
	dctx, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if err := q.Wait(dctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its deadline = %v, want DeadlineExceeded", err)
	}

	go func() { done <- q.Wait(ctx, 1) }()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait across Close = %v, want ErrClosed", err)
	}
}

func TestQueueAppendHonoursContext(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "buffer.db"), Options{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Append(ctx, batch("d", 1, 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled ctx = %v", err)
	}
	if err := q.Append(context.Background()); err != nil {
		t.Fatalf("Append of nothing = %v", err)
	}
}

func TestQueueSecondOpenFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	q := openQueue(t, path, Options{}, nil)
	mustAppend(t, q, batch("d", 1, 1))
	start := time.Now()
	q2, err := Open(path, Options{}, nil)
	took := time.Since(start)
	if err == nil {
		_ = q2.Close()
		t.Fatal("second Open of the same file succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open error = %v; want ErrLocked naming %s", err, path)
	}
	if took > 3*time.Second {
		t.Fatalf("second Open took %s to fail", took)
	}
	t.Logf("second Open failed after %s: %v", took.Round(time.Millisecond), err)
	if got := peekSeqs(t, q, 0, 10); !cmp.Equal(got, []uint64{1}) {
		t.Fatalf("first queue disturbed: Peek = %v", got)
	}
}

func TestQueueIntervalSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	q, err := Open(path, Options{SyncInterval: 20 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		mustAppend(t, q, batch("d", i, 2)) // returns before the commit
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for q.Stats().Records < 50 {
		if err := q.Wait(ctx, q.Stats().LastSeq); err != nil {
			t.Fatalf("waiting for the interval commit: %v", err)
		}
	}
	if st := q.Stats(); st.Commits >= 50 {
		t.Fatalf("%d commits for 50 appends in interval mode", st.Commits)
	}
	mustAppend(t, q, batch("d", 50, 2))
	if err := q.Close(); err != nil { // Close commits what is pending
		t.Fatal(err)
	}
	q = openQueue(t, path, Options{}, nil)
	if got := peekSeqs(t, q, 0, 100); !cmp.Equal(got, seqRange(1, 51)) {
		t.Fatalf("after Close and reopen Peek = %v, want 1..51", got)
	}
}

// TestQueueGatherKeepsAppendDurable checks the group commit's gathering
// rule keeps Append's promise: under concurrent appends (when the writer
// waits for more work before committing) every Append returns only after
// the commit holding its batch, so Appended always covers the calls that
// have returned.
func TestQueueGatherKeepsAppendDurable(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "buffer.db"), Options{}, nil)
	const goroutines, perG = 8, 100
	var returned atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			dev := fmt.Sprintf("dev-%d", g)
			for i := range perG {
				if err := q.Append(context.Background(), batch(dev, i, 120)); err != nil {
					errs <- err
					return
				}
				n := returned.Add(1)
				if st := q.Stats(); st.Appended < n {
					errs <- fmt.Errorf("%d appends returned, %d committed", n, st.Appended)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := q.Stats()
	if st.Appended != goroutines*perG {
		t.Fatalf("Appended = %d, want %d", st.Appended, goroutines*perG)
	}
	t.Logf("%d appends in %d commits", st.Appended, st.Commits)
}
