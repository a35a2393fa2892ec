package uplink

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
)

// heldAcks is a memSource whose AckSeqs waits until release is closed, as
// a buffer whose disk has stopped answering would.
type heldAcks struct {
	*memSource
	release chan struct{}
}

func (s *heldAcks) AckSeqs(seqs []uint64) error {
	<-s.release
	return s.memSource.AckSeqs(seqs)
}

// TestUplinkReportsAStuckAcknowledgement: an acknowledgement to the Source
// that does not return keeps its records settling; the uplink counts it in
// Stats.SlowAcks and warns once, and carries on when it returns.
func TestUplinkReportsAStuckAcknowledgement(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	src := &heldAcks{memSource: newMemSource(), release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(src.release)
		}
	}()
	ackOnlyPubacked(src.memSource, rec)
	fill(src.memSource, 3)
	var logs peers.SyncBuffer
	u, err := New(testConfig(b.url()), src, jsonenc.Encoder{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	u.slowAfter = 50 * time.Millisecond
	stop := peers.Run(t, 15*time.Second, u.Run)

	checkFor(t, wait, 10*time.Millisecond, func() error {
		if st := u.Stats(); st.SlowAcks == 0 || st.Settling == 0 {
			return fmt.Errorf("slow acks %d, settling %d", st.SlowAcks, st.Settling)
		}
		// The count is raised before the warning is written.
		if !strings.Contains(logs.String(), "acknowledgement to the buffer has not returned") {
			return fmt.Errorf("no warning yet")
		}
		return nil
	})
	if n := strings.Count(logs.String(), "acknowledgement to the buffer has not returned"); n != 1 {
		t.Errorf("%d slow acknowledgement warnings, want 1:\n%s", n, logs.String())
	}

	close(src.release)
	released = true
	allDelivered(t, rec, src.memSource, 3)
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if st := u.Stats(); st.InFlight != 0 || st.Settling != 0 || st.Acked != 3 {
			return fmt.Errorf("in flight %d, settling %d, acked %d", st.InFlight, st.Settling, st.Acked)
		}
		return nil
	})
	stop()
	src.check(t)
}
