package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestQueueAckSeqsDeletesExactlyThose: out-of-order acknowledgement deletes
// the named records only, keeps the rest across a reopen, and ignores seqs
// that are not stored.
func TestQueueAckSeqsDeletesExactlyThose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	q := openQueue(t, path, Options{}, nil)
	for i := range 10 {
		mustAppend(t, q, batch("d", i, 3))
	}
	if err := q.AckSeqs([]uint64{2, 5, 9, 10, 42}); err != nil {
		t.Fatal(err)
	}
	want := []uint64{1, 3, 4, 6, 7, 8}
	if got := peekSeqs(t, q, 0, 100); !slices.Equal(got, want) {
		t.Fatalf("after AckSeqs: %v, want %v", got, want)
	}
	st := q.Stats()
	if st.Records != 6 || st.Points != 18 || st.Acked != 4 || st.FirstSeq != 1 || st.LastSeq != 10 {
		t.Fatalf("stats %+v", st)
	}
	if n, last := q.Depth(); n != 6 || last != 10 {
		t.Fatalf("Depth = %d, %d", n, last)
	}
	if err := q.AckSeqs([]uint64{1}); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.FirstSeq != 3 {
		t.Fatalf("first seq %d after acking 1, want 3", st.FirstSeq)
	}
	_ = q.Close()
	q = openQueue(t, path, Options{}, nil)
	if got := peekSeqs(t, q, 0, 100); !slices.Equal(got, want[1:]) {
		t.Fatalf("after reopen: %v, want %v", got, want[1:])
	}
	mustAppend(t, q, batch("d", 11, 1))
	if got := peekSeqs(t, q, 8, 100); !slices.Equal(got, []uint64{11}) {
		t.Fatalf("new record after reopen: %v, want [11]", got)
	}
}

// TestQueueMaxAgeDropsOldRecords: records older than MaxAge go, counted as
// dropped and per device; younger ones stay; none goes before MaxAge.
func TestQueueMaxAgeDropsOldRecords(t *testing.T) {
	const maxAge = 400 * time.Millisecond
	q := openQueue(t, filepath.Join(t.TempDir(), "b.db"), Options{MaxAge: maxAge}, nil)
	// Times taken before Append are at or before the commit: a record
	// dropped less than maxAge after them was certainly dropped too early.
	tOld := time.Now()
	mustAppend(t, q, batch("old", 1, 2), batch("old", 2, 2), batch("old", 3, 2))
	time.Sleep(maxAge / 2)
	tNew := time.Now()
	mustAppend(t, q, batch("new", 4, 5), batch("new", 5, 5))

	// Wait until the old records have gone. On a loaded machine the new
	// ones may be gone by then too, but never before their own max age.
	waitFor(t, 5*time.Second, func() error {
		if d := q.DroppedByDevice(); d["old"].Records != 3 {
			return fmt.Errorf("%d old records dropped", d["old"].Records)
		}
		return nil
	})
	if age := time.Since(tOld); age < maxAge {
		t.Fatalf("old records dropped after %v, before max age %v", age, maxAge)
	}
	st := q.Stats()
	newAge := time.Since(tNew) // measured after Stats: an upper bound on their age then
	if newAge < maxAge {
		if got := peekSeqs(t, q, 0, 10); st.Records != 2 || !slices.Equal(got, []uint64{4, 5}) {
			t.Fatalf("after %v the new records should all be there: %d records, %v", newAge, st.Records, got)
		}
	}
	if st.AgedRecords < 3 || st.DroppedRecords != st.AgedRecords || st.DroppedPoints != 6+5*(st.AgedRecords-3) {
		t.Fatalf("stats %+v", st)
	}
	if d := q.DroppedByDevice(); d["old"] != (Drops{3, 6}) {
		t.Fatalf("drops by device %v", d)
	}
	waitFor(t, 5*time.Second, func() error {
		if st := q.Stats(); st.Records != 0 {
			return fmt.Errorf("%d records", st.Records)
		}
		return nil
	})
	if age := time.Since(tNew); age < maxAge {
		t.Fatalf("new records dropped after %v, before max age %v", age, maxAge)
	}
	if d := q.DroppedByDevice(); d["new"] != (Drops{2, 10}) {
		t.Fatalf("drops by device %v", d)
	}
	if age := time.Since(tNew); age > maxAge+5*time.Second {
		t.Errorf("records kept %v, max age %v", age, maxAge)
	}
}

