package uplink

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// slowAckSource holds its first AckSeqs until a second one has returned,
// as a group commit does when a run of acknowledgements waits for an fsync
// and the next run joins the following commit.
type slowAckSource struct {
	*memSource
	mu      sync.Mutex
	calls   int
	second  chan struct{} // closed when a second AckSeqs returned
	overlap bool          // a second AckSeqs returned while the first waited
}

func (s *slowAckSource) AckSeqs(seqs []uint64) error {
	s.mu.Lock()
	s.calls++
	n := s.calls
	s.mu.Unlock()
	if n == 1 {
		select {
		case <-s.second:
			s.mu.Lock()
			s.overlap = true
			s.mu.Unlock()
		case <-time.After(5 * time.Second):
		}
		return s.memSource.AckSeqs(seqs)
	}
	err := s.memSource.AckSeqs(seqs)
	if n == 2 {
		close(s.second)
	}
	return err
}

// TestUplinkAcksWhileAnAckWaits: while one acknowledgement waits for its
// commit, the PUBACKs that arrive meanwhile are acknowledged too, instead
// of waiting for the first to return; and nothing is acknowledged that the
// broker did not PUBACK.
func TestUplinkAcksWhileAnAckWaits(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	mem := newMemSource()
	ackOnlyPubacked(mem, rec)
	src := &slowAckSource{memSource: mem, second: make(chan struct{})}
	cfg := testConfig(b.url())
	cfg.Window = 8
	u, stop := runUplink(t, cfg, src)
	checkFor(t, wait, time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	// One live record: its acknowledgement is the first, and waits.
	first := mem.Append(testBatch("live", 0))
	checkFor(t, wait, time.Millisecond, func() error {
		src.mu.Lock()
		defer src.mu.Unlock()
		if src.calls == 0 {
			return errNotYet
		}
		return nil
	})
	// The next records are sent, PUBACKed and acknowledged meanwhile.
	for i := 1; i <= 5; i++ {
		mem.Append(testBatch("live", i))
	}
	allDelivered(t, rec, mem, 6)
	stop()
	src.mu.Lock()
	defer src.mu.Unlock()
	if !src.overlap {
		t.Errorf("the first AckSeqs (seq %d) returned before any other was made: acknowledgements are serial", first)
	}
	if st := u.Stats(); st.Acked != 6 || st.MaxInFlight > cfg.Window {
		t.Errorf("stats %+v, want 6 acked and at most %d in flight", st, cfg.Window)
	}
	mem.check(t)
}

// TestUplinkLiveRecordsNeverWaitForTheBacklog: with a backlog far larger
// than the window and a broker that holds its PUBACKs, the backlog takes
// at most Window - Window/liveReserve slots, and live records still go out
// at once; in-flight never passes the window.
func TestUplinkLiveRecordsNeverWaitForTheBacklog(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	p := startProxy(t, b.addr)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	const backlog = 1000
	fill(src, backlog)
	cfg := testConfig(p.url())
	cfg.Window = 20
	cfg.PublishTimeout = time.Minute
	u, stop := runUplink(t, cfg, src)
	checkFor(t, wait, time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	p.Stall(true) // the broker gets the PUBLISHes; its PUBACKs are held back
	checkFor(t, wait, time.Millisecond, func() error {
		if n := u.Stats().InFlight; n != cfg.Window-cfg.Window/liveReserve {
			return fmt.Errorf("in flight %d", n)
		}
		return nil
	})
	var live []uint64
	for i := range cfg.Window / liveReserve {
		live = append(live, src.Append(testBatch("live", i)))
	}
	checkFor(t, wait, time.Millisecond, func() error {
		for _, seq := range live {
			if !rec.has(seq) {
				return fmt.Errorf("live seq %d not at the broker while the backlog fills its share", seq)
			}
		}
		return nil
	})
	// The window is full now, unless PUBACKs the proxy had read before
	// the stall arrived meanwhile and freed backlog slots (one read can
	// carry several); then the backlog stays below its share until the
	// live records' slots free up.
	if n := u.Stats().InFlight; n < len(live) || n > cfg.Window {
		t.Errorf("in flight %d, want %d..%d (the live records, at most the window)", n, len(live), cfg.Window)
	}
	p.Stall(false)
	allDelivered(t, rec, src, backlog+len(live))
	stop()
	if m := u.Stats().MaxInFlight; m > cfg.Window {
		t.Errorf("max in flight %d, window %d", m, cfg.Window)
	}
	src.check(t)
}
