package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/fieldgate/fieldgate/telemetry"
)

// DefaultMaxBytes is the bound used when Options.MaxBytes is 0.
const DefaultMaxBytes int64 = 1 << 30

// dropLogEvery throttles the "dropped oldest records" warning.
const dropLogEvery = 10 * time.Second

// maxPooledBuf is the largest encode buffer returned to the pool.
const maxPooledBuf = 1 << 20

// The group commit's gathering rule (sync: always), after PostgreSQL's
// commit_delay and commit_siblings: when work arrived while the previous
// commit ran (so more is likely on its way), the writer waits before the
// next commit for gatherTimes as long as the previous one took, at most
// gatherMax, or until gatherBatches batches are pending. Each Append then
// waits at most that much longer, and one transaction and fsync pair serve
// more batches. At 240 k readings/s (2 000 batches/s, commits of about
// 1 ms) waiting 1, 2 and 4 times the commit time made 4.0, 6.1 and 10.6
// batches per commit (docs/benchmarks.md, "Group commit cost").
// Acknowledgements end the wait sooner, at gatherAcks records: unlike
// appends they come from a closed loop (the uplink bounds the records it
// has sent and not seen acknowledged to the buffer), so waiting for more of
// them during a backlog replay would only slow it down.
const (
	gatherTimes   = 4
	gatherMax     = 8 * time.Millisecond
	gatherBatches = 64
	gatherAcks    = 32
)

// lingerAcks ends an acknowledgement's linger (Options.AckLinger): with
// this many pending they are committed without waiting for appends, so a
// backlog replay, which acknowledges thousands of records a second, is not
// held to one commit per linger.
const lingerAcks = 256

var (
	recordsBucket = []byte("records")
	// timesBucket maps a sequence number to the time (Unix ns, big-endian)
	// of the commit that stored it, for a sample of commits: the age index.
	timesBucket = []byte("times")
)

// Options configures a Queue. The zero value is valid.
type Options struct {
	// MaxBytes bounds the size of the bbolt file (and so also the stored
	// batch bytes, Stats.Bytes); 0 means DefaultMaxBytes. Bounds below 64
	// pages (256 KiB) bound the stored bytes exactly but the file at 64
	// pages. When an append would not fit, the oldest records are dropped
	// and counted. How many readings fit depends on bbolt's page and tree
	// overhead: see docs/durability.md.
	MaxBytes int64
	// SyncInterval 0 ("sync: always") makes every Append durable when it
	// returns. A positive value ("sync: interval") lets Append return once
	// its batches are queued and commits at most once per interval; see the
	// package documentation.
	SyncInterval time.Duration
	// MaxAge bounds how long a record is kept: records committed more than
	// MaxAge ago are dropped and counted like byte-bound drops (and in
	// AgedRecords). 0 means no age bound. Ages come from an index of commit
	// times sampled every g = MaxAge/100 (at least 10 ms, at most 1 h), and
	// the check runs at every commit and every g, so a record is dropped
	// between MaxAge and MaxAge + 2g after its commit, never earlier. The
	// clock is the wall clock: a clock step shifts ages by the step.
	MaxAge time.Duration
	// AckLinger lets acknowledgements (AckSeqs, sync: always) that have no
	// appends to share a commit with wait up to this long for some, or
	// until lingerAcks records are pending, instead of taking a
	// transaction and an fsync pair of their own. AckSeqs returns that
	// much later; nothing is less durable (an acknowledgement lost in a
	// crash only means its record is sent again). A gateway that polls
	// every 50 ms and acknowledges each tick's records just after it
	// commits them halves its commits with a linger of one poll interval.
	// 0 commits acknowledgements as soon as the writer is free.
	AckLinger time.Duration
}

