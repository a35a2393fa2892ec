package buffer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pauseAfterVisible makes the writer stop in its next commit that stores
// records at the point where bbolt has made the transaction visible to new
// readers (its meta page is written) and the Queue's counters do not show
// it yet: bbolt's commit handlers run there, and so does allocHook. Other
// write transactions pass. reached is closed when the writer stops;
// closing release lets it go on.
func pauseAfterVisible(q *Queue) (reached, release chan struct{}) {
	reached, release = make(chan struct{}), make(chan struct{})
	var once atomic.Bool
	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.allocHook = func(_, pages, _ int64) {
		if pages == 0 || !once.CompareAndSwap(false, true) {
			return
		}
		close(reached)
		<-release
	}
	return reached, release
}

// TestQueueAckOfRecordWhoseCommitIsFinishing: an uplink can read a record
// as soon as bbolt makes its transaction visible, which is before the
// transaction's meta page is fsynced and before the Queue's counters count
// the record. A PUBACK on loopback comes back within that fsync. Its
// acknowledgement must delete the record, in both sync modes and by Ack
// and AckSeqs, although the counters still say the queue is empty. (They
// did not: Ack and AckSeqs took "no records stored" to mean "nothing to
// delete", returned nil and left the record in the buffer for good, with
// the uplink counting it acknowledged.)
func TestQueueAckOfRecordWhoseCommitIsFinishing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		ack      func(q *Queue, seq uint64) error
	}{
		{"AckSeqs/always", 0, func(q *Queue, seq uint64) error { return q.AckSeqs([]uint64{seq}) }},
		{"AckSeqs/interval", time.Millisecond, func(q *Queue, seq uint64) error { return q.AckSeqs([]uint64{seq}) }},
		{"Ack/always", 0, func(q *Queue, seq uint64) error { return q.Ack(seq) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := openQueue(t, filepath.Join(t.TempDir(), "buffer.db"), Options{SyncInterval: tc.interval}, nil)
			// A record acknowledged earlier: the counters say empty, and
			// sequence numbers have been issued.
			mustAppend(t, q, batch("press-1", 0, 3))
			waitFor(t, 30*time.Second, func() error {
				if n, _ := q.Depth(); n != 1 {
					return fmt.Errorf("%d records stored, want 1", n)
				}
				return nil
			})
			if err := tc.ack(q, 1); err != nil {
				t.Fatal(err)
			}
			if n, _ := q.Depth(); n != 0 {
				t.Fatalf("%d records stored after the first ack, want 0", n)
			}

			reached, release := pauseAfterVisible(q)
			released := false
			defer func() {
				if !released {
					close(release)
				}
			}()
			appended := make(chan error, 1)
			go func() { appended <- q.Append(context.Background(), batch("press-1", 1, 3)) }()
			if tc.interval > 0 {
				// Append returns before the commit.
				if err := <-appended; err != nil {
					t.Fatalf("Append: %v", err)
				}
				appended <- nil
			}
			select {
			case <-reached:
			case <-time.After(30 * time.Second):
				t.Fatal("the commit did not reach the hook in 30 s")
			}
			seqs := peekSeqs(t, q, 1, 10)
			if len(seqs) != 1 || seqs[0] != 2 {
				t.Fatalf("Peek during the commit: %v, want [2]", seqs)
			}
			if n, _ := q.Depth(); n != 0 {
				t.Fatalf("Depth during the commit: %d records; the hook is not where this test needs it", n)
			}

			acked := make(chan error, 1)
			go func() { acked <- tc.ack(q, seqs[0]) }()
			// The acknowledgement either returns at once (wrongly, having
			// deleted nothing) or waits for the commit: for the group
			// commit it joins the pending work; a transaction of its own
			// waits for wmu, which no test can see, so give it a moment.
			var ackErr error
			ackDone := false
			deadline := time.Now().Add(500 * time.Millisecond)
			for !ackDone && time.Now().Before(deadline) {
				select {
				case ackErr = <-acked:
					ackDone = true
				case <-time.After(time.Millisecond):
				}
				q.mu.Lock()
				joined := len(q.pend.acks) > 0
				q.mu.Unlock()
				if joined {
					break
				}
			}
			close(release)
			released = true
			if err := <-appended; err != nil {
				t.Fatalf("Append: %v", err)
			}
			if !ackDone {
				ackErr = <-acked
			}
			if ackErr != nil {
				t.Fatalf("ack: %v", ackErr)
			}
			if left := peekSeqs(t, q, 0, 10); len(left) != 0 {
				t.Errorf("records %v still stored after their acknowledgement returned", left)
			}
			st := q.Stats()
			if st.Records != 0 || st.Bytes != 0 || st.Points != 0 || st.Acked != 2 || st.Appended != 2 {
				t.Errorf("stats: records %d bytes %d points %d acked %d appended %d, want 0 0 0 2 2",
					st.Records, st.Bytes, st.Points, st.Acked, st.Appended)
			}
		})
	}
}

