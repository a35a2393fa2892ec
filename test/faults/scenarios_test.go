package faults

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/gateway"
	"github.com/fieldgate/fieldgate/internal/peers"
	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
)

const window = 100

// committed keeps every reading the gateway's buffer committed.
type committed struct {
	mu sync.Mutex
	r  map[reading]struct{}
}

func (c *committed) observe(b *telemetry.Batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range b.Points {
		c.r[reading{b.Device, p.Tag, p.Time.UnixMilli()}] = struct{}{}
	}
}

func (c *committed) snapshot() map[reading]struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[reading]struct{}, len(c.r))
	for k := range c.r {
		out[k] = struct{}{}
	}
	return out
}

func (c *committed) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.r)
}

// runGateway runs an in-process gateway on the YAML config until the test
// ends (or stop is called) and records what it commits.
func runGateway(t *testing.T, dir, yaml string) (*gateway.Gateway, *committed, func()) {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(dir, "fieldgate.yaml"), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	rec := &committed{r: map[reading]struct{}{}}
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := gateway.New(cfg, gateway.Options{Observe: rec.observe}, log)
	if err != nil {
		t.Fatal(err)
	}
	stop := peers.Run(t, 20*time.Second, g.Run)
	return g, rec, stop
}

// TestBrokerSIGKILLedRepeatedly kills Mosquitto with SIGKILL at random
// moments while 4 devices are polled, and restarts it. Pass: every
// committed reading arrives, except readings the killed broker had already
// PUBACKed but not yet delivered to the subscriber (broker-side loss,
// reported separately): those are the readings committed before a kill and
// not received when it happened. Duplicates ≤ window per kill.
func TestBrokerSIGKILLedRepeatedly(t *testing.T) {
	kills, target := 3, 20000
	if long() {
		kills, target = 10, 100000
	}
	port := peers.FreePort(t)
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{Port: port})
	sub := newSubscriber(t, broker.Addr(), "fieldgate/faults-gw/#")
	px := peers.StartProxy(t, broker.Addr())
	addrs, _ := devices(t, 4)
	dir := t.TempDir()
	g, rec, stop := runGateway(t, dir, gatewayYAML(dir, px.Addr(), addrs, 25*time.Millisecond, ""))

	atRisk := map[reading]struct{}{}
	for i := range kills {
		goal := target * (i + 1) / (kills + 1)
		goal += rand.IntN(target/(kills+1)/2+1) - target/(kills+1)/4 // a random moment
		peers.CheckFor(t, 2*time.Minute, fmt.Sprintf("%d readings before kill %d", goal, i+1), func() error {
			if n := rec.len(); n < goal {
				return fmt.Errorf("%d readings", n)
			}
			return nil
		})
		px.Hold(true) // the gateway may reconnect only after the subscriber did
		before := rec.snapshot()
		broker.Kill()
		for r := range sub.notYet(before) {
			atRisk[r] = struct{}{}
		}
		time.Sleep(time.Duration(100+rand.IntN(700)) * time.Millisecond)
		broker.Start()
		sub.connect()
		px.Hold(false)
	}
	peers.CheckFor(t, 2*time.Minute, fmt.Sprintf("%d readings committed", target), func() error {
		if n := rec.len(); n < target {
			return fmt.Errorf("%d readings", n)
		}
		return nil
	})
	want := rec.snapshot()
	safe := map[reading]struct{}{}
	for r := range want {
		if _, risky := atRisk[r]; !risky {
			safe[r] = struct{}{}
		}
	}
	sub.waitAll(t, time.Minute, safe)
	tl := sub.tally(want)
	brokerLost := len(sub.notYet(atRisk))
	stop()
	st := g.Status()
	note := fmt.Sprintf("%d SIGKILLs; %d lost by the broker (PUBACKed, then killed before delivering); %d reconnects, %d replayed",
		kills, brokerLost, st.Uplink.Reconnects, st.Uplink.ReplayedTotal)
	record(t, row{scenario: "1 broker SIGKILLed and restarted", readings: tl.readings, lost: tl.lost - brokerLost,
		dup: tl.dupMsgs, outOfOrder: tl.outOfOrder, note: note})
	t.Log(note)
	if tl.dupMsgs > window*kills {
		t.Errorf("%d duplicate messages, more than window × kills = %d", tl.dupMsgs, window*kills)
	}
}

