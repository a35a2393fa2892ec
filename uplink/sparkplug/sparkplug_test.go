package sparkplug

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fieldgate/fieldgate/uplink/sparkplug/sproto"
)

// session is what checkSession learned from a stream of messages.
type session struct {
	nbirthBdSeqs []uint64
	ddata        int
	ddeath       int
	historical   int // DDATA messages whose metrics are all is_historical
}

// checkSession checks the Sparkplug session rules over the messages an
// edge node published, in wire order: NBIRTH first with seq 0; seq +1 mod
// 256 on every message until the next NBIRTH; a device's DBIRTH after the
// NBIRTH and before its DDATA; every DDATA metric an alias, without name or
// datatype, that the device's birth defines; bdSeq in every NBIRTH; a
// DDEATH only for a born device, with seq and no metrics, and no DDATA of
// that device until its next DBIRTH.
func checkSession(t *testing.T, ms []msg) session {
	t.Helper()
	var s session
	var (
		born    bool
		nextSeq uint64
		births  map[string]map[uint64]*sproto.Payload_Metric // device topic id -> alias -> metric
	)
	for i, m := range ms {
		kind := msgType(m.topic)
		if i == 0 && kind != "NBIRTH" {
			t.Fatalf("first message is %s, want NBIRTH", m.topic)
		}
		if kind == "NDEATH" {
			born = false
			continue
		}
		seq := m.pl.GetSeq()
		if m.pl.Seq == nil || m.pl.Timestamp == nil {
			t.Errorf("message %d %s: no seq or timestamp", i, m.topic)
		}
		switch kind {
		case "NBIRTH":
			if seq != 0 {
				t.Errorf("message %d NBIRTH seq %d, want 0", i, seq)
			}
			if m.qos != 0 {
				t.Errorf("NBIRTH QoS %d, want 0", m.qos)
			}
			bd, reb := false, false
			for _, mt := range m.pl.GetMetrics() {
				switch mt.GetName() {
				case MetricBdSeq:
					bd = true
					s.nbirthBdSeqs = append(s.nbirthBdSeqs, mt.GetLongValue())
				case MetricRebirth:
					reb = mt.GetDatatype() == uint32(sproto.DataType_Boolean) && !mt.GetBooleanValue()
				}
			}
			if !bd || !reb {
				t.Errorf("NBIRTH lacks bdSeq (%v) or Node Control/Rebirth=false (%v)", bd, reb)
			}
			born, nextSeq = true, 1
			births = map[string]map[uint64]*sproto.Payload_Metric{}
			continue
		}
		if !born {
			t.Fatalf("message %d %s before NBIRTH", i, m.topic)
		}
		if seq != nextSeq {
			t.Errorf("message %d %s seq %d, want %d", i, m.topic, seq, nextSeq)
		}
		nextSeq = (seq + 1) % 256
		dev := m.topic[strings.LastIndexByte(m.topic, '/')+1:]
		switch kind {
		case "DBIRTH":
			if m.qos != 0 {
				t.Errorf("DBIRTH QoS %d, want 0", m.qos)
			}
			byAlias := map[uint64]*sproto.Payload_Metric{}
			for _, mt := range m.pl.GetMetrics() {
				if mt.GetName() == "" || mt.Alias == nil || mt.Datatype == nil || mt.Properties == nil {
					t.Errorf("DBIRTH %s metric %v lacks name, alias, datatype or properties", dev, mt)
				}
				byAlias[mt.GetAlias()] = mt
			}
			for d, other := range births { // aliases are unique in the node
				for a := range byAlias {
					if _, dup := other[a]; dup && d != dev {
						t.Errorf("alias %d in the births of %s and %s", a, d, dev)
					}
				}
			}
			births[dev] = byAlias
		case "DDEATH":
			s.ddeath++
			if _, ok := births[dev]; !ok {
				t.Errorf("message %d DDEATH for %s, which is not born", i, dev)
			}
			if len(m.pl.GetMetrics()) != 0 {
				t.Errorf("DDEATH %s has metrics: %v", dev, m.pl.GetMetrics())
			}
			delete(births, dev)
		case "DDATA":
			s.ddata++
			b, ok := births[dev]
			if !ok {
				t.Fatalf("message %d DDATA for %s before its DBIRTH", i, dev)
			}
			hist := true
			for _, mt := range m.pl.GetMetrics() {
				if mt.Name != nil || mt.Datatype != nil {
					t.Errorf("DDATA metric has a name or datatype: %v", mt)
				}
				if _, ok := b[mt.GetAlias()]; !ok {
					t.Errorf("DDATA %s alias %d not in its DBIRTH", dev, mt.GetAlias())
				}
				hist = hist && mt.GetIsHistorical()
			}
			if hist {
				s.historical++
			}
		default:
			t.Errorf("unexpected message %s", m.topic)
		}
	}
	return s
}