// TestQueueAckStress: appenders on several goroutines, with pauses so that
// the queue often drains to empty, and an uplink-like reader that peeks
// without waiting for the counters (so it sees records while their commit
// finishes) and hands every record it sees to two ack workers, which
// acknowledge it at once, some of them twice, while appends and other
// acknowledgements gather into the same commits. Once every record was
// acknowledged, nothing may be left: no record counted, none found by
// Peek, and the counters match what was appended and acknowledged.
func TestQueueAckStress(t *testing.T) {
	appenders, perAppender := 4, 150
	if raceEnabled || testing.Short() {
		perAppender = 60
	}
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"always", 0},
		{"interval", 2 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := openQueue(t, filepath.Join(t.TempDir(), "buffer.db"), Options{SyncInterval: tc.interval}, nil)
			total := appenders * perAppender
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			var wg sync.WaitGroup
			errc := make(chan error, appenders+3)
			for a := range appenders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(a), 7))
					for i := range perAppender {
						if err := q.Append(ctx, batch(fmt.Sprintf("dev-%d", a), a*perAppender+i, 1+r.IntN(4))); err != nil {
							errc <- fmt.Errorf("appender %d, append %d: %w", a, i, err)
							return
						}
						if r.IntN(3) == 0 {
							time.Sleep(time.Duration(r.IntN(1500)) * time.Microsecond)
						}
					}
				}()
			}

			// The reader: peeks in a loop (yielding between empty peeks),
			// every record once, in runs of whatever it found.
			runs := make(chan []uint64, 64)
			var seen atomic.Int64
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(runs)
				var after uint64
				for seen.Load() < int64(total) && ctx.Err() == nil {
					recs, err := q.Peek(after, 32)
					if err != nil {
						errc <- fmt.Errorf("peek after %d: %w", after, err)
						return
					}
					if len(recs) == 0 {
						runtime.Gosched()
						continue
					}
					run := make([]uint64, len(recs))
					for i, r := range recs {
						run[i] = r.Seq
					}
					after = run[len(run)-1]
					seen.Add(int64(len(run)))
					runs <- run
				}
			}()
			var ackCalls atomic.Int64
			for w := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for run := range runs {
						if w == 1 && run[0]%5 == 0 {
							// The same record named again, as after a
							// reconnect: counted once.
							run = append(run, run[0])
						}
						if err := q.AckSeqs(run); err != nil {
							errc <- fmt.Errorf("AckSeqs(%v): %w", run, err)
							return
						}
						ackCalls.Add(1)
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Error(err)
			}
			if t.Failed() {
				return
			}
			if n := seen.Load(); n != int64(total) {
				t.Fatalf("the reader saw %d records, %d were appended", n, total)
			}
			if left := peekSeqs(t, q, 0, 10); len(left) != 0 {
				t.Errorf("records still stored after every record was acknowledged (first %d): %v", len(left), left)
			}
			st := q.Stats()
			if st.Records != 0 || st.Bytes != 0 || st.Points != 0 {
				t.Errorf("stats after everything was acknowledged: %d records, %d bytes, %d points, want 0",
					st.Records, st.Bytes, st.Points)
			}
			if st.Appended != uint64(total) || st.Acked != uint64(total) || st.DroppedRecords != 0 {
				t.Errorf("stats: appended %d, acked %d, dropped %d, want %d, %d, 0",
					st.Appended, st.Acked, st.DroppedRecords, total, total)
			}
			t.Logf("%d records, %d AckSeqs calls, %d commits", total, ackCalls.Load(), st.Commits)
			if err := q.Close(); err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// TestQueueAckSeqsCountsARecordOnce: a record named twice, in one AckSeqs