// TestGatewaySIGKILLedWhileBrokerDown kills the gateway process 3 times
// while its broker is down, each time reading the committed readings from
// the buffer file, then starts the broker and the gateway. Pass: every
// reading any of the files held arrives; no duplicates (nothing was sent
// before); SIGTERM then stops the gateway with status 0.
func TestGatewaySIGKILLedWhileBrokerDown(t *testing.T) {
	port := peers.FreePort(t)
	brokerAddr := fmt.Sprintf("127.0.0.1:%d", port)
	addrs, sims := devices(t, 3)
	dir := t.TempDir()
	cfgPath := writeFile(t, filepath.Join(dir, "fieldgate.yaml"), gatewayYAML(dir, brokerAddr, addrs, 50*time.Millisecond, ""))
	want := map[reading]struct{}{}
	for range 3 {
		gw := peers.StartFieldgate(t, "run", "-c", cfgPath)
		waitRequests(t, sims, 40)
		gw.Stop(t, syscall.SIGKILL, 5*time.Second)
		got, _ := bufferContents(t, filepath.Join(dir, "buffer.db"))
		for r := range got {
			want[r] = struct{}{}
		}
	}
	if len(want) < 3*3*tagsPerDev*5 {
		t.Fatalf("only %d readings committed over three runs", len(want))
	}
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{Port: port})
	sub := newSubscriber(t, broker.Addr(), "fieldgate/faults-gw/#")
	gw := peers.StartFieldgate(t, "run", "-c", cfgPath)
	sub.waitAll(t, time.Minute, want)
	st := gw.Stop(t, syscall.SIGTERM, 20*time.Second)
	tl := sub.tally(want)
	record(t, row{scenario: "2 gateway SIGKILLed 3x, broker down", readings: tl.readings, lost: tl.lost,
		dup: tl.dupMsgs, outOfOrder: tl.outOfOrder, note: fmt.Sprintf("exit after SIGTERM %d", st.ExitCode())})
	if st.ExitCode() != 0 {
		t.Errorf("exit status %d after SIGTERM", st.ExitCode())
	}
	if tl.dupMsgs > window {
		t.Errorf("%d duplicates", tl.dupMsgs)
	}
}

