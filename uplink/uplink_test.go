package uplink

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

const wait = 20 * time.Second // bound for every checkFor; generous for -race on a busy CI

// allDelivered waits until every record 1..n reached the broker and the
// source has been acked empty.
func allDelivered(t *testing.T, rec *recorder, src *memSource, n int) {
	t.Helper()
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if m := rec.missing(uint64(n)); m > 0 {
			return fmt.Errorf("%d of %d records not at the broker", m, n)
		}
		if l := src.Len(); l > 0 {
			return fmt.Errorf("%d records not acked", l)
		}
		return nil
	})
}

func TestUplinkPublishesEachRecordOnceInOrder(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	const n = 500
	fill(src, n/2)
	u, stop := runUplink(t, testConfig(b.url()), src)
	checkFor(t, wait, time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	fill(src, n/2) // live: these arrive after the connection was established
	allDelivered(t, rec, src, n)
	stop()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seqs) != n {
		t.Errorf("broker got %d data messages, want %d", len(rec.seqs), n)
	}
	// The first n/2 were stored before the connection: historical. Each
	// stream is in seq order; together they cover 1..n once.
	var live, hist []uint64
	for i, s := range rec.seqs {
		if rec.hist[i] {
			hist = append(hist, s)
		} else {
			live = append(live, s)
		}
	}
	if !slices.Equal(hist, seqRange(1, n/2)) {
		t.Errorf("historical seqs %v, want 1..%d in order", hist, n/2)
	}
	if !slices.Equal(live, seqRange(n/2+1, n)) {
		t.Errorf("live seqs %v, want %d..%d in order", live, n/2+1, n)
	}
	for seq, topic := range rec.topics {
		if want := fmt.Sprintf("fieldgate/gw1/dev-%d", (seq-1)%3); topic != want {
			t.Fatalf("seq %d on topic %q, want %q", seq, topic, want)
		}
	}
	if len(rec.bad) > 0 {
		t.Errorf("unparsable payloads: %v", rec.bad)
	}
	st := u.Stats()
	if st.Published != n || st.Acked != n || st.InFlight != 0 || st.Connected || st.Reconnects != 0 ||
		st.ReplayedTotal != n/2 || st.LiveTotal != n/2 || st.BacklogRecords != 0 {
		t.Errorf("stats after stop = %+v", st)
	}
	t.Logf("%d Ack calls for %d records", src.acks, n)
	src.check(t)
}

func TestUplinkStatusOnlineThenOfflineOnStop(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	sub := subscribe(t, b.url(), "watcher", "fieldgate/gw1/status")
	u, stop := runUplink(t, testConfig(b.url()), newMemSource())
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if !u.Stats().Connected || len(sub.statuses()) == 0 {
			return errNotYet
		}
		return nil
	})
	if got := sub.statuses(); got[0] != "online" {
		t.Fatalf("first status %q, want online", got[0])
	}
	stop()
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if got := sub.statuses(); len(got) < 2 {
			return fmt.Errorf("statuses %v", got)
		}
		return nil
	})
	// A loaded machine may make the uplink reconnect (online again) or
	// deliver the retained online beside the live one: repeats are fine,
	// the order is what counts.
	if got := slices.Compact(sub.statuses()); strings.Join(got, ",") != "online,offline" {
		t.Errorf("statuses = %v, want online (repeated or not), then offline", sub.statuses())
	}
	m, _ := sub.last()
	var st struct {
		Status, Gateway string
		TS              int64
	}
	if err := json.Unmarshal(m.payload, &st); err != nil || st.Gateway != "gw1" || st.TS < time.Now().Add(-time.Minute).UnixMilli() {
		t.Errorf("offline payload %s (%v)", m.payload, err)
	}
	// A late subscriber gets the retained offline.
	late := subscribe(t, b.url(), "late", "fieldgate/gw1/status")
	checkFor(t, wait, 10*time.Millisecond, func() error {
		m, ok := late.last()
		if !ok {
			return errNotYet
		}
		if !m.retained || !strings.Contains(string(m.payload), `"offline"`) {
			return fmt.Errorf("retained status %s retained=%v", m.payload, m.retained)
		}
		return nil
	})
}

func TestUplinkLastWillWhenConnectionDies(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	p := startProxy(t, b.addr)
	sub := subscribe(t, b.url(), "watcher", "fieldgate/gw1/status")
	u, _ := runUplink(t, testConfig(p.url()), newMemSource())
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if len(sub.statuses()) == 0 {
			return errNotYet
		}
		return nil
	})
	p.Cut()
	// The broker publishes the will (offline); the uplink comes back online.
	// The watcher may get the first online twice (live, and as the retained
	// copy its subscription raced with), so repeats are folded.
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if got := strings.Join(slices.Compact(sub.statuses()), ","); got != "online,offline,online" {
			return fmt.Errorf("statuses %s", got)
		}
		return nil
	})
	if st := u.Stats(); st.Reconnects != 1 || st.LastError == "" {
		t.Errorf("stats = %+v, want 1 reconnect and a last error", st)
	}
}