// call or in two calls whose acknowledgements share a group commit (as
// when it was PUBACKed on the old connection and again after it was sent
// on the new one), is deleted and counted once, in both sync modes. (With
// SyncInterval > 0 a call naming it twice counted it twice, and the
// stored-record, byte and point counters drifted below the file.)
func TestQueueAckSeqsCountsARecordOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"always", 0},
		{"interval", time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := openQueue(t, filepath.Join(t.TempDir(), "buffer.db"), Options{SyncInterval: tc.interval}, nil)
			mustAppend(t, q, batch("press-1", 0, 2), batch("press-1", 1, 3), batch("press-1", 2, 4))
			waitFor(t, 30*time.Second, func() error {
				if n, _ := q.Depth(); n != 3 {
					return fmt.Errorf("%d records stored, want 3", n)
				}
				return nil
			})
			if err := q.AckSeqs([]uint64{2, 1, 2}); err != nil {
				t.Fatal(err)
			}
			st := q.Stats()
			if st.Acked != 2 || st.Records != 1 || st.Points != 4 {
				t.Fatalf("after acknowledging 1 and 2 (2 named twice): acked %d, records %d, points %d, want 2, 1, 4",
					st.Acked, st.Records, st.Points)
			}
			if tc.interval > 0 {
				return // acknowledgements do not share commits
			}

			// Two calls naming record 3, held until both are pending, so
			// that they share one commit.
			entered, hold := make(chan struct{}), make(chan struct{})
			var once atomic.Bool
			setHook(q, func() error {
				if once.CompareAndSwap(false, true) {
					close(entered)
					<-hold
				}
				return nil
			})
			held := true
			defer func() {
				if held {
					close(hold)
				}
			}()
			appended := make(chan error, 1)
			go func() { appended <- q.Append(context.Background(), batch("press-1", 3, 1)) }()
			select {
			case <-entered:
			case <-time.After(30 * time.Second):
				t.Fatal("the append's commit did not start in 30 s")
			}
			acked := make(chan error, 2)
			for range 2 {
				go func() { acked <- q.AckSeqs([]uint64{3}) }()
			}
			waitFor(t, 30*time.Second, func() error {
				q.mu.Lock()
				n := len(q.pend.acks)
				q.mu.Unlock()
				if n != 2 {
					return fmt.Errorf("%d acknowledgements pending, want 2", n)
				}
				return nil
			})
			close(hold)
			held = false
			for _, c := range []chan error{appended, acked, acked} {
				if err := <-c; err != nil {
					t.Fatal(err)
				}
			}
			st = q.Stats()
			if st.Acked != 3 || st.Records != 1 || st.Points != 1 {
				t.Errorf("after acknowledging 3 twice in one commit: acked %d, records %d, points %d, want 3, 1, 1",
					st.Acked, st.Records, st.Points)
			}
			if seqs := peekSeqs(t, q, 0, 10); len(seqs) != 1 || seqs[0] != 4 {
				t.Errorf("stored: %v, want [4]", seqs)
			}
		})
	}
}