// Stats is a snapshot of a Queue's counters. Counters (Appended, Acked,
// Dropped*, Commits) count since Open; Records, Bytes, Points, FirstSeq and
// LastSeq describe the file.
type Stats struct {
	Records int64 // records stored
	Bytes   int64 // stored value bytes, bounded by Options.MaxBytes
	Points  int64 // readings in the stored records

	Appended       uint64 // records committed by Append
	Acked          uint64 // records deleted by Ack or AckSeqs
	DroppedRecords uint64 // records lost to the byte or age bound or to corruption
	DroppedPoints  uint64 // readings in the dropped records
	AgedRecords    uint64 // the part of DroppedRecords dropped by Options.MaxAge
	Commits        uint64 // transactions that stored appended batches

	// Write failures (disk full, I/O error). A batch whose commit failed
	// was never stored: Append returned the error (with SyncInterval 0),
	// and it is counted in LostRecords and LostPoints. Nothing stored is
	// affected; the next commit tries again.
	WriteErrors uint64 // write transactions (commits, acks, drops) that failed
	LostRecords uint64 // appended batches lost because their commit failed
	LostPoints  uint64 // readings in those batches
	Failing     bool   // the last write transaction failed; cleared by the next that succeeds
	LastError   string // the last write error, kept after recovery; "" if none

	FirstSeq uint64 // sequence number of the oldest stored record; 0 when empty
	LastSeq  uint64 // last sequence number ever issued
}

// Queue is a durable FIFO of telemetry batches in one bbolt file. It is safe
// for concurrent use: Append is called from one goroutine per device, and
// Peek, Wait and Ack from the uplink.
type Queue struct {
	db       *bolt.DB
	log      *slog.Logger
	path     string
	maxBytes int64
	interval time.Duration

	pool sync.Pool // *[]byte encode buffers

	mu      sync.Mutex
	pend    pending      // batches waiting for the writer
	flush   *flushResult // completion of the batches in pend
	st      Stats        // counters; see Stats
	lastKey uint64       // newest stored key; valid when st.Records > 0
	// ackHurry ends AckLinger's waits until appends are committed
	// (CommitAcks).
	ackHurry bool
	notify   chan struct{} // closed and replaced after each commit that adds records
	closed   bool

	kick    chan struct{} // wakes the writer; capacity 1
	closing chan struct{} // closed by Close
	done    chan struct{} // closed when the writer has exited

	closeOnce sync.Once
	closeErr  error

	drops map[string]*Drops // per device, guarded by mu

	maxAge     time.Duration
	indexEvery time.Duration
	ackLinger  time.Duration
	// commitHook, when set (by tests), runs inside every commit transaction
	// before anything is written; an error aborts the transaction as a
	// failed write would. It is the seam for injecting disk-full errors.
	commitHook func() error
	// allocHook, when set (by tests, under wmu), is called after every
	// committed write transaction with the pages write's bound allowed it
	// and the pages and nodes bbolt allocated: the seam for checking that
	// the bound holds and every node took one page (filebound.go).
	allocHook  func(bound, pages, nodes int64)
	lastErrLog time.Time // guarded by mu

	// wmu serialises write transactions and the counter updates they imply,
	// so the byte bound is computed against exact totals. Fields below are
	// scratch space owned by the holder of wmu.
	wmu         sync.Mutex
	keyArena    []byte
	partArena   []byte // keys of the parts of records stored in parts
	recScratch  []recKey
	seqScratch  []uint64 // AckSeqs' sequence numbers, sorted
	dropPending struct{ records, points uint64 }
	lastDropLog time.Time
	idx         []ageMark // the age index, in seq order; mirrors timesBucket
	deficit     int64     // pages the last write that did not fit lacked

	// The file bound (filebound.go): the file never has more than
	// maxPages pages of pageSize bytes; bbolt grows it by at most
	// allocStep bytes at a time. Values longer than partMax bytes are
	// stored in parts (record.go).
	pageSize, maxPages, allocStep int64
	partMax                       int
	// dbmu is held shared by every transaction and exclusively while no
	// reader may be open (refreshFree). Lock order: wmu before dbmu.
	dbmu sync.RWMutex
}

// ageMark says: records with Seq >= seq were committed at or after t, and
// records with Seq < seq at or before t. Every commit at or after t+every
// writes a new mark, so the records up to the next mark were committed
// before t+every.
type ageMark struct {
	seq   uint64
	t     time.Time
	every time.Duration
}

// Drops counts one device's records dropped by the byte or age bound or as
// undecodable.
type Drops struct {
	Records uint64
	Points  uint64
}

type pending struct {
	vals   [][]byte  // encoded batches, in append order
	points []int     // readings per value
	bufs   []*[]byte // pooled buffers the values live in
	bytes  int64
	acks   []uint64 // sequence numbers to delete as acknowledged (AckSeqs)
	// ackSince is when the first of acks was pended (for AckLinger).
	ackSince time.Time
}

