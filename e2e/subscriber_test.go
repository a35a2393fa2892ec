package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// message is one JSON payload as docs/payload-json.md documents it.
type message struct {
	Gateway    string  `json:"gateway"`
	Device     string  `json:"device"`
	Seq        uint64  `json:"seq"`
	Historical bool    `json:"historical"`
	Points     []point `json:"points"`
}

type point struct {
	Tag     string          `json:"tag"`
	TS      int64           `json:"ts"`
	Value   json.RawMessage `json:"value"`
	Unit    string          `json:"unit"`
	Quality string          `json:"quality"`
	Reason  string          `json:"reason"`
}

// reading identifies one reading: a tag's value at one instant.
type reading struct {
	device, tag string
	ts          int64 // Unix ms
}

// subscriber is a checking MQTT client connected straight to the broker (not
// through the proxy the gateway uses), so it cannot miss a message itself.
type subscriber struct {
	mu       sync.Mutex
	got      map[reading]int // reading -> times received
	seqs     map[string]int  // device/seq -> times received
	msgs     int
	badJSON  int
	points   map[reading]point
	client   mqtt.Client
	statuses []string
}

func subscribe(t *testing.T, brokerAddr, topic string) *subscriber {
	t.Helper()
	s := &subscriber{got: map[reading]int{}, seqs: map[string]int{}, points: map[reading]point{}}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("e2e-checker-" + strconv.Itoa(os.Getpid())).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(true).SetConnectTimeout(5 * time.Second)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("checking subscriber: connect to %s: %v", brokerAddr, tok.Error())
	}
	s.client = c
	handler := func(_ mqtt.Client, m mqtt.Message) { s.add(m.Topic(), m.Payload()) }
	if tok := c.Subscribe(topic, 1, handler); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("checking subscriber: subscribe %s: %v", topic, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return s
}

func (s *subscriber) add(topic string, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.HasSuffix([]byte(topic), []byte("/status")) {
		s.statuses = append(s.statuses, string(payload))
		return
	}
	var m message
	if err := json.Unmarshal(payload, &m); err != nil {
		s.badJSON++
		return
	}
	s.msgs++
	s.seqs[m.Device+"/"+strconv.FormatUint(m.Seq, 10)]++
	for _, p := range m.Points {
		r := reading{m.Device, p.Tag, p.TS}
		s.got[r]++
		s.points[r] = p
	}
}

// missing returns how many of want the subscriber has not received, and one example.
func (s *subscriber) missing(want map[reading]struct{}) (int, reading) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	var ex reading
	for r := range want {
		if s.got[r] == 0 {
			if n == 0 {
				ex = r
			}
			n++
		}
	}
	return n, ex
}

// duplicateMessages returns how many messages arrived more than once (by device and seq).
func (s *subscriber) duplicateMessages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := 0
	for _, n := range s.seqs {
		d += n - 1
	}
	return d
}
