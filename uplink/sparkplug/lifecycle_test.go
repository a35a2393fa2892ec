package sparkplug

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/sparkplug/sproto"
)

// downBatch is what the collector sends for a device it cannot reach:
// every tag Bad for reason, without a value.
func downBatch(device string, i int, reason telemetry.Quality) *telemetry.Batch {
	ts := t0.Add(time.Duration(i) * time.Second)
	return &telemetry.Batch{Device: device, Points: []telemetry.Point{
		{Tag: "oil_temp", Time: ts, Quality: telemetry.Bad | reason, Unit: "degC"},
		{Tag: "count", Time: ts, Quality: telemetry.Bad | reason},
	}}
}

// kinds returns "TYPE device" for each message of ms, in order.
func kinds(ms []msg) []string {
	var out []string
	for _, m := range ms {
		s := msgType(m.topic)
		if parts := strings.Split(m.topic, "/"); len(parts) == 5 {
			s += " " + parts[4]
		}
		out = append(out, s)
	}
	return out
}

// TestDeviceDeathAndRebirth: a live record with every point Bad for
// no_connection (or timeout) publishes DDEATH instead of DDATA; records
// while the device stays down publish nothing; the next record with a
// reading publishes DBIRTH, then DDATA; seq runs on across them. Backlog
// records of a down device are historical DDATA with Bad quality and do not
// touch the lifecycle.
func TestDeviceDeathAndRebirth(t *testing.T) {
	rec := &recorder{clientID: "gw1"}
	addr := startBroker(t, rec)
	q, _ := openBuffer(t)
	ctx := context.Background()
	add := func(b *telemetry.Batch) {
		t.Helper()
		if err := q.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Backlog: a reading, then the device went down during the outage.
	add(batch("press-1", 0))
	add(downBatch("press-1", 1, telemetry.ReasonNoConnection))
	f, err := New(Config{Group: "plant-a", Node: "gw1"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	u, stop := run(t, uplinkConfig("tcp://"+addr), q, f)
	wait := func(n int) {
		t.Helper()
		checkFor(t, 10*time.Second, func() error {
			if recs, _ := q.Depth(); recs != 0 {
				return fmt.Errorf("%d records still buffered", recs)
			}
			if got := len(rec.snapshot()); got < n {
				return fmt.Errorf("%d messages, want %d", got, n)
			}
			return nil
		})
	}
	wait(4) // NBIRTH, DBIRTH, 2 historical DDATA
	checkFor(t, 5*time.Second, func() error {
		if !u.Stats().Connected {
			return errors.New("not connected")
		}
		return nil
	})
	// Live: up, down, still down (a heartbeat), down by timeout, up; a
	// second device keeps publishing in between.
	add(batch("press-1", 2))
	add(batch("press-2", 3))
	add(downBatch("press-1", 4, telemetry.ReasonNoConnection))
	add(downBatch("press-1", 5, telemetry.ReasonNoConnection))
	add(batch("press-2", 6))
	add(downBatch("press-1", 7, telemetry.ReasonTimeout))
	add(batch("press-1", 8))
	// A device that answers with exceptions is up: its Bad points are DDATA.
	add(&telemetry.Batch{Device: "press-1", Points: []telemetry.Point{
		{Tag: "oil_temp", Time: t0.Add(9 * time.Second), Quality: telemetry.Bad | telemetry.ReasonException, Unit: "degC"},
	}})
	wait(12)
	stop()

	ms := rec.snapshot()
	want := []string{
		"NBIRTH", "DBIRTH press-1", "DDATA press-1", "DDATA press-1", // backlog
		"DDATA press-1", "DBIRTH press-2", "DDATA press-2",
		"DDEATH press-1", // records 5 and 7 (still down) publish nothing
		"DDATA press-2",
		"DBIRTH press-1", "DDATA press-1", "DDATA press-1",
		"NDEATH",
	}
	if diff := cmp.Diff(want, kinds(ms)); diff != "" {
		t.Fatalf("messages (-want +got):\n%s", diff)
	}
	s := checkSession(t, ms)
	if s.ddeath != 1 {
		t.Errorf("%d DDEATH, want 1", s.ddeath)
	}
	// The historical down record is DDATA with Bad quality and is_historical.
	for _, mt := range ms[3].pl.GetMetrics() {
		if !mt.GetIsHistorical() || !mt.GetIsNull() || qualityProp(mt) != qualityBad {
			t.Errorf("historical down record: metric %v, want historical, null, Quality 0", mt)
		}
	}
	// The rebirth carries the current values.
	for _, mt := range ms[9].pl.GetMetrics() {
		if mt.GetName() == "count" && mt.GetLongValue() != 8 {
			t.Errorf("DBIRTH after the device came back: count = %v, want 8", mt)
		}
	}
	if recs, _ := q.Depth(); recs != 0 {
		t.Errorf("%d records left in the buffer", recs)
	}
	t.Run("peer", func(t *testing.T) { checkWithPeer(t, ms) })
}

// pendingPub records messages and returns tokens the test completes.
type pendingPub struct {
	msgs []uplink.Message
	toks []*pendingToken
}

type pendingToken struct{ done chan struct{} }

func (t *pendingToken) Done() <-chan struct{} { return t.done }
func (t *pendingToken) Error() error          { return nil }

func (p *pendingPub) Publish(m uplink.Message) uplink.Token {
	p.msgs = append(p.msgs, m)
	tok := &pendingToken{done: make(chan struct{})}
	p.toks = append(p.toks, tok)
	return tok
}

// TestDDeathIsTheRecordsMessage: the record that brings a device down is
// acknowledged on the DDEATH's token (QoS data_qos: with 1, after its
// PUBACK), and records while it stays down on a done token.
func TestDDeathIsTheRecordsMessage(t *testing.T) {
	f, err := New(Config{Group: "g", Node: "gw1", DataQoS: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &pendingPub{}
	if _, err := f.Will(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Online(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Publish(p, nil, &telemetry.Record{Seq: 1, Batch: *batch("a", 1)}, false); err != nil {
		t.Fatal(err)
	}
	tok, payload, err := f.Publish(p, nil, &telemetry.Record{Seq: 2, Batch: *downBatch("a", 2, telemetry.ReasonNoConnection)}, false)
	if err != nil {
		t.Fatal(err)
	}
	last := p.msgs[len(p.msgs)-1]
	if msgType(last.Topic) != "DDEATH" || last.QoS != 1 || tok != uplink.Token(p.toks[len(p.toks)-1]) || string(payload) != string(last.Payload) {
		t.Fatalf("down record: last message %s QoS %d, token %v; want the DDEATH's (QoS 1)", last.Topic, last.QoS, tok)
	}
	select {
	case <-tok.Done():
		t.Fatal("the record's token is done before the DDEATH's PUBACK")
	default:
	}
	n := len(p.msgs)
	tok, _, err = f.Publish(p, nil, &telemetry.Record{Seq: 3, Batch: *downBatch("a", 3, telemetry.ReasonNoConnection)}, false)
	if err != nil || len(p.msgs) != n {
		t.Fatalf("still down: %d new messages, err %v; want none", len(p.msgs)-n, err)
	}
	select {
	case <-tok.Done():
	default:
		t.Fatal("a record that needs no message has a token that is not done")
	}
}

// qualityProp returns the metric's Quality property, or -1.
func qualityProp(mt *sproto.Payload_Metric) int {
	ps := mt.GetProperties()
	for i, k := range ps.GetKeys() {
		if k == "Quality" && i < len(ps.GetValues()) {
			return int(ps.GetValues()[i].GetIntValue())
		}
	}
	return -1
}

// decodeAll decodes the payloads of ms.
func decodeAll(t *testing.T, ms []uplink.Message) []msg {
	t.Helper()
	var out []msg
	for _, m := range ms {
		var pl sproto.Payload
		if err := proto.Unmarshal(m.Payload, &pl); err != nil {
			t.Fatalf("%s: %v", m.Topic, err)
		}
		out = append(out, msg{topic: m.Topic, qos: m.QoS, payload: m.Payload, pl: &pl})
	}
	return out
}

// TestCatalogBirths: with a catalog, Online births every configured device
// right after NBIRTH with all its tags and their datatypes, before any
// reading (null, Quality bad); records of those tags need no rebirth; a tag
// not in the catalog is learned (rebirth as without a catalog); a device
// that is down is not born on the next connection.
func TestCatalogBirths(t *testing.T) {
	f, err := New(Config{Group: "g", Node: "gw1", Catalog: []CatalogDevice{
		{Name: "press-1", Tags: []CatalogTag{
			{Name: "oil_temp", Unit: "degC", Kind: telemetry.KindFloat},
			{Name: "count", Kind: telemetry.KindInt},
			{Name: "running", Kind: telemetry.KindBool},
			{Name: "recipe", Kind: telemetry.KindString},
			{Name: "flow", Kind: telemetry.KindFloat, Float32: true},
			{Name: "node", Kind: telemetry.KindNone}, // type known once read: learned
		}},
		{Name: "press-2", Tags: []CatalogTag{{Name: "speed", Kind: telemetry.KindUint, Unit: "rpm"}}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &pendingPub{}
	if _, err := f.Will(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Online(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	ms := decodeAll(t, p.msgs)
	if diff := cmp.Diff([]string{"NBIRTH", "DBIRTH press-1", "DBIRTH press-2"}, kinds(ms)); diff != "" {
		t.Fatalf("Online (-want +got):\n%s", diff)
	}
	type born struct {
		Name    string
		Type    sproto.DataType
		Null    bool
		Quality int
	}
	var got []born
	for _, mt := range ms[1].pl.GetMetrics() {
		got = append(got, born{mt.GetName(), sproto.DataType(mt.GetDatatype()), mt.GetIsNull(), qualityProp(mt)})
	}
	want := []born{
		{"oil_temp", sproto.DataType_Double, true, qualityBad},
		{"count", sproto.DataType_Int64, true, qualityBad},
		{"running", sproto.DataType_Boolean, true, qualityBad},
		{"recipe", sproto.DataType_String, true, qualityBad},
		{"flow", sproto.DataType_Float, true, qualityBad},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("DBIRTH press-1 before any reading (-want +got):\n%s", diff)
	}

	// Catalog tags: DDATA only. A learned tag: DBIRTH again, then DDATA.
	publish := func(b *telemetry.Batch) []string {
		t.Helper()
		n := len(p.msgs)
		if _, _, err := f.Publish(p, nil, &telemetry.Record{Batch: *b}, false); err != nil {
			t.Fatal(err)
		}
		return kinds(decodeAll(t, p.msgs[n:]))
	}
	if got := publish(batch("press-1", 1)); !cmp.Equal(got, []string{"DDATA press-1"}) {
		t.Errorf("record of catalog tags: %v, want DDATA only", got)
	}
	extra := batch("press-1", 2)
	extra.Points = append(extra.Points, telemetry.Point{Tag: "node", Time: t0, Value: telemetry.String("x")})
	if got := publish(extra); !cmp.Equal(got, []string{"DBIRTH press-1", "DDATA press-1"}) {
		t.Errorf("record with a tag learned: %v, want DBIRTH, DDATA", got)
	}
	// press-2 goes down: DDEATH (it was born by Online), and the next
	// connection does not birth it.
	if got := publish(&telemetry.Batch{Device: "press-2", Points: []telemetry.Point{
		{Tag: "speed", Quality: telemetry.Bad | telemetry.ReasonNoConnection},
	}}); !cmp.Equal(got, []string{"DDEATH press-2"}) {
		t.Errorf("catalog device down: %v, want DDEATH", got)
	}
	p.msgs = nil
	if _, err := f.Will(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Online(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if got := kinds(decodeAll(t, p.msgs)); !cmp.Equal(got, []string{"NBIRTH", "DBIRTH press-1"}) {
		t.Errorf("next connection: %v, want NBIRTH and the DBIRTH of press-1 only", got)
	}
}