func (p *pending) reset() {
	clear(p.vals)
	clear(p.bufs)
	p.vals, p.points, p.bufs, p.bytes, p.acks = p.vals[:0], p.points[:0], p.bufs[:0], 0, p.acks[:0]
	p.ackSince = time.Time{}
}

// empty reports whether there is nothing to commit.
func (p *pending) empty() bool { return len(p.vals) == 0 && len(p.acks) == 0 }

// flushResult is shared by all Append calls whose batches went into one
// commit. err is written before done is closed.
type flushResult struct {
	done chan struct{}
	err  error
}

func newFlush() *flushResult { return &flushResult{done: make(chan struct{})} }

// delta is the change one write transaction made, applied to the counters
// only after the transaction committed.
type delta struct {
	added, removed           int64 // records
	addBytes, removedBytes   int64
	addPoints, removedPoints int64
	dropRecords, dropPoints  uint64
	aged                     uint64
	byDevice                 map[string]Drops
	acked                    uint64
	idxPrune                 int      // leading age marks deleted
	idxAdd                   *ageMark // age mark added
	first, last, seq         uint64
	empty                    bool
	commit                   bool
}

// Append encodes the batches and stores them as one record each. With
// SyncInterval 0 it returns after the records have been committed and
// fsynced; concurrent calls share one transaction. If ctx is done first,
// Append returns ctx.Err(), and the batches may still be committed. The
// batches are not retained after Append returns.
func (q *Queue) Append(ctx context.Context, batches ...*telemetry.Batch) error {
	if len(batches) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	bp := q.getBuf()
	buf := (*bp)[:0]
	var endsArr [16]int
	ends := endsArr[:0]
	for _, b := range batches {
		start := len(buf)
		buf = telemetry.AppendBatch(buf, b)
		if n := int64(len(buf) - start); n > q.maxBytes {
			*bp = buf
			q.putBuf(bp)
			return fmt.Errorf("buffer: device %q batch of %d points is %d bytes, bound is %d: %w",
				b.Device, len(b.Points), n, q.maxBytes, ErrTooLarge)
		}
		ends = append(ends, len(buf))
	}
	*bp = buf

	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		q.putBuf(bp)
		return ErrClosed
	}
	start := 0
	for i, end := range ends {
		q.pend.vals = append(q.pend.vals, buf[start:end:end])
		q.pend.points = append(q.pend.points, len(batches[i].Points))
		q.pend.bytes += int64(end - start)
		start = end
	}
	q.pend.bufs = append(q.pend.bufs, bp)
	f := q.flush
	q.mu.Unlock()

	select {
	case q.kick <- struct{}{}:
	default:
	}
	if q.interval > 0 {
		return nil
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *Queue) getBuf() *[]byte {
	if bp, ok := q.pool.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, 0, 8<<10)
	return &b
}

func (q *Queue) putBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledBuf {
		*bp = (*bp)[:0]
		q.pool.Put(bp)
	}
}