// TestUplinkRedeliversAfterConnectionReset cuts the connection several times
// while records flow: every record arrives at least once, no Ack covers a
// record the broker did not receive, and re-sends stay within the window.
func TestUplinkRedeliversAfterConnectionReset(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	p := startProxy(t, b.addr)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	cfg := testConfig(p.url())
	cfg.Window = 32
	u, stop := runUplink(t, cfg, src)

	const n, cuts = 3000, 4
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := range n {
			src.Append(testBatch("press-1", i))
		}
	}()
	for c := 1; c <= cuts; c++ {
		target := c * n / (cuts + 1)
		checkFor(t, wait, time.Millisecond, func() error {
			if rec.total() < target {
				return errNotYet
			}
			return nil
		})
		p.Cut()
		checkFor(t, wait, time.Millisecond, func() error {
			if u.Stats().Reconnects < uint64(c) {
				return errNotYet
			}
			return nil
		})
	}
	<-produced
	allDelivered(t, rec, src, n)
	stop()
	src.check(t)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	dups := len(rec.seqs) - n
	reconnects := int(u.Stats().Reconnects)
	t.Logf("%d messages for %d records, %d reconnects", len(rec.seqs), n, reconnects)
	if dups > reconnects*cfg.Window {
		t.Errorf("%d duplicates after %d reconnects, more than the window %d allows", dups, reconnects, cfg.Window)
	}
	// A copy sent again is historical: it was stored before the
	// connection that re-sent it.
	seen := map[uint64]bool{}
	for i, s := range rec.seqs {
		if seen[s] && !rec.hist[i] {
			t.Fatalf("seq %d sent again without historical", s)
		}
		seen[s] = true
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestUplinkSurvivesBrokerRestart(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	u, _ := runUplink(t, testConfig(b.url()), src)
	const n = 400
	fill(src, n/2)
	checkFor(t, wait, time.Millisecond, func() error {
		if rec.total() < n/4 {
			return errNotYet
		}
		return nil
	})
	b.Close()
	checkFor(t, wait, time.Millisecond, func() error {
		if u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	fill(src, n/2) // produced while the broker is down
	startBroker(t, b.addr, rec)
	allDelivered(t, rec, src, n)
	if st := u.Stats(); st.Reconnects < 1 || !st.Connected {
		t.Errorf("stats = %+v", st)
	}
	src.check(t)
}

func TestUplinkRetriesUntilBrokerAppears(t *testing.T) {
	addr := freePort(t)
	src := newMemSource()
	fill(src, 50)
	u, _ := runUplink(t, testConfig("tcp://"+addr), src)
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if u.Stats().LastError == "" {
			return errNotYet
		}
		return nil
	})
	if u.Stats().Connected || src.Len() != 50 {
		t.Fatalf("stats %+v with no broker", u.Stats())
	}
	rec := newRecorder()
	ackOnlyPubacked(src, rec)
	startBroker(t, addr, rec)
	allDelivered(t, rec, src, 50)
	if st := u.Stats(); st.Reconnects != 0 || !st.Connected {
		t.Errorf("stats = %+v, want connected with 0 reconnects (first connection)", st)
	}
}

// TestUplinkWindowBoundsInFlight holds back the broker's PUBACKs: the uplink
// sends exactly Window messages and then waits.
func TestUplinkWindowBoundsInFlight(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	p := startProxy(t, b.addr)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	fill(src, 200)
	cfg := testConfig(p.url())
	cfg.Window = 8
	cfg.PublishTimeout = time.Minute
	u, err := New(cfg, src, nil, nil)
	if err == nil || u != nil {
		t.Fatal("New accepted a nil encoder")
	}
	// The backlog must still be replaying when the stall begins: without
	// the gate, 200 records could all be PUBACKed before the test saw
	// Connected (3 of 10 package runs on an idle machine), and the window
	// never filled.
	gated := &gatedBacklog{memSource: src, mark: 200, gate: make(chan struct{})}
	u, stop := runUplink(t, cfg, gated)
	t.Cleanup(gated.open) // before the uplink's stop, if the test ends early
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	p.Stall(true)
	gated.open()
	// The backlog leaves part of the window (liveReserve) to live records.
	backlogMax := cfg.Window - cfg.Window/liveReserve
	checkFor(t, wait, time.Millisecond, func() error {
		if st := u.Stats(); st.InFlight != backlogMax {
			return fmt.Errorf("in flight %d, want %d backlog records", st.InFlight, backlogMax)
		}
		return nil
	})
	var live []uint64
	for range 5 {
		live = append(live, src.Append(testBatch("live", 0)))
	}
	// Live records take the reserve: the window fills up, or, when PUBACKs
	// already on their way as the stall began freed backlog slots, every
	// live record is out and the backlog stays below its share.
	checkFor(t, wait, time.Millisecond, func() error {
		st := u.Stats()
		if st.InFlight == cfg.Window {
			return nil
		}
		for _, seq := range live {
			if !rec.has(seq) {
				return fmt.Errorf("in flight %d, live seq %d not sent", st.InFlight, seq)
			}
		}
		return nil
	})
	// Everything the broker has but did not PUBACK is in flight.
	acked := u.Stats().Acked
	if got := uint64(rec.total()) - acked; got > uint64(cfg.Window) {
		t.Errorf("broker holds %d unacknowledged messages, window is %d", got, cfg.Window)
	}
	p.Stall(false)
	allDelivered(t, rec, src, 205)
	stop()
	if m := u.maxInFlight.Load(); m > int64(cfg.Window) || m < int64(backlogMax) {
		t.Errorf("max in flight %d, want between the backlog's share %d and the window %d", m, backlogMax, cfg.Window)
	}
	src.check(t)
}

// TestUplinkReconnectsOnPubackTimeout: PUBACKs that never come make the
// uplink drop the connection and send again on a new one.
func TestUplinkReconnectsOnPubackTimeout(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	p := startProxy(t, b.addr)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	cfg := testConfig(p.url())
	cfg.PublishTimeout = 300 * time.Millisecond
	u, _ := runUplink(t, cfg, src)
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	p.Stall(true)
	fill(src, 20)
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if !strings.Contains(u.Stats().LastError, "PUBACK") {
			return fmt.Errorf("last error %q", u.Stats().LastError)
		}
		return nil
	})
	if st := u.Stats(); st.Acked != 0 || src.Len() != 20 {
		t.Fatalf("acked without PUBACKs: %+v, %d left", st, src.Len())
	}
	p.Stall(false)
	allDelivered(t, rec, src, 20)
	src.check(t)
}

