package buffer

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// ackAsync runs AckSeqs in a goroutine; the channel gets its result.
func ackAsync(q *Queue, seqs ...uint64) <-chan error {
	done := make(chan error, 1)
	go func() { done <- q.AckSeqs(seqs) }()
	return done
}

// pendingAcks waits until n acknowledgements are pending for the writer.
func pendingAcks(t *testing.T, q *Queue, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q.mu.Lock()
		k := len(q.pend.acks)
		q.mu.Unlock()
		if k >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledgements pending after 10s, want %d", k, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func ackReturned(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: AckSeqs: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: AckSeqs has not returned after 10s", what)
	}
}

func ackStillWaiting(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s: AckSeqs returned (%v) while its linger should hold it", what, err)
	default:
	}
}

// TestQueueAckLingerJoinsTheNextAppend: with AckLinger, an acknowledgement
// that finds no append pending waits for the next one and shares its
// commit; the record is deleted in the same transaction that stores the
// new one.
func TestQueueAckLingerJoinsTheNextAppend(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "q.db"), Options{AckLinger: time.Hour}, nil)
	ctx := context.Background()
	if err := q.Append(ctx, batch("d", 1, 10)); err != nil {
		t.Fatal(err)
	}
	commits := q.Stats().Commits
	done := ackAsync(q, 1)
	pendingAcks(t, q, 1)
	time.Sleep(20 * time.Millisecond) // the writer has seen it and lingers
	ackStillWaiting(t, done, "before the append")
	if n, _ := q.Depth(); n != 1 {
		t.Fatalf("%d records stored while the acknowledgement lingers, want 1", n)
	}
	if err := q.Append(ctx, batch("d", 2, 10)); err != nil {
		t.Fatal(err)
	}
	ackReturned(t, done, "after the append")
	st := q.Stats()
	if st.Records != 1 || st.FirstSeq != 2 || st.Acked != 1 || st.Commits != commits+1 {
		t.Errorf("records %d, first seq %d, acked %d, commits %d; want 1, 2, 1, %d",
			st.Records, st.FirstSeq, st.Acked, st.Commits, commits+1)
	}
}

// TestQueueAckLingerEnds: an acknowledgement lingers at most AckLinger;
// CommitAcks, lingerAcks pending records and Close end the wait sooner.
func TestQueueAckLingerEnds(t *testing.T) {
	ctx := context.Background()
	fill := func(q *Queue, n int) {
		t.Helper()
		for i := range n {
			if err := q.Append(ctx, batch("d", i, 2)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("linger passes", func(t *testing.T) {
		q := openQueue(t, filepath.Join(t.TempDir(), "q.db"), Options{AckLinger: 20 * time.Millisecond}, nil)
		fill(q, 1)
		ackReturned(t, ackAsync(q, 1), "no append")
		if n, _ := q.Depth(); n != 0 {
			t.Errorf("%d records stored, want 0", n)
		}
	})
	t.Run("CommitAcks", func(t *testing.T) {
		q := openQueue(t, filepath.Join(t.TempDir(), "q.db"), Options{AckLinger: time.Hour}, nil)
		fill(q, 2)
		done := ackAsync(q, 1)
		pendingAcks(t, q, 1)
		time.Sleep(20 * time.Millisecond)
		ackStillWaiting(t, done, "before CommitAcks")
		q.CommitAcks()
		ackReturned(t, done, "after CommitAcks")
		// Called with nothing pending, it lets the next one through.
		q.CommitAcks()
		ackReturned(t, ackAsync(q, 2), "after an early CommitAcks")
		if n, _ := q.Depth(); n != 0 {
			t.Errorf("%d records stored, want 0", n)
		}
	})
	t.Run("lingerAcks pending", func(t *testing.T) {
		q := openQueue(t, filepath.Join(t.TempDir(), "q.db"), Options{AckLinger: time.Hour}, nil)
		fill(q, lingerAcks)
		half := make([]uint64, 0, lingerAcks)
		for s := uint64(1); s <= lingerAcks/2; s++ {
			half = append(half, s)
		}
		first := ackAsync(q, half...)
		pendingAcks(t, q, len(half))
		time.Sleep(20 * time.Millisecond)
		ackStillWaiting(t, first, "half of lingerAcks")
		rest := make([]uint64, 0, lingerAcks)
		for s := uint64(lingerAcks/2 + 1); s <= lingerAcks; s++ {
			rest = append(rest, s)
		}
		second := ackAsync(q, rest...)
		ackReturned(t, first, "lingerAcks pending")
		ackReturned(t, second, "lingerAcks pending")
		if n, _ := q.Depth(); n != 0 {
			t.Errorf("%d records stored, want 0", n)
		}
	})
	t.Run("Close", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "q.db")
		q := openQueue(t, path, Options{AckLinger: time.Hour}, nil)
		fill(q, 2)
		done := ackAsync(q, 1)
		pendingAcks(t, q, 1)
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		ackReturned(t, done, "Close")
		q2 := openQueue(t, path, Options{}, nil)
		if st := q2.Stats(); st.Records != 1 || st.FirstSeq != 2 {
			t.Errorf("after reopening: %d records from seq %d, want 1 from 2", st.Records, st.FirstSeq)
		}
	})
}
