package main

import (
	"bytes"
	"slices"
	"strconv"
	"sync"
	"time"
)

// arrival is what the subscriber keeps of one message.
type arrival struct {
	at     int64 // arrival, Unix ns
	ts     int64 // the first point's timestamp, Unix ms
	points int32
	hist   bool
}

// subscriber counts and checks what reaches the broker: every record's
// buffer seq (lost and duplicate records), per-device timestamp order, the
// points, the payload bytes, and each message's poll-to-broker latency.
type subscriber struct {
	mu      sync.Mutex
	seen    []uint64 // bitset of seqs
	dups    int64
	msgs    []arrival
	bytes   int64
	bad     int64            // payloads the harness could not parse
	lastTS  map[string]int64 // per device and stream
	key     []byte
	reorder int64 // messages older than the previous one of their device and stream
	maxSeq  uint64
}

func newSubscriber() *subscriber {
	return &subscriber{lastTS: map[string]int64{}}
}

var (
	keyDevice = []byte(`"device":"`)
	keySeq    = []byte(`"seq":`)
	keyHist   = []byte(`"historical":true`)
	keyTS     = []byte(`"ts":`)
	keyTag    = []byte(`{"tag":`)
)

// handle is called for every data message; payload is only valid during
// the call.
func (s *subscriber) handle(payload []byte) {
	now := time.Now().UnixNano()
	dev, seq, ts, n, hist, ok := parsePayload(payload)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok {
		s.bad++
		return
	}
	w := seq / 64
	for uint64(len(s.seen)) <= w {
		s.seen = append(s.seen, 0)
	}
	if s.seen[w]&(1<<(seq%64)) != 0 {
		s.dups++
		return
	}
	s.seen[w] |= 1 << (seq % 64)
	s.maxSeq = max(s.maxSeq, seq)
	// Order is promised per device within each stream, live and
	// historical (docs/durability.md); the streams interleave.
	key := s.key[:0]
	key = append(key, dev...)
	if hist {
		key = append(key, 0)
	}
	s.key = key
	if last, ok := s.lastTS[string(key)]; ok && ts < last {
		s.reorder++
	}
	s.lastTS[string(key)] = ts
	s.bytes += int64(len(payload))
	s.msgs = append(s.msgs, arrival{at: now, ts: ts, points: int32(n), hist: hist})
}

// has reports whether seq arrived.
func (s *subscriber) has(seq uint64) bool {
	w := seq / 64
	return w < uint64(len(s.seen)) && s.seen[w]&(1<<(seq%64)) != 0
}

// snapshot returns the messages so far (the slice is shared: read only).
func (s *subscriber) snapshot() []arrival {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[:len(s.msgs):len(s.msgs)]
}

func parsePayload(p []byte) (dev []byte, seq uint64, ts int64, n int, hist, ok bool) {
	i := bytes.Index(p, keyDevice)
	if i < 0 {
		return
	}
	rest := p[i+len(keyDevice):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return
	}
	dev = rest[:j]
	i = bytes.Index(p, keySeq)
	if i < 0 {
		return
	}
	seq, okSeq := leadingUint(p[i+len(keySeq):])
	i = bytes.Index(p, keyTS)
	if i < 0 || !okSeq {
		return
	}
	t, okTS := leadingUint(p[i+len(keyTS):])
	hist = bytes.Contains(p[:min(len(p), 200)], keyHist)
	n = bytes.Count(p, keyTag)
	return dev, seq, int64(t), n, hist, okTS
}

func leadingUint(b []byte) (uint64, bool) {
	k := 0
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	v, err := strconv.ParseUint(string(b[:k]), 10, 64)
	return v, err == nil
}

// latencies returns the poll-to-broker latencies in ms of the messages
// that pass keep.
func latencies(msgs []arrival, keep func(a arrival) bool) []float64 {
	var out []float64
	for _, a := range msgs {
		if keep(a) {
			out = append(out, float64(a.at)/1e6-float64(a.ts))
		}
	}
	slices.Sort(out)
	return out
}

// quantile returns the q-quantile of sorted xs (0 when empty).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(q * float64(len(xs)-1))
	return xs[i]
}
