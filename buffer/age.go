package buffer

import (
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/fieldgate/fieldgate/telemetry"
)

// errLogEvery throttles the "buffer write failed" error.
const errLogEvery = 10 * time.Second

// indexEvery is the age index granularity for a MaxAge: MaxAge/100 within
// [10 ms, 1 h]; one minute when there is no age bound (the index is kept
// anyway, so an age bound set later has times to work with).
func indexEvery(maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		return time.Minute
	}
	return min(max(maxAge/100, 10*time.Millisecond), time.Hour)
}

// markDue reports whether a commit at now must write an age mark: there is
// none, or the newest is as old as its own or the current granularity. The
// caller holds wmu.
func (q *Queue) markDue(now time.Time) bool {
	if len(q.idx) == 0 {
		return true
	}
	m := q.idx[len(q.idx)-1]
	return now.Sub(m.t) >= min(m.every, q.indexEvery)
}

// drop counts one dropped record whose value is v (n readings).
func (d *delta) drop(v []byte, n int) {
	d.dropRecords++
	d.dropPoints += uint64(n)
	if d.byDevice == nil {
		d.byDevice = make(map[string]Drops)
	}
	dev := deviceOf(v)
	c := d.byDevice[dev]
	c.Records++
	c.Points += uint64(n)
	d.byDevice[dev] = c
}

// deviceOf reads the device name from an encoded batch's header without
// decoding the rest. A header it cannot read gives "".
func deviceOf(v []byte) string {
	dev, err := telemetry.BatchDevice(v)
	if err != nil {
		return ""
	}
	return dev
}

// DroppedByDevice returns, per device name, the records and readings
// dropped since Open by the byte bound, the age bound or as undecodable. A
// record whose header does not decode is counted under "". The map is a
// copy.
func (q *Queue) DroppedByDevice() map[string]Drops {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]Drops, len(q.drops))
	for dev, c := range q.drops {
		out[dev] = *c
	}
	return out
}

// ageDue reports whether a commit now would drop aged records.
func (q *Queue) ageDue() bool {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	q.mu.Lock()
	last := q.st.LastSeq
	q.mu.Unlock()
	return q.hasBelow(q.ageBound(time.Now(), last))
}

// ageBound returns the seq below which every stored record is known to be
// older than MaxAge at now (0: none is), given the last seq issued. A commit
// writes a mark when the newest one is indexEvery old, so the records from
// mark i up to mark i+1 (or up to last, for the newest mark) were committed
// within the mark's granularity after it; the records below mark i at or
// before it.
// The caller holds wmu.
func (q *Queue) ageBound(now time.Time, last uint64) uint64 {
	cutoff := now.Add(-q.maxAge)
	var bound uint64
	for i, m := range q.idx {
		if m.t.After(cutoff) {
			break
		}
		bound = m.seq
		if !m.t.Add(m.every).After(cutoff) {
			if i+1 < len(q.idx) {
				bound = q.idx[i+1].seq
			} else {
				bound = last + 1
			}
		}
	}
	return bound
}

// hasBelow reports whether a record with Seq < seq is stored.
func (q *Queue) hasBelow(seq uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st.Records > 0 && q.st.FirstSeq < seq
}

// dropAged deletes, in tx, the records known to be committed more than
// MaxAge before now: those below the newest age mark that is that old.
// The caller holds wmu.
func (q *Queue) dropAged(b *bolt.Bucket, now time.Time, d *delta) {
	bound := q.ageBound(now, b.Sequence())
	if bound == 0 {
		return
	}
	rs := q.recScratch[:0]
	c := b.Cursor()
	for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) < bound; {
		var r rec
		r, k, v = nextRecord(c, k, v, nil)
		rs = append(rs, r.key())
		n := pointsOf(r.head)
		d.removed++
		d.removedBytes += r.size
		d.removedPoints += int64(n)
		d.aged++
		d.drop(r.head, n)
	}
	q.recScratch = rs
	deleteRecs(b, rs)
}

// putMark stores an age mark.
func putMark(tx *bolt.Tx, m ageMark) error {
	var k [8]byte
	var v [16]byte
	binary.BigEndian.PutUint64(k[:], m.seq)
	binary.BigEndian.PutUint64(v[:], uint64(m.t.UnixNano()))
	binary.BigEndian.PutUint64(v[8:], uint64(m.every))
	tb := tx.Bucket(timesBucket)
	tb.FillPercent = 1.0 // marks are appended in sequence order, as records are
	return tb.Put(k[:], v[:])
}

// pruneIndex deletes the leading age marks that describe no stored record:
// mark i goes when mark i+1 is at or below the oldest stored record (all of
// them go when the queue is empty). bounds must have filled d. The caller
// holds wmu.
func (q *Queue) pruneIndex(tx *bolt.Tx, d *delta) error {
	idx := q.idx
	if d.idxAdd != nil {
		idx = append(idx[:len(idx):len(idx)], *d.idxAdd)
	}
	n := 0
	switch {
	case d.empty:
		n = len(idx)
	default:
		for n+1 < len(idx) && idx[n+1].seq <= d.first {
			n++
		}
	}
	n = min(n, len(q.idx)) // a mark added in this transaction stays
	if n == 0 {
		return nil
	}
	tb := tx.Bucket(timesBucket)
	var k [8]byte
	for _, m := range q.idx[:n] {
		binary.BigEndian.PutUint64(k[:], m.seq)
		if err := tb.Delete(k[:]); err != nil {
			return err
		}
	}
	d.idxPrune = n
	return nil
}

// loadIndex reads the age index in an open transaction.
func loadIndex(tx *bolt.Tx) ([]ageMark, error) {
	tb, err := tx.CreateBucketIfNotExists(timesBucket)
	if err != nil {
		return nil, err
	}
	var idx []ageMark
	err = tb.ForEach(func(k, v []byte) error {
		if len(k) != 8 || len(v) != 16 {
			return nil // ignore what this version did not write
		}
		idx = append(idx, ageMark{
			seq:   binary.BigEndian.Uint64(k),
			t:     time.Unix(0, int64(binary.BigEndian.Uint64(v))),
			every: time.Duration(binary.BigEndian.Uint64(v[8:])),
		})
		return nil
	})
	return idx, err
}

// writeFailed records a failed write transaction in Stats and logs it,
// at most once per errLogEvery. It takes mu, and may be called with wmu
// held or not.
func (q *Queue) writeFailed(err error) {
	q.mu.Lock()
	q.st.WriteErrors++
	q.st.Failing = true
	q.st.LastError = err.Error()
	total := q.st.WriteErrors
	log := time.Since(q.lastErrLog) >= errLogEvery
	if log {
		q.lastErrLog = time.Now()
	}
	q.mu.Unlock()
	if log {
		q.log.Error("buffer write failed (disk full or I/O error?); nothing stored is lost, new readings are lost until writes succeed again",
			"path", q.path, "err", err, "write_errors", total)
	}
}

// lost counts the batches of a failed commit as lost.
func (q *Queue) lost(p *pending, err error) {
	var pts uint64
	for _, n := range p.points {
		pts += uint64(n)
	}
	q.mu.Lock()
	q.st.LostRecords += uint64(len(p.vals))
	q.st.LostPoints += pts
	q.mu.Unlock()
	_ = err // logged by writeFailed
}