// run is the writer goroutine: it commits whatever is pending, one
// transaction at a time, until Close.
func (q *Queue) run() {
	defer close(q.done)
	var spare pending
	var timer, gatherTimer, lingerTimer *time.Timer
	// took is how long the last commit took; busy says that work arrived
	// while it ran (the gathering rule above).
	var took time.Duration
	busy := false
	var ageTick <-chan time.Time
	if q.maxAge > 0 {
		t := time.NewTicker(q.indexEvery)
		defer t.Stop()
		ageTick = t.C
	}
	for {
		closing := false
		select {
		case <-q.kick:
		case <-q.closing:
			closing = true
		case <-ageTick:
			if q.ageDue() {
				_ = q.commit(&pending{}) // drops aged records; errors are counted
			}
			continue
		}
		if busy && q.interval == 0 && !closing {
			if gatherTimer == nil {
				gatherTimer = time.NewTimer(time.Hour)
			}
			q.gather(gatherTimer, min(gatherTimes*took, gatherMax))
		}
		if q.ackLinger > 0 && q.interval == 0 && !closing {
			if lingerTimer == nil {
				lingerTimer = time.NewTimer(time.Hour)
			}
			q.linger(lingerTimer)
		}
		q.mu.Lock()
		p, f := q.pend, q.flush
		if !p.empty() {
			q.pend, q.flush = spare, newFlush()
		}
		if len(p.vals) > 0 {
			q.ackHurry = false // CommitAcks holds until appends are committed
		}
		q.mu.Unlock()
		if !p.empty() {
			start := time.Now()
			f.err = q.commit(&p)
			took = time.Since(start)
			q.mu.Lock()
			busy = !q.pend.empty()
			q.mu.Unlock()
			if f.err != nil && len(p.vals) > 0 {
				q.lost(&p, f.err)
			}
			close(f.done)
			for _, bp := range p.bufs {
				q.putBuf(bp)
			}
			p.reset()
			spare = p
		}
		if closing {
			q.mu.Lock()
			left := !q.pend.empty()
			q.mu.Unlock()
			if !left {
				return
			}
			continue // closed is set, so this is the last of it
		}
		if q.interval > 0 {
			if timer == nil {
				timer = time.NewTimer(q.interval)
			} else {
				timer.Reset(q.interval)
			}
			select {
			case <-timer.C:
			case <-q.closing:
			}
		}
	}
}

// gather waits up to d for more work to join the next commit: until the
// timer fires, gatherBatches batches or gatherAcks acknowledgements are
// pending, or the Queue closes. The
// caller is the writer goroutine; t is its own timer.
func (q *Queue) gather(t *time.Timer, d time.Duration) {
	if d <= 0 {
		return
	}
	t.Reset(d)
	defer t.Stop()
	for {
		q.mu.Lock()
		n, acks := len(q.pend.vals), len(q.pend.acks)
		q.mu.Unlock()
		if n >= gatherBatches || acks >= gatherAcks {
			return
		}
		select {
		case <-q.kick:
		case <-t.C:
			return
		case <-q.closing:
			return
		}
	}
}

// linger holds acknowledgements that have no appends to share a commit
// with (Options.AckLinger): it returns once appends are pending, lingerAcks
// acknowledgements are, AckLinger has passed since the first of them was
// pended, or the Queue closes. The caller is the writer goroutine; t is
// its own timer.
func (q *Queue) linger(t *time.Timer) {
	for {
		q.mu.Lock()
		n, acks, since, hurry := len(q.pend.vals), len(q.pend.acks), q.pend.ackSince, q.ackHurry
		q.mu.Unlock()
		if n > 0 || acks == 0 || acks >= lingerAcks || hurry {
			return
		}
		wait := time.Until(since.Add(q.ackLinger))
		if wait <= 0 {
			return
		}
		t.Reset(wait)
		select {
		case <-q.kick:
		case <-t.C:
		case <-q.closing:
			t.Stop()
			return
		}
		t.Stop()
	}
}