func TestUplinkDropsRecordsTheEncoderRefuses(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	src := newMemSource()
	fill(src, 10)
	u, err := New(testConfig(b.url()), src, refuseSeq{3}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel(t)
	done := make(chan error)
	go func() { done <- u.Run(ctx) }()
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if src.Len() > 0 {
			return errNotYet
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := u.Stats(); st.EncodeErrors != 1 || st.Published != 9 || rec.total() != 9 || rec.has(3) {
		t.Errorf("stats %+v, broker got %d", st, rec.total())
	}
}

type refuseSeq struct{ seq uint64 }

func (r refuseSeq) Encode(dst []byte, gw string, rec *telemetry.Record, _ bool) ([]byte, error) {
	if rec.Seq == r.seq {
		return dst, fmt.Errorf("cannot encode")
	}
	return fmt.Appendf(dst, `{"seq":%d}`, rec.Seq), nil
}

func TestRunTwiceIsAnError(t *testing.T) {
	u, _ := runUplink(t, testConfig("tcp://"+freePort(t)), newMemSource())
	checkFor(t, wait, time.Millisecond, func() error {
		if !u.running.Load() {
			return errNotYet
		}
		return nil
	})
	if err := u.Run(t.Context()); err == nil {
		t.Fatal("second Run returned nil")
	}
}

// TestUplinkStopAcksWhatArrivesDuringDrain: on cancel the uplink stops
// sending, publishes offline and still acknowledges PUBACKs that arrive
// within the drain time.
func TestUplinkStopAcksWhatArrivesDuringDrain(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	p := startProxy(t, b.addr)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	cfg := testConfig(p.url())
	cfg.PublishTimeout = time.Minute
	u, stop := runUplink(t, cfg, src)
	checkFor(t, wait, 10*time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	p.Stall(true)
	fill(src, 10)
	checkFor(t, wait, time.Millisecond, func() error {
		if st := u.Stats(); st.InFlight != 10 {
			return fmt.Errorf("in flight %d", st.InFlight)
		}
		return nil
	})
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	checkFor(t, wait, time.Millisecond, func() error {
		if s := rec.statuses(); len(s) == 0 || s[len(s)-1] != "offline" {
			return fmt.Errorf("statuses %v", s)
		}
		return nil
	})
	if src.Len() != 10 {
		t.Fatalf("%d records left before the PUBACKs, want 10", src.Len())
	}
	p.Stall(false)
	<-stopped // stop bounds the wait
	if n := src.Len(); n != 0 {
		t.Errorf("%d records not acked after a drain that got every PUBACK", n)
	}
	src.check(t)
}

// TestUplinkReplayRateKeepsLiveFlowing: with a backlog and a replay rate,
// live records go out as they come while the backlog drains no faster than
// the rate; every record is marked correctly and nothing is lost.
func TestUplinkReplayRateKeepsLiveFlowing(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	const backlog, rate = 150, 100.0
	fill(src, backlog)
	cfg := testConfig(b.url())
	cfg.ReplayRate = rate
	u, stop := runUplink(t, cfg, src)
	checkFor(t, wait, time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	start := time.Now()
	if st := u.Stats(); st.BacklogRecords == 0 || st.BacklogRecords > backlog {
		t.Errorf("backlog at connect %d, want 1..%d", st.BacklogRecords, backlog)
	}
	// Live records every 10 ms while the backlog drains: each must reach
	// the broker quickly even though the backlog is far from done.
	var maxLag time.Duration
	for range 50 {
		seq := src.Append(testBatch("live", 0))
		sent := time.Now()
		checkFor(t, wait, time.Millisecond, func() error {
			if !rec.has(seq) {
				return errNotYet
			}
			return nil
		})
		maxLag = max(maxLag, time.Since(sent))
		replayed := u.Stats().ReplayedTotal
		if limit := uint64(rate/10 + rate*time.Since(start).Seconds() + 1); replayed > limit {
			t.Fatalf("after %v, %d backlog records replayed; rate %v/s allows %d", time.Since(start), replayed, rate, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := u.Stats(); st.BacklogRecords == 0 {
		t.Errorf("backlog done within %v at %v/s: %+v", time.Since(start), rate, st)
	}
	allDelivered(t, rec, src, backlog+50)
	elapsed := time.Since(start)
	stop()
	st := u.Stats()
	t.Logf("backlog of %d at %v/s drained in %v; live lag max %v; stats %+v", backlog, rate, elapsed, maxLag, st)
	// start is read just after Run began sending, hence 100 ms of slack.
	if min := time.Duration(float64(backlog-rate/10)/rate*float64(time.Second)) - 100*time.Millisecond; elapsed < min {
		t.Errorf("backlog drained in %v, faster than the rate allows (%v)", elapsed, min)
	}
	if maxLag > time.Second {
		t.Errorf("a live record took %v to reach the broker during the replay", maxLag)
	}
	if st.ReplayedTotal != backlog || st.LiveTotal != 50 || st.BacklogRecords != 0 {
		t.Errorf("stats %+v, want %d replayed and 50 live", st, backlog)
	}
	rec.mu.Lock()
	for i, s := range rec.seqs {
		if rec.hist[i] != (s <= backlog) {
			t.Errorf("seq %d historical=%v", s, rec.hist[i])
		}
	}
	rec.mu.Unlock()
	src.check(t)
}

// TestUplinkNoticesBlackHole: a link that stops forwarding without closing
// is noticed within 1.5 × keepalive by the MQTT ping, also when idle, and
// nothing sent into the black hole is acknowledged.
func TestUplinkNoticesBlackHole(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, "127.0.0.1:0", rec)
	p := startProxy(t, b.addr)
	src := newMemSource()
	ackOnlyPubacked(src, rec)
	cfg := testConfig(p.url())
	cfg.KeepAlive = 2 * time.Second
	cfg.PublishTimeout = time.Minute // only the keepalive can notice
	cfg.ReconnectMin = time.Second   // Connected stays false long enough to see
	cfg.ReconnectMax = time.Second
	u, _ := runUplink(t, cfg, src)
	checkFor(t, wait, time.Millisecond, func() error {
		if !u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	fill(src, 5)
	allDelivered(t, rec, src, 5)
	p.Blackhole(true)
	start := time.Now()
	fill(src, 5) // these vanish into the hole
	checkFor(t, wait, 5*time.Millisecond, func() error {
		if u.Stats().Connected {
			return errNotYet
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("black hole noticed after %v (keepalive %v): %s", took, cfg.KeepAlive, u.Stats().LastError)
	if bound := cfg.KeepAlive * 3 / 2; took > bound+300*time.Millisecond {
		t.Errorf("black hole noticed after %v, want within 1.5 × keepalive = %v", took, bound)
	}
	if src.Len() != 5 {
		t.Errorf("%d records left, want the 5 sent into the black hole", src.Len())
	}
	p.Blackhole(false)
	p.Cut()
	allDelivered(t, rec, src, 10)
	src.check(t)
}

// gatedBacklog is a memSource whose backlog peeks after the first wait
// until gate is closed: the replay sends at most one window before it.
type gatedBacklog struct {
	*memSource
	mark uint64 // records <= mark are the backlog
	gate chan struct{}
	once sync.Once
}

func (s *gatedBacklog) open() { s.once.Do(func() { close(s.gate) }) }

func (s *gatedBacklog) PeekInto(dst []telemetry.Record, after uint64, max int) ([]telemetry.Record, error) {
	if after > 0 && after < s.mark {
		<-s.gate
	}
	return s.memSource.PeekInto(dst, after, max)
}