// TestQueueMaxAgeAppliesAfterReopen: the commit times survive a restart.
func TestQueueMaxAgeAppliesAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	opts := Options{MaxAge: 200 * time.Millisecond}
	q := openQueue(t, path, opts, nil)
	mustAppend(t, q, batch("a", 1, 1), batch("a", 2, 1))
	_ = q.Close()
	time.Sleep(300 * time.Millisecond)
	q = openQueue(t, path, opts, nil)
	if st := q.Stats(); st.Records != 0 || st.AgedRecords != 2 {
		t.Fatalf("after reopen with a max age: %+v", st)
	}
}

// TestQueueByteBoundCountsPerDevice: drop-oldest is counted per device.
func TestQueueByteBoundCountsPerDevice(t *testing.T) {
	one := encodedLen(batch("a", 1, 4))
	q := openQueue(t, filepath.Join(t.TempDir(), "b.db"), Options{MaxBytes: 3 * one}, nil)
	mustAppend(t, q, batch("a", 1, 4), batch("b", 2, 4), batch("a", 3, 4))
	mustAppend(t, q, batch("c", 4, 4), batch("c", 5, 4))
	if d := q.DroppedByDevice(); d["a"] != (Drops{1, 4}) || d["b"] != (Drops{1, 4}) || len(d) != 2 {
		t.Fatalf("drops by device %v", d)
	}
	if st := q.Stats(); st.DroppedRecords != 2 || st.AgedRecords != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestQueueCommitFailureIsNeverSilent: a failing commit (disk full) is
// returned by Append, shows in Stats, loses nothing already stored, and the
// queue recovers by itself once writes succeed again.
func TestQueueCommitFailureIsNeverSilent(t *testing.T) {
	for _, interval := range []time.Duration{0, 20 * time.Millisecond} {
		t.Run(fmt.Sprintf("sync_interval=%v", interval), func(t *testing.T) {
			logs := newLogRecorder()
			q := openQueue(t, filepath.Join(t.TempDir(), "b.db"), Options{SyncInterval: interval}, slog.New(logs))
			mustAppend(t, q, batch("d", 1, 3), batch("d", 2, 3))
			waitFor(t, 5*time.Second, func() error {
				if n := q.Stats().Records; n != 2 {
					return fmt.Errorf("%d records", n)
				}
				return nil
			})
			setHook(q, func() error { return syscall.ENOSPC })
			err := q.Append(context.Background(), batch("d", 3, 3))
			if interval == 0 && !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Append with a full disk returned %v, want ENOSPC", err)
			}
			waitFor(t, 5*time.Second, func() error {
				if st := q.Stats(); st.LostRecords != 1 {
					return fmt.Errorf("lost %d", st.LostRecords)
				}
				return nil
			})
			st := q.Stats()
			if !st.Failing || st.WriteErrors == 0 || st.LostPoints != 3 || st.Records != 2 || st.Appended != 2 ||
				st.LastError == "" {
				t.Fatalf("stats while failing %+v", st)
			}
			if got := peekSeqs(t, q, 0, 10); !slices.Equal(got, []uint64{1, 2}) {
				t.Fatalf("stored %v, want [1 2]", got)
			}
			if logs.count("buffer write failed") != 1 {
				t.Errorf("write failure logged %d times, want once", logs.count("buffer write failed"))
			}
			setHook(q, nil) // space is back
			mustAppend(t, q, batch("d", 4, 3))
			waitFor(t, 5*time.Second, func() error {
				if st := q.Stats(); st.Records != 3 || st.Failing {
					return fmt.Errorf("stats %+v", st)
				}
				return nil
			})
			recs, _ := q.Peek(0, 10)
			var ids []int
			for _, r := range recs {
				ids = append(ids, batchID(r.Batch))
			}
			if !slices.Equal(ids, []int{1, 2, 4}) {
				t.Fatalf("batches stored %v, want [1 2 4]: the failed one is lost, nothing else", ids)
			}
		})
	}
}

func setHook(q *Queue, h func() error) {
	q.wmu.Lock()
	q.commitHook = h
	q.wmu.Unlock()
}

func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