// commit stores p in one transaction, dropping the oldest records first if
// the byte bound or the file bound requires it.
func (q *Queue) commit(p *pending) error {
	q.wmu.Lock()
	defer q.wmu.Unlock()

	if need := 8 * len(p.vals); cap(q.keyArena) < need {
		q.keyArena = make([]byte, need)
	}
	keys := q.keyArena[:8*len(p.vals)]
	var d delta
	d.commit = len(p.vals) > 0
	now := time.Now().Round(0)
	// The oldest new batches that cannot fit in the file even with the
	// queue empty (see write), and the first that fn stores (after those
	// and the ones the byte bound drops).
	unfit, putFrom := 0, 0
	parts := 0
	for _, v := range p.vals {
		parts += partKeys(len(v), q.partMax)
	}
	if cap(q.partArena) < parts {
		q.partArena = make([]byte, 0, parts)
	}
	extra := func() int64 {
		if putFrom == len(p.vals) {
			return 0 // nothing to store: the commit only deletes
		}
		return q.pagesFor(p.vals[putFrom:])
	}
	// A commit that only acknowledges may use the squeeze's reserve: it
	// deletes, which is what makes room, and the pages its leaves leave
	// behind are free again at the next refresh (write refreshes before it
	// squeezes). Keeping the reserve for it made the first acknowledgements
	// in a full file drop the oldest records, a few hundred at a time,
	// just before the uplink would have sent them.
	reserve := int64(reservePages)
	if len(p.vals) == 0 {
		reserve = 0
	}
	// shrink gives up the oldest new batches stored that hold about the
	// pages missing (at least one batch), not one batch per try: a commit
	// of more than the file holds (a long interval, a slow disk) would
	// otherwise be retried once per batch too many.
	shrink := func(deficit int64) bool {
		unfit = max(unfit, putFrom)
		if unfit == len(p.vals) {
			return false
		}
		target := deficit * q.pageSize * 3 / 4 // element bytes
		for freed := int64(0); unfit < len(p.vals) && (freed == 0 || freed < target); unfit++ {
			freed += int64(24 + len(p.vals[unfit]))
		}
		return true
	}
	err := q.write(extra, reserve, shrink, func(tx *bolt.Tx) error {
		d = delta{commit: d.commit}
		if q.commitHook != nil {
			if err := q.commitHook(); err != nil {
				return err
			}
		}
		q.mu.Lock()
		stored := q.st.Bytes
		q.mu.Unlock()
		b := tx.Bucket(recordsBucket)
		// Keys only ever grow, so pages split when full rather than half
		// full: the file holds about twice the data per page.
		b.FillPercent = 1.0
		if q.maxAge > 0 {
			q.dropAged(b, now, &d)
		}
		if len(p.acks) > 0 {
			q.deleteSeqsAcked(b, p.acks, &d)
		}
		stored -= d.removedBytes
		var unfitBytes int64
		for i := range unfit {
			unfitBytes += int64(len(p.vals[i]))
			d.drop(p.vals[i], p.points[i])
		}
		skip := unfit
		if over := stored + p.bytes - unfitBytes - q.maxBytes; over > 0 {
			over = q.dropOldest(b, over, &d)
			// Everything old is gone and the new batches still do not fit:
			// the oldest new ones go too.
			for ; over > 0 && skip < len(p.vals); skip++ {
				over -= int64(len(p.vals[skip]))
				d.drop(p.vals[skip], p.points[skip])
			}
		}
		putFrom = skip
		firstNew := b.Sequence() + 1
		arena := q.partArena[:0]
		for i := skip; i < len(p.vals); i++ {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			k := keys[8*i : 8*i+8 : 8*i+8]
			binary.BigEndian.PutUint64(k, seq)
			if err := putRecord(b, k, p.vals[i], q.partMax, &arena); err != nil {
				return err
			}
			d.added++
			d.addBytes += int64(len(p.vals[i]))
			d.addPoints += int64(p.points[i])
		}
		if d.added > 0 && q.markDue(now) {
			m := ageMark{firstNew, now, q.indexEvery}
			if err := putMark(tx, m); err != nil {
				return err
			}
			d.idxAdd = &m
		}
		bounds(b, &d)
		return q.pruneIndex(tx, &d)
	})
	if err != nil {
		q.writeFailed(err)
		return fmt.Errorf("buffer %s: commit %d batches: %w", q.path, len(p.vals), err)
	}
	q.apply(&d)
	q.logDrops(d.dropRecords, d.dropPoints)
	return nil
}

// dropOldest deletes the oldest records until over bytes are freed or the
// bucket is empty, and returns what is still over.
func (q *Queue) dropOldest(b *bolt.Bucket, over int64, d *delta) int64 {
	rs := q.recScratch[:0]
	c := b.Cursor()
	for k, v := c.First(); k != nil && over > 0; {
		var r rec
		r, k, v = nextRecord(c, k, v, nil)
		rs = append(rs, r.key())
		n := pointsOf(r.head)
		over -= r.size
		d.removed++
		d.removedBytes += r.size
		d.removedPoints += int64(n)
		d.drop(r.head, n)
	}
	q.recScratch = rs
	deleteRecs(b, rs)
	return over
}

// bounds records the first and last key and the sequence in d.
func bounds(b *bolt.Bucket, d *delta) {
	c := b.Cursor()
	if k, _ := c.First(); k != nil {
		d.first = binary.BigEndian.Uint64(k)
		k, _ = c.Last()
		d.last = binary.BigEndian.Uint64(k) // a part's key starts with its record's
	} else {
		d.empty = true
	}
	d.seq = b.Sequence()
}