// TestBlackHoledUplink: the proxy stops forwarding without closing. Pass:
// the gateway notices within 1.5 × keepalive (2 s here, plus 300 ms of
// scheduling slack), reconnects when the route is back, and every
// committed reading arrives.
func TestBlackHoledUplink(t *testing.T) {
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{})
	sub := newSubscriber(t, broker.Addr(), "fieldgate/faults-gw/#")
	px := peers.StartProxy(t, broker.Addr())
	addrs, _ := devices(t, 2)
	dir := t.TempDir()
	g, rec, stop := runGateway(t, dir, gatewayYAML(dir, px.Addr(), addrs, 50*time.Millisecond, ""))
	peers.CheckFor(t, 30*time.Second, "data flowing", func() error {
		if g.Status().Uplink.Acked < 20 {
			return fmt.Errorf("acked %d", g.Status().Uplink.Acked)
		}
		return nil
	})
	px.Blackhole(true)
	start := time.Now()
	peers.CheckFor(t, 30*time.Second, "black hole noticed", func() error {
		if g.Status().Uplink.Connected {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	took := time.Since(start)
	px.Blackhole(false)
	peers.CheckFor(t, 30*time.Second, "reconnected", func() error {
		if st := g.Status().Uplink; !st.Connected || st.Reconnects == 0 {
			return fmt.Errorf("not reconnected")
		}
		return nil
	})
	want := rec.snapshot()
	sub.waitAll(t, time.Minute, want)
	stop()
	tl := sub.tally(want)
	note := fmt.Sprintf("noticed after %v (keepalive 2s): %s", took.Round(10*time.Millisecond), g.Status().Uplink.LastError)
	record(t, row{scenario: "3 black-holed uplink", readings: tl.readings, lost: tl.lost, dup: tl.dupMsgs,
		outOfOrder: tl.outOfOrder, note: note})
	t.Log(note)
	if took > 3*time.Second+300*time.Millisecond {
		t.Errorf("black hole noticed after %v, want within 1.5 × keepalive = 3s", took)
	}
	if tl.dupMsgs > window {
		t.Errorf("%d duplicates after one outage, window %d", tl.dupMsgs, window)
	}
}

// oneBatch is a batch of one reading whose tag names its number.
func oneBatch(dev string, i int, t0 time.Time) *telemetry.Batch {
	return &telemetry.Batch{Device: dev, Points: []telemetry.Point{
		{Tag: fmt.Sprintf("n%07d", i), Time: t0, Value: telemetry.Int(int64(i))},
	}}
}

// drain runs an uplink from q to the broker until q is empty.
func drain(t *testing.T, q *buffer.Queue, broker string, cfg uplink.Config) uplink.Stats {
	t.Helper()
	cfg.URL, cfg.Gateway = "tcp://"+broker, "faults-gw"
	cfg.Window = window
	u, err := uplink.New(cfg, q, jsonenc.Encoder{}, slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	peers.CheckFor(t, 3*time.Minute, "buffer drained", func() error {
		if n := q.Stats().Records; n > 0 {
			return fmt.Errorf("%d records left", n)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return u.Stats()
}

// TestBufferBoundDuringOutage fills a 1 MiB buffer far past its bound while
// nothing is sent, then drains it. Pass: the file never grows past 1 MiB,
// exactly the counted number of readings is missing, they are the oldest,
// and the per-device counts add up.
func TestBufferBoundDuringOutage(t *testing.T) {
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{})
	sub := newSubscriber(t, broker.Addr(), "fieldgate/faults-gw/#")
	path := filepath.Join(t.TempDir(), "b.db")
	q, err := buffer.Open(path, buffer.Options{MaxBytes: 1 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	t0 := time.UnixMilli(1764100000000)
	n := 60000
	var order []reading
	for i := 0; i < n; i += 500 {
		bs := make([]*telemetry.Batch, 0, 500)
		for j := i; j < i+500; j++ {
			b := oneBatch(fmt.Sprintf("dev-%d", j%3), j, t0)
			bs = append(bs, b)
			order = append(order, reading{b.Device, b.Points[0].Tag, t0.UnixMilli()})
		}
		if err := q.Append(context.Background(), bs...); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 1<<20 {
			t.Fatalf("buffer file is %d bytes, past its bound of 1 MiB", fi.Size())
		}
	}
	st := q.Stats()
	if st.DroppedPoints == 0 {
		t.Fatalf("bound not reached: %+v", st)
	}
	drain(t, q, broker.Addr(), uplink.Config{})
	want := map[reading]struct{}{}
	for _, r := range order {
		want[r] = struct{}{}
	}
	dropped := int(st.DroppedPoints)
	kept := map[reading]struct{}{}
	for _, r := range order[dropped:] {
		kept[r] = struct{}{}
	}
	sub.waitAll(t, time.Minute, kept)
	tl := sub.tally(want)
	var perDev uint64
	for _, d := range q.DroppedByDevice() {
		perDev += d.Points
	}
	if got := sub.tally(mapOf(order[:dropped])); got.lost != dropped {
		t.Errorf("%d of the %d oldest readings arrived; they were counted as dropped", dropped-got.lost, dropped)
	}
	record(t, row{scenario: "4 buffer bound reached in outage", readings: tl.readings, lost: tl.lost - dropped,
		dup: tl.dupMsgs, outOfOrder: tl.outOfOrder,
		note: fmt.Sprintf("%d oldest dropped = counter %d (per device sum %d); lost column excludes them", tl.lost, st.DroppedPoints, perDev)})
	if tl.lost != dropped || perDev != st.DroppedPoints {
		t.Errorf("missing %d, counted %d, per device %d", tl.lost, dropped, perDev)
	}
}

func mapOf(rs []reading) map[reading]struct{} {
	m := make(map[reading]struct{}, len(rs))
	for _, r := range rs {
		m[r] = struct{}{}
	}
	return m
}

// TestCorruptBufferAtStart damages a buffer file (truncated, a bit flipped
// in a meta page, a bit flipped in a data page) and starts the gateway on
// it. Pass: gateway.New succeeds, a damaged file is moved aside as
// *.corrupt-<time> (or the damaged record is skipped and counted), and new
// readings flow.
func TestCorruptBufferAtStart(t *testing.T) {
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{})
	addrs, _ := devices(t, 1)
	damages := []struct {
		name   string
		damage func(b []byte) []byte
		aside  bool
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/3] }, true},
		{"meta bit flipped", func(b []byte) []byte { b[20] ^= 0x10; b[4096+20] ^= 0x10; return b }, true},
		{"data bit flipped", func(b []byte) []byte { b[len(b)-4096-100] ^= 0x01; return b }, false},
	}
	total, lost, dups := 0, 0, 0
	for _, d := range damages {
		t.Run(strings.ReplaceAll(d.name, " ", "_"), func(t *testing.T) {
			sub := newSubscriber(t, broker.Addr(), "fieldgate/faults-gw/#")
			dir := t.TempDir()
			path := filepath.Join(dir, "buffer.db")
			q, err := buffer.Open(path, buffer.Options{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 200 {
				if err := q.Append(context.Background(), oneBatch("old", i, time.Now())); err != nil {
					t.Fatal(err)
				}
			}
			_ = q.Close()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, path, string(d.damage(b)))
			g, rec, stop := runGateway(t, dir, gatewayYAML(dir, broker.Addr(), addrs, 50*time.Millisecond, ""))
			peers.CheckFor(t, 30*time.Second, "new readings delivered", func() error {
				if g.Status().Uplink.LiveTotal < 10 {
					return fmt.Errorf("%d live records acked", g.Status().Uplink.LiveTotal)
				}
				return nil
			})
			want := rec.snapshot()
			sub.waitAll(t, 30*time.Second, want)
			stop()
			tl := sub.tally(want)
			total, lost, dups = total+tl.readings, lost+tl.lost, dups+tl.dupMsgs
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if d.aside && len(aside) != 1 {
				t.Errorf("damaged file not moved aside: %v", aside)
			}
			t.Logf("%s: moved aside %v; buffer %+v", d.name, aside, g.Status().Buffer)
		})
	}
	record(t, row{scenario: "5 corrupt buffer file at start", readings: total, lost: lost, dup: dups,
		note: "truncated, meta bit flip: moved aside; data bit flip: opened"})
}

// TestBacklogBeyondPacketIDs drains a backlog of more than 65,535 records
// (MQTT's packet identifier space) through a real broker. Pass: every
// record arrives once, in order, and the in-flight count never exceeds the
// window.
func TestBacklogBeyondPacketIDs(t *testing.T) {
	n := 70000
	if long() {
		n = 200000
	}
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{})
	sub := newSubscriber(t, broker.Addr(), "fieldgate/faults-gw/#")
	q, err := buffer.Open(filepath.Join(t.TempDir(), "b.db"), buffer.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	t0 := time.UnixMilli(1764100000000)
	want := map[reading]struct{}{}
	for i := 0; i < n; i += 1000 {
		bs := make([]*telemetry.Batch, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			b := oneBatch("dev-1", j, t0)
			bs = append(bs, b)
			want[reading{"dev-1", b.Points[0].Tag, t0.UnixMilli()}] = struct{}{}
		}
		if err := q.Append(context.Background(), bs...); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	st := drain(t, q, broker.Addr(), uplink.Config{})
	took := time.Since(start)
	sub.waitAll(t, time.Minute, want)
	tl := sub.tally(want)
	note := fmt.Sprintf("%d batches in %v (%.0f/s); max in flight %d (window %d)", n, took.Round(time.Millisecond),
		float64(n)/took.Seconds(), st.MaxInFlight, window)
	record(t, row{scenario: "7 backlog > 65535 batches", readings: tl.readings, lost: tl.lost, dup: tl.dupMsgs,
		outOfOrder: tl.outOfOrder, note: note})
	t.Log(note)
	if st.MaxInFlight > window || tl.lost > 0 || tl.dupMsgs > 0 || tl.outOfOrder > 0 {
		t.Errorf("max in flight %d, lost %d, duplicated %d, out of order %d", st.MaxInFlight, tl.lost, tl.dupMsgs, tl.outOfOrder)
	}
}

// TestSIGTERMDuringBacklogDrain builds a backlog while the broker is
// unreachable, lets it drain through a slow link, sends SIGTERM in the
// middle, and restarts. Pass: clean exit (status 0), the restarted gateway's
// first historical message is the oldest record left in the file, and
// every reading ever committed arrives.
func TestSIGTERMDuringBacklogDrain(t *testing.T) {
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{})
	sub := newSubscriber(t, broker.Addr(), "fieldgate/faults-gw/#")
	px := peers.StartProxy(t, broker.Addr())
	px.Hold(true)
	addrs, sims := devices(t, 3)
	dir := t.TempDir()
	cfgPath := writeFile(t, filepath.Join(dir, "fieldgate.yaml"), gatewayYAML(dir, px.Addr(), addrs, 50*time.Millisecond, ""))
	bufPath := filepath.Join(dir, "buffer.db")

	gw := peers.StartFieldgate(t, "run", "-c", cfgPath)
	waitRequests(t, sims, 60)
	gw.Stop(t, syscall.SIGKILL, 5*time.Second)
	want, _ := bufferContents(t, bufPath)

	px.SetRate(20 << 10) // about 20 messages a second
	px.Hold(false)
	gw = peers.StartFieldgate(t, "run", "-c", cfgPath)
	peers.CheckFor(t, 30*time.Second, "drain under way", func() error {
		if n := sub.tally(want); n.readings-n.lost < 40*tagsPerDev {
			return fmt.Errorf("%d readings received", n.readings-n.lost)
		}
		return nil
	})
	st := gw.Stop(t, syscall.SIGTERM, 20*time.Second)
	left, seqs := bufferContents(t, bufPath)
	if len(seqs) == 0 {
		t.Fatal("backlog drained before SIGTERM; slow the link")
	}
	for r := range left {
		want[r] = struct{}{}
	}
	px.SetRate(0)
	mark := sub.count()
	gw = peers.StartFieldgate(t, "run", "-c", cfgPath)
	sub.waitAll(t, time.Minute, want)
	gw.Stop(t, syscall.SIGTERM, 20*time.Second)
	var firstHist *msgRef
	for _, m := range sub.messages(mark) {
		if m.hist {
			firstHist = &m
			break
		}
	}
	tl := sub.tally(want)
	resumed := "none"
	if firstHist != nil {
		resumed = fmt.Sprint(firstHist.seq)
	}
	note := fmt.Sprintf("exit %d after SIGTERM with %d records left; first historical after restart seq %s (oldest left %d)",
		st.ExitCode(), len(seqs), resumed, slices.Min(seqs))
	record(t, row{scenario: "8 SIGTERM during backlog drain", readings: tl.readings, lost: tl.lost, dup: tl.dupMsgs,
		outOfOrder: tl.outOfOrder, note: note})
	t.Log(note)
	if st.ExitCode() != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", st.ExitCode())
	}
	if firstHist == nil || firstHist.seq != slices.Min(seqs) {
		t.Errorf("restart resumed at %+v, want the oldest unacknowledged seq %d", firstHist, slices.Min(seqs))
	}
	if tl.dupMsgs > 2*window {
		t.Errorf("%d duplicates over two stops", tl.dupMsgs)
	}
}

// setFileSizeLimit sets this process's soft RLIMIT_FSIZE (the hard limit
// stays, so it can be raised again without privileges) and returns the
// previous soft limit.
func setFileSizeLimit(t *testing.T, soft uint64) uint64 {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	old := lim.Cur
	lim.Cur = min(soft, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	return old
}

// TestCommitFailureFileSystemFull makes the buffer's writes fail for real
// while the in-process gateway polls 2 devices: the process's file size
// limit (RLIMIT_FSIZE) is lowered to 8 KiB, so every write of a bbolt data
// page fails with EFBIG as on a full disk (SIGXFSZ is ignored), for 2 s;
// then the limit is restored. Pass: every reading whose commit returned
// arrives; no reading arrives whose commit did not return (no silent ack);
// the failures are counted (write errors, lost points, failed appends) and
// shown by Ready (/readyz) while they last; after the limit is restored the
// gateway recovers without a restart: Ready again, new readings delivered.
func TestCommitFailureFileSystemFull(t *testing.T) {
	broker := peers.StartMosquitto(t, peers.MosquittoOptions{})
	sub := newSubscriber(t, broker.Addr(), "fieldgate/faults-gw/#")
	addrs, _ := devices(t, 2)
	dir := t.TempDir()
	g, rec, stop := runGateway(t, dir, gatewayYAML(dir, broker.Addr(), addrs, 50*time.Millisecond, ""))
	peers.CheckFor(t, 30*time.Second, "data flowing", func() error {
		if n := g.Status().Uplink.Acked; n < 20 {
			return fmt.Errorf("acked %d", n)
		}
		return nil
	})
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Reset(syscall.SIGXFSZ)
	old := setFileSizeLimit(t, 8<<10)
	restored := false
	restore := func() {
		if !restored {
			setFileSizeLimit(t, old)
			restored = true
		}
	}
	defer restore()
	var readyErr error
	peers.CheckFor(t, 20*time.Second, "commit failures seen", func() error {
		st := g.Status()
		if st.Buffer.LostPoints == 0 || !st.Buffer.Failing {
			return fmt.Errorf("buffer %+v", st.Buffer)
		}
		readyErr = g.Ready()
		if readyErr == nil {
			return errors.New("Ready reports no problem while commits fail")
		}
		return nil
	})
	time.Sleep(2 * time.Second) // an outage of some length
	during := g.Status()
	restore()
	base := rec.len()
	peers.CheckFor(t, 30*time.Second, "recovered without restart", func() error {
		st := g.Status()
		if st.Buffer.Failing {
			return fmt.Errorf("still failing: %s", st.Buffer.LastError)
		}
		if rec.len() < base+4*tagsPerDev {
			return fmt.Errorf("%d new readings committed", rec.len()-base)
		}
		return g.Ready()
	})
	want := rec.snapshot()
	sub.waitAll(t, time.Minute, want)
	stop()
	tl := sub.tally(want)
	extra := sub.notIn(want)
	st := g.Status()
	note := fmt.Sprintf("EFBIG for 2 s: %d write errors, %d failed appends, %d readings lost and counted, %d arrived uncommitted; readyz said %q",
		st.Buffer.WriteErrors, st.AppendErrors, st.Buffer.LostPoints, extra, firstLine(readyErr))
	record(t, row{scenario: "6 commit failure (file size limit)", readings: tl.readings, lost: tl.lost, dup: tl.dupMsgs,
		outOfOrder: tl.outOfOrder, note: note})
	t.Log(note)
	if extra > 0 {
		t.Errorf("%d readings arrived whose commit failed: a silent ack", extra)
	}
	if during.Buffer.WriteErrors == 0 || during.AppendErrors == 0 || during.Buffer.LostPoints == 0 {
		t.Errorf("failures not counted: %+v, %d failed appends", during.Buffer, during.AppendErrors)
	}
	if !strings.Contains(readyErr.Error(), "buffer writes failing") {
		t.Errorf("Ready while failing: %v", readyErr)
	}
	if tl.dupMsgs > window {
		t.Errorf("%d duplicates after one outage, window %d", tl.dupMsgs, window)
	}
}

func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
