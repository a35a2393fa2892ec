package uplink

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
)

// TestUplinkEmptiesTheBuffer: the uplink in front of a real buffer and an
// embedded broker, as the gateway runs it, with appends arriving in small
// bursts from several goroutines and pauses long enough for the buffer to
// drain to empty in between (the ThingsBoard gateway test's shape, many
// times over). After every burst each record must reach the broker and
// leave the buffer: a record PUBACKed and acknowledged but still stored
// stays there for good, since this session will not send it again.
func TestUplinkEmptiesTheBuffer(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	u, stop := runUplink(t, testConfig(b.url()), q)
	checkFor(t, wait, time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})

	bursts := 150
	if testing.Short() {
		bursts = 40
	}
	r := rand.New(rand.NewPCG(1, 2))
	var appended uint64
	ctx := context.Background()
	for i := range bursts {
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		n := 1 + r.IntN(3)
		for g := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := testBatch(fmt.Sprintf("dev-%d", g), i)
				if err := q.Append(ctx, &b); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("burst %d: Append: %v", i, err)
		}
		appended += uint64(n)
		if r.IntN(4) == 0 {
			continue // the next burst lands while this one is in flight
		}
		checkFor(t, wait, time.Millisecond, func() error {
			if m := rec.missing(appended); m > 0 {
				return fmt.Errorf("burst %d: %d of %d records not at the broker", i, m, appended)
			}
			if n, _ := q.Depth(); n > 0 {
				recs, _ := q.Peek(0, 5)
				var seqs []uint64
				for _, r := range recs {
					seqs = append(seqs, r.Seq)
				}
				return fmt.Errorf("burst %d: %d records still buffered (%v...), uplink acked %d of %d",
					i, n, seqs, u.Stats().Acked, appended)
			}
			return nil
		})
	}
	stop()
	st := q.Stats()
	if st.Records != 0 || st.Acked != appended || st.Appended != appended {
		t.Errorf("buffer: %d records stored, %d acked, %d appended; want 0, %d, %d",
			st.Records, st.Acked, st.Appended, appended, appended)
	}
}

// TestUplinkHurriesLingeringAcknowledgements: over a buffer that holds
// acknowledgements back for appends that never come (AckLinger of an
// hour), a backlog far larger than the window's settling bound is still
// delivered and deleted: the sender, held back by records waiting for
// AckSeqs, asks the buffer to commit them (AckCommitter).
func TestUplinkHurriesLingeringAcknowledgements(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), buffer.Options{AckLinger: time.Hour}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	const n = 200 // more than ackBound windows of 2 records, fewer than lingerAcks
	ctx := context.Background()
	for i := range n {
		b := testBatch("dev-0", i)
		if err := q.Append(ctx, &b); err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(b.url())
	cfg.Window = 2
	u, stop := runUplink(t, cfg, q)
	checkFor(t, wait, time.Millisecond, func() error {
		if m := rec.missing(n); m > 0 {
			return fmt.Errorf("%d of %d records not at the broker", m, n)
		}
		if d, _ := q.Depth(); d > 0 {
			return fmt.Errorf("%d records still buffered, uplink settling %d", d, u.Stats().Settling)
		}
		return nil
	})
	stop()
	if st := u.Stats(); st.MaxInFlight > cfg.Window || st.Acked != n {
		t.Errorf("max in flight %d (window %d), acked %d of %d", st.MaxInFlight, cfg.Window, st.Acked, n)
	}
}