// pointsOf is the number of readings in an encoded batch, 0 if the header
// does not decode. Every counter update uses it, so Stats.Points stays
// consistent with the file.
func pointsOf(v []byte) int {
	n, err := telemetry.BatchPointCount(v)
	if err != nil {
		return 0
	}
	return n
}

// apply adds a committed transaction's changes to the counters and the age
// index, and wakes waiters. The caller holds wmu.
func (q *Queue) apply(d *delta) {
	if d.idxPrune > 0 {
		q.idx = append(q.idx[:0], q.idx[d.idxPrune:]...)
	}
	if d.idxAdd != nil {
		q.idx = append(q.idx, *d.idxAdd)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	s := &q.st
	s.Records += d.added - d.removed
	s.Bytes += d.addBytes - d.removedBytes
	s.Points += d.addPoints - d.removedPoints
	s.Appended += uint64(d.added)
	s.Acked += d.acked
	s.DroppedRecords += d.dropRecords
	s.DroppedPoints += d.dropPoints
	s.AgedRecords += d.aged
	s.Failing = false
	for dev, n := range d.byDevice {
		c := q.drops[dev]
		if c == nil {
			c = new(Drops)
			q.drops[dev] = c
		}
		c.Records += n.Records
		c.Points += n.Points
	}
	if d.commit {
		s.Commits++
	}
	s.LastSeq = d.seq
	if d.empty {
		s.FirstSeq, q.lastKey = 0, 0
	} else {
		s.FirstSeq, q.lastKey = d.first, d.last
	}
	if d.added > 0 {
		close(q.notify)
		q.notify = make(chan struct{})
	}
}

// logDrops logs dropped records at most once per dropLogEvery, with the
// totals since the last message. The caller holds wmu.
func (q *Queue) logDrops(records, points uint64) {
	if records == 0 {
		return
	}
	q.dropPending.records += records
	q.dropPending.points += points
	now := time.Now()
	if !q.lastDropLog.IsZero() && now.Sub(q.lastDropLog) < dropLogEvery {
		return
	}
	q.lastDropLog = now
	q.mu.Lock()
	total := q.st.DroppedRecords
	q.mu.Unlock()
	q.log.Warn("buffer full, dropped oldest records",
		"records", q.dropPending.records, "points", q.dropPending.points,
		"dropped_total", total, "max_bytes", q.maxBytes)
	q.dropPending.records, q.dropPending.points = 0, 0
}

// Peek returns up to max of the oldest records with Seq > after, decoded
// into new records. A record that does not decode is logged, counted as
// dropped, skipped and deleted.
func (q *Queue) Peek(after uint64, max int) ([]telemetry.Record, error) {
	return q.PeekInto(nil, after, max)
}

// PeekInto is Peek decoding into the records of dst: it returns dst[:0]
// extended with the records, and each element up to cap(dst) keeps its
// Points array and the strings that still match, so a caller that passes
// the same slice every time allocates nothing once it has grown (codec
// version 2). The records are valid until the caller passes dst again.
func (q *Queue) PeekInto(dst []telemetry.Record, after uint64, max int) ([]telemetry.Record, error) {
	recs := dst[:0]
	if max <= 0 || after == ^uint64(0) {
		return recs, nil
	}
	q.mu.Lock()
	closed, n := q.closed, q.st.Records
	q.mu.Unlock()
	if closed {
		return recs, ErrClosed
	}
	if cap(recs) == 0 {
		recs = make([]telemetry.Record, 0, min(int64(max), n))
	}
	var bad []uint64
	var join []byte // a record stored in parts, joined
	err := q.view(func(tx *bolt.Tx) error {
		var from [8]byte
		binary.BigEndian.PutUint64(from[:], after+1)
		c := tx.Bucket(recordsBucket).Cursor()
		for k, v := c.Seek(from[:]); k != nil && len(recs) < max; {
			var sr rec
			sr, k, v = nextRecord(c, k, v, &join)
			if len(recs) < cap(recs) {
				recs = recs[:len(recs)+1] // reuse the element's Points
			} else {
				recs = append(recs, telemetry.Record{})
			}
			r := &recs[len(recs)-1]
			r.Seq = sr.seq
			if err := telemetry.DecodeBatch(sr.value, &r.Batch); err != nil {
				q.log.Error("buffer record does not decode, dropping it",
					"seq", r.Seq, "bytes", sr.size, "err", err)
				bad = append(bad, r.Seq)
				recs = recs[:len(recs)-1]
				continue
			}
		}
		return nil
	})
	if err != nil {
		return recs[:0], fmt.Errorf("buffer %s: peek after %d: %w", q.path, after, err)
	}
	if len(bad) > 0 {
		if err := q.deleteCorrupt(bad); err != nil {
			return recs, err
		}
	}
	return recs, nil
}

// deleteCorrupt deletes undecodable records in their own write transaction
// and counts them as dropped.
func (q *Queue) deleteCorrupt(seqs []uint64) error {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	var d delta
	err := q.write(noExtra, 0, nil, func(tx *bolt.Tx) error {
		d = delta{}
		b := tx.Bucket(recordsBucket)
		present := make([]recKey, 0, len(seqs))
		for _, s := range seqs {
			r, ok := getRecord(b, s)
			if !ok {
				continue // acked or dropped meanwhile
			}
			n := pointsOf(r.head)
			d.removed++
			d.removedBytes += r.size
			d.removedPoints += int64(n)
			d.drop(r.head, n)
			present = append(present, r.key())
		}
		deleteRecs(b, present)
		bounds(b, &d)
		return nil
	})
	if err != nil {
		q.writeFailed(err)
		return fmt.Errorf("buffer %s: delete %d undecodable records: %w", q.path, len(seqs), err)
	}
	q.apply(&d)
	return nil
}

// Wait blocks until a record with Seq > after is stored, and returns nil at
// once if one is. It returns ctx.Err() when ctx is done first, and
// ErrClosed when the Queue is closed. Any number of goroutines may wait.
func (q *Queue) Wait(ctx context.Context, after uint64) error {
	for {
		q.mu.Lock()
		ready := q.st.Records > 0 && q.lastKey > after
		ch, closed := q.notify, q.closed
		q.mu.Unlock()
		if ready {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-q.closing:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Ack deletes every record with Seq <= upTo in one transaction. Acking
// sequence numbers that are already gone is a no-op.
func (q *Queue) Ack(upTo uint64) error {
	q.mu.Lock()
	nothing := q.noneStoredUpTo(upTo)
	q.mu.Unlock()
	return q.deleteAcked(nothing, func() string { return fmt.Sprintf("ack up to %d", upTo) }, func(b *bolt.Bucket, keep func(*rec)) {
		c := b.Cursor()
		for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; {
			var r rec
			r, k, v = nextRecord(c, k, v, nil)
			keep(&r)
		}
	})
}

// AckSeqs deletes exactly the records with the given sequence numbers and
// counts them as acknowledged. With SyncInterval 0 the deletes join the
// writer's next group commit (one transaction and one fsync with the
// appends pending then, or later ones: Options.AckLinger) and AckSeqs
// returns once that commit is durable; with SyncInterval > 0 they are one
// transaction of their own. It is the out-of-order
// form of Ack, for an uplink that publishes live records ahead of a
// backlog: a record is deleted only when its own sequence number is passed,
// never because a later one was. Numbers that are not stored (acked or
// dropped already, or never issued) are ignored. seqs need not be sorted.
func (q *Queue) AckSeqs(seqs []uint64) error {
	q.mu.Lock()
	nothing := len(seqs) == 0 || q.noneStoredUpTo(slices.Max(seqs))
	if q.interval == 0 && !nothing && !q.closed {
		if len(q.pend.acks) == 0 {
			q.pend.ackSince = time.Now()
		}
		q.pend.acks = append(q.pend.acks, seqs...)
		f := q.flush
		q.mu.Unlock()
		select {
		case q.kick <- struct{}{}:
		default:
		}
		<-f.done // the writer always finishes a flush, also when closing
		if f.err != nil {
			return fmt.Errorf("buffer %s: ack %d records: %w", q.path, len(seqs), f.err)
		}
		return nil
	}
	q.mu.Unlock()
	return q.deleteAcked(nothing, func() string { return fmt.Sprintf("ack %d records", len(seqs)) }, func(b *bolt.Bucket, keep func(*rec)) {
		// A record named twice is deleted and counted once, as in
		// deleteSeqsAcked; the caller's slice is left as it was.
		q.seqScratch = append(q.seqScratch[:0], seqs...)
		slices.Sort(q.seqScratch)
		for _, s := range slices.Compact(q.seqScratch) {
			if r, ok := getRecord(b, s); ok {
				keep(&r)
			}
		}
	})
}

// CommitAcks ends AckLinger's wait: acknowledgements pending now, and
// those that come before the next commit of appends, are committed as soon
// as the writer is free, without waiting for appends. It is for a caller
// whose work is held back by its own pending acknowledgements, or that is
// stopping.
func (q *Queue) CommitAcks() {
	if q.ackLinger == 0 {
		return
	}
	q.mu.Lock()
	q.ackHurry = true
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// noneStoredUpTo reports whether no record with a sequence number at or
// below upTo is stored, or can be later. The caller holds mu.
//
// The counters describe the file as of the last write transaction applied
// to them, which is not the last one readers can see: bbolt shows a
// transaction to new readers once its meta page is written, before that
// page is fsynced and before commit applies the counters. A reader (the
// uplink) can therefore Peek a record, publish it and have its PUBACK back
// on loopback while Stats still counts no records. So "no records" alone
// does not mean "nothing to delete"; it does for the sequence numbers
// issued by the transactions applied (up to LastSeq), because a later
// transaction only adds records with larger sequence numbers.
func (q *Queue) noneStoredUpTo(upTo uint64) bool {
	if q.st.Records > 0 {
		return upTo < q.st.FirstSeq
	}
	return upTo <= q.st.LastSeq
}

// deleteSeqsAcked deletes, in a commit, the stored records among seqs and
// counts them as acknowledged in d. The caller holds wmu.
func (q *Queue) deleteSeqsAcked(b *bolt.Bucket, seqs []uint64, d *delta) {
	// Acknowledgements of several AckSeqs calls share a commit and may name
	// a record twice (a message PUBACKed on the old connection and again
	// after it was sent on the new one): count each record once.
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	found := q.recScratch[:0]
	for _, s := range seqs {
		if r, ok := getRecord(b, s); ok {
			found = append(found, r.key())
			d.removed++
			d.removedBytes += r.size
			d.removedPoints += int64(pointsOf(r.head))
		}
	}
	q.recScratch = found
	d.acked += uint64(len(found))
	deleteRecs(b, found)
}

// deleteAcked is the one write path of Ack and AckSeqs: find calls keep for
// every stored record to delete; they are deleted after the scan, in the
// same transaction, and counted as acknowledged. nothing short-circuits a
// call that cannot match any record; what names the call in an error.
func (q *Queue) deleteAcked(nothing bool, what func() string, find func(b *bolt.Bucket, keep func(*rec))) error {
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if nothing {
		return nil
	}
	q.wmu.Lock()
	defer q.wmu.Unlock()
	var d delta
	// A delete frees at least the pages it allocates (every page it
	// rewrites or empties is freed), so it may use the reserve.
	err := q.write(noExtra, 0, nil, func(tx *bolt.Tx) error {
		d = delta{}
		b := tx.Bucket(recordsBucket)
		rs := q.recScratch[:0]
		find(b, func(r *rec) {
			rs = append(rs, r.key())
			d.removed++
			d.removedBytes += r.size
			d.removedPoints += int64(pointsOf(r.head))
		})
		q.recScratch = rs
		d.acked = uint64(len(rs))
		deleteRecs(b, rs)
		bounds(b, &d)
		return nil
	})
	if err != nil {
		q.writeFailed(err)
		return fmt.Errorf("buffer %s: %s: %w", q.path, what(), err)
	}
	q.apply(&d)
	return nil
}

// Depth returns the number of stored records and the last sequence number
// ever issued; with Stats it is one short lock.
func (q *Queue) Depth() (records int64, lastSeq uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st.Records, q.st.LastSeq
}

// Stats returns a snapshot of the counters. It takes one short lock.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.st
}

// Close commits what is pending, stops the writer and closes the file.
// Calls after the first return the first call's result.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		close(q.closing)
		<-q.done
		q.wmu.Lock() // let a running Ack or Peek deletion finish
		defer q.wmu.Unlock()
		if err := q.db.Close(); err != nil {
			q.closeErr = fmt.Errorf("buffer %s: close: %w", q.path, err)
		}
	})
	return q.closeErr
}