func rebirthCommand(t testing.TB) []byte {
	b, err := proto.Marshal(&sproto.Payload{
		Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())),
		Metrics: []*sproto.Payload_Metric{{
			Name: proto.String(MetricRebirth), Datatype: proto.Uint32(uint32(sproto.DataType_Boolean)),
			Value: &sproto.Payload_Metric_BooleanValue{BooleanValue: true},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func bdSeqOf(m msg) (uint64, bool) {
	for _, mt := range m.pl.GetMetrics() {
		if mt.GetName() == MetricBdSeq {
			return mt.GetLongValue(), true
		}
	}
	return 0, false
}

// TestEdgeNodeSessionRules runs an edge node through a backlog, 300 live
// records (seq wraps), a rebirth command, a killed connection, an outage
// and a clean stop, and checks every rule on what the broker received and
// what a host application saw.
func TestEdgeNodeSessionRules(t *testing.T) {
	rec := &recorder{clientID: "gw1"}
	addr := startBroker(t, rec)
	host := subscribe(t, addr, Namespace+"/#")
	px := startProxy(t, addr)
	q, dir := openBuffer(t)
	bdFile := filepath.Join(dir, "buffer.db.bdseq")

	appendN(t, q, 0, 6, "press-1", "press-2") // committed before the connection: backlog
	f, err := New(Config{Group: "plant-a", Node: "gw1", BdSeqFile: bdFile}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	u, stop := run(t, uplinkConfig(px.url()), q, f)
	drained := func(n int) func() error {
		return func() error {
			if d := rec.count("DDATA"); d < n {
				return fmt.Errorf("%d DDATA, want %d", d, n)
			}
			if recs, _ := q.Depth(); recs != 0 {
				return fmt.Errorf("%d records still buffered", recs)
			}
			return nil
		}
	}
	checkFor(t, 10*time.Second, drained(6))
	appendN(t, q, 6, 300, "press-1", "press-2")
	checkFor(t, 10*time.Second, drained(306))

	host.publish(t, Namespace+"/plant-a/NCMD/gw1", false, rebirthCommand(t))
	checkFor(t, 5*time.Second, func() error {
		if n, d := rec.count("NBIRTH"), rec.count("DBIRTH"); n < 2 || d < 4 {
			return fmt.Errorf("%d NBIRTH, %d DBIRTH after rebirth", n, d)
		}
		return nil
	})

	// Kill the connection: the broker must publish NDEATH with the bdSeq of
	// the NBIRTH. Data committed meanwhile comes back as historical.
	px.Down(true)
	var death msg
	checkFor(t, 10*time.Second, func() error {
		for _, m := range host.snapshot() {
			if msgType(m.topic) == "NDEATH" {
				death = m
				return nil
			}
		}
		return errors.New("no NDEATH from the broker")
	})
	appendN(t, q, 306, 4, "press-1", "press-2")
	px.Down(false)
	checkFor(t, 10*time.Second, drained(310))
	checkFor(t, 5*time.Second, func() error {
		if !u.Stats().Connected {
			return errors.New("not connected")
		}
		return nil
	})
	stop() // clean stop: NDEATH published by the node itself

	ms := rec.snapshot()
	s := checkSession(t, ms)
	if len(s.nbirthBdSeqs) != 3 {
		t.Fatalf("NBIRTH bdSeqs %v, want 3 (connect, rebirth, reconnect)", s.nbirthBdSeqs)
	}
	if s.nbirthBdSeqs[0] != 0 || s.nbirthBdSeqs[1] != 0 {
		t.Errorf("first connection's NBIRTH bdSeqs %v, want 0 and 0 (a rebirth keeps bdSeq)", s.nbirthBdSeqs[:2])
	}
	if bd, _ := bdSeqOf(death); bd != s.nbirthBdSeqs[0] || death.qos != 1 {
		t.Errorf("will NDEATH bdSeq %d QoS %d, want %d QoS 1", bd, death.qos, s.nbirthBdSeqs[0])
	}
	last := s.nbirthBdSeqs[2]
	if last == 0 {
		t.Errorf("bdSeq did not change on reconnect")
	}
	deaths := filter(ms, "NDEATH")
	if len(deaths) != 1 {
		t.Fatalf("%d NDEATH from the node, want 1 (clean stop)", len(deaths))
	}
	if bd, _ := bdSeqOf(deaths[0]); bd != last {
		t.Errorf("clean-stop NDEATH bdSeq %d, want %d", bd, last)
	}
	if s.historical < 10 {
		t.Errorf("%d historical DDATA, want at least 10 (6 before connecting, 4 during the outage)", s.historical)
	}
	for _, m := range filter(ms, "DDATA") {
		if m.qos != 0 {
			t.Fatalf("DDATA QoS %d, want 0 by default", m.qos)
		}
	}
	stored, err := os.ReadFile(bdFile)
	if err != nil || strings.TrimSpace(string(stored)) != fmt.Sprint(last) {
		t.Errorf("bdSeq file holds %q (%v), want %d", stored, err, last)
	}

	// A restart continues from the stored bdSeq.
	f2, err := New(Config{Group: "plant-a", Node: "gw1", BdSeqFile: bdFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	will, err := f2.Will()
	if err != nil {
		t.Fatal(err)
	}
	var pl sproto.Payload
	if err := proto.Unmarshal(will.Payload, &pl); err != nil {
		t.Fatal(err)
	}
	if bd, _ := bdSeqOf(msg{pl: &pl}); bd != (last+1)%256 {
		t.Errorf("after restart bdSeq %d, want %d", bd, (last+1)%256)
	}

	t.Run("peer", func(t *testing.T) { checkWithPeer(t, ms) })
}

// TestDataQoS1KeepsDeliveryGuarantee: with DataQoS 1 every DDATA is QoS 1
// and a record leaves the buffer only after its PUBACK; births stay QoS 0.
func TestDataQoS1KeepsDeliveryGuarantee(t *testing.T) {
	rec := &recorder{clientID: "gw1"}
	addr := startBroker(t, rec)
	q, _ := openBuffer(t)
	appendN(t, q, 0, 50, "a", "b", "c")
	f, err := New(Config{Group: "g", Node: "gw1", DataQoS: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, stop := run(t, uplinkConfig("tcp://"+addr), q, f)
	checkFor(t, 10*time.Second, func() error {
		if recs, _ := q.Depth(); recs != 0 || rec.count("DDATA") < 50 {
			return fmt.Errorf("%d buffered, %d DDATA", recs, rec.count("DDATA"))
		}
		return nil
	})
	stop()
	ms := rec.snapshot()
	checkSession(t, ms)
	for _, m := range filter(ms, "DDATA") {
		if m.qos != 1 {
			t.Fatalf("DDATA QoS %d, want 1", m.qos)
		}
	}
}

// TestWaitsForPrimaryHost: no NBIRTH until STATE says online; STATE
// offline ends the connection (NDEATH) and data stays buffered.
func TestWaitsForPrimaryHost(t *testing.T) {
	rec := &recorder{clientID: "gw1"}
	addr := startBroker(t, rec)
	host := subscribe(t, addr, Namespace+"/+/NDEATH/#")
	q, _ := openBuffer(t)
	appendN(t, q, 0, 3, "a")
	f, err := New(Config{Group: "g", Node: "gw1", PrimaryHost: "scada"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := run(t, uplinkConfig("tcp://"+addr), q, f)
	checkFor(t, 5*time.Second, func() error {
		if !u.Stats().Connected {
			return errors.New("not connected")
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // nothing may be published meanwhile
	if n := len(rec.snapshot()); n != 0 {
		t.Fatalf("%d messages before the primary host is online", n)
	}
	state := Namespace + "/STATE/scada"
	host.publish(t, state, true, []byte(`{"online":true,"timestamp":1}`))
	checkFor(t, 5*time.Second, func() error {
		if recs, _ := q.Depth(); recs != 0 {
			return fmt.Errorf("%d buffered", recs)
		}
		return nil
	})
	host.publish(t, state, true, []byte(`{"online":false,"timestamp":2}`))
	checkFor(t, 5*time.Second, func() error {
		if len(host.snapshot()) == 0 {
			return errors.New("no NDEATH after the primary host went offline")
		}
		return nil
	})
	appendN(t, q, 3, 2, "a")
	time.Sleep(200 * time.Millisecond)
	if recs, _ := q.Depth(); recs != 2 {
		t.Errorf("%d buffered while the host is offline, want 2", recs)
	}
	host.publish(t, state, true, []byte(`{"online":true,"timestamp":3}`))
	checkFor(t, 5*time.Second, func() error {
		if recs, _ := q.Depth(); recs != 0 {
			return fmt.Errorf("%d buffered", recs)
		}
		return nil
	})
	checkSession(t, rec.snapshot())
}

// checkWithPeer decodes every message with Eclipse Tahu's sparkplug-payload
// (npm) and checks the session rules on what it decoded.
func checkWithPeer(t *testing.T, ms []msg) {
	peer, _ := filepath.Abs("testdata/peer")
	if _, err := os.Stat(filepath.Join(peer, "node_modules", "sparkplug-payload")); err != nil {
		t.Skip("independent decoder missing: run (cd uplink/sparkplug/testdata/peer && npm install --no-save sparkplug-payload)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not on PATH; the sparkplug-payload peer needs it")
	}
	var in bytes.Buffer
	for _, m := range ms {
		fmt.Fprintf(&in, "%s\t%s\n", m.topic, hex.EncodeToString(m.payload))
	}
	cmd := exec.Command(node, filepath.Join(peer, "decode.js"))
	cmd.Dir = peer
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sparkplug-payload decode: %v\n%s", err, stderr.String())
	}
	type metric struct {
		Name         string
		Alias        *uint64
		Type         string
		Value        any
		IsHistorical bool
		Properties   map[string]struct {
			Type  string
			Value any
		}
	}
	type payload struct {
		Timestamp uint64
		Seq       *uint64
		Metrics   []metric
	}
	var decoded []struct {
		Topic   string
		Payload payload
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var d struct {
			Topic   string
			Payload payload
		}
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("peer output %q: %v", sc.Text(), err)
		}
		decoded = append(decoded, d)
	}
	if len(decoded) != len(ms) {
		t.Fatalf("peer decoded %d messages, want %d", len(decoded), len(ms))
	}
	aliases := map[uint64]string{}
	dead := map[string]bool{} // device topic id -> DDEATH seen, no DBIRTH since
	var next uint64
	var ddata, hist int
	for i, d := range decoded {
		kind := msgType(d.Topic)
		if kind == "NDEATH" {
			continue
		}
		if d.Payload.Seq == nil {
			t.Fatalf("peer: %s without seq", d.Topic)
		}
		seq := *d.Payload.Seq
		if kind == "NBIRTH" {
			if seq != 0 {
				t.Errorf("peer: NBIRTH seq %d", seq)
			}
			next = 1
			continue
		}
		if seq != next {
			t.Errorf("peer: message %d %s seq %d, want %d", i, d.Topic, seq, next)
		}
		next = (seq + 1) % 256
		dev := d.Topic[strings.LastIndexByte(d.Topic, '/')+1:]
		switch kind {
		case "DDEATH":
			dead[dev] = true
			if len(d.Payload.Metrics) != 0 {
				t.Errorf("peer: DDEATH %s with metrics %+v", dev, d.Payload.Metrics)
			}
		case "DBIRTH":
			dead[dev] = false
		case "DDATA":
			if dead[dev] {
				t.Errorf("peer: message %d DDATA for %s after its DDEATH without a DBIRTH", i, dev)
			}
		}
		for _, m := range d.Payload.Metrics {
			switch kind {
			case "DBIRTH":
				if m.Alias == nil || m.Type == "" {
					t.Errorf("peer: DBIRTH metric %+v without alias or type", m)
					continue
				}
				aliases[*m.Alias] = m.Name
				if m.Name == "oil_temp" && (m.Type != "Double" || m.Properties["engUnit"].Value != "degC" || m.Properties["Quality"].Value != float64(192)) {
					t.Errorf("peer: DBIRTH oil_temp = %+v", m)
				}
			case "DDATA":
				if m.Alias == nil || aliases[*m.Alias] == "" {
					t.Errorf("peer: DDATA alias not born: %+v", m)
				}
			}
		}
		if kind == "DDATA" {
			ddata++
			if len(d.Payload.Metrics) > 0 && d.Payload.Metrics[0].IsHistorical {
				hist++
			}
		}
	}
	t.Logf("peer decoded %d messages (%d DDATA, %d historical)", len(decoded), ddata, hist)
	if ddata == 0 || hist == 0 {
		t.Errorf("peer saw %d DDATA, %d historical", ddata, hist)
	}
}
