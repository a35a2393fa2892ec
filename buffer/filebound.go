package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The file bound. bbolt never gives pages back to the file system: the file
// only grows, when a write transaction needs more pages than its freelist
// holds. So the queue keeps the file within Options.MaxBytes by never
// starting a write transaction that could need more pages than the freelist
// and the space left under the bound hold together:
//
//   - Every node bbolt writes fits one page, because no element is larger
//     than a quarter page (larger records are stored in parts, record.go).
//     So every page bbolt allocates is one page, which any free page can
//     take: the count of free pages is all that matters, not how they lie.
//     (A multi-page node needs a run of contiguous free pages; with free
//     pages scattered, bbolt takes the run from the end of the file.)
//   - Before writing, every write transaction compares an upper bound of the
//     pages it can allocate (pagesFor, plus three per node it made dirty and
//     a few for new branch pages) plus reservePages with what is available:
//     the free pages bbolt counted when the last write transaction closed (a
//     lower bound: pages freed since are only added) plus the pages between
//     the high-water mark and the bound.
//   - If that does not hold, the transaction is rolled back before it has
//     written anything (errNoRoom). The queue then refreshes the free count
//     (an empty write transaction rolled back while no reader is open, which
//     releases the pages freed by earlier transactions), and if that is not
//     enough it drops the oldest records in a transaction of their own
//     (squeeze; counted like every drop) and tries again. With the queue
//     empty, a commit drops its own oldest batches until the rest fits.
//   - bbolt grows the file to the high-water mark plus db.AllocSize; the
//     step is set before every transaction so that it cannot reach past the
//     bound.
//   - reservePages is kept free after every transaction, so the squeeze
//     itself (at most fixedPages) always fits.
//   - A file that is already larger than the bound at Open (written by an
//     earlier version, or with a larger bound) is compacted: the newest
//     records that fit are copied into a new file, which is renamed over the
//     old one.
const (
	pageSize     = 4096 // for new files; an existing file keeps its own
	fixedPages   = 16   // branch pages, the tree's edges, the age index
	reservePages = 16   // kept free for the next squeeze
	// minFilePages is the smallest file bound: bbolt's four initial pages,
	// the buckets, and room for a commit, a squeeze and their reserve.
	minFilePages = 64
)

// errNoRoom aborts a write transaction that could take the file past its
// bound; the caller makes room and tries again.
var errNoRoom = errors.New("no room under the file bound")

// pagesFor is an upper bound on the leaf pages bbolt allocates to append
// vals beyond the nodes the transaction made dirty (see write). Leaf
// elements are 16 bytes of header, the key (8 bytes, 12 for a part) and the
// value, at most a quarter page (record.go); pages are filled completely
// (FillPercent 1), so every page but the last is at least three quarters
// full.
func (q *Queue) pagesFor(vals [][]byte) int64 {
	ps := q.pageSize
	var elems int64
	for _, v := range vals {
		parts := int64(partKeys(len(v), q.partMax) / partKeyLen)
		elems += int64(24+len(v)) + parts*(16+partKeyLen)
	}
	pages := (elems+ps)*4/3/ps + 2
	return pages + pages/(ps/24) + 1 // branch entries for the new leaves
}

// fits reports whether a write transaction that allocates at most need pages
// can run inside the file bound, and sets bbolt's growth step so that the
// file cannot pass the bound. It is called first thing in the transaction,
// before anything is written. The caller holds wmu.
func (q *Queue) fits(tx *bolt.Tx, need, reserve int64) bool {
	hwm := tx.Size() / q.pageSize // pages 0..hwm-1 are in use or free
	tail := q.maxPages - (hwm + 1)
	avail := int64(q.db.Stats().FreePageN) + max(tail, 0)
	// The file grows to (high-water mark + 1) pages plus AllocSize, and the
	// mark moves up by at most need pages.
	q.db.AllocSize = int(min(max((tail-need)*q.pageSize, 0), q.allocStep))
	if need+reserve > avail {
		q.deficit = need + reserve - avail
		return false
	}
	return true
}

// write runs fn in a write transaction that stays inside the file bound
// and leaves reserve pages available, making room first if it would not:
// by refreshing the free count, then by dropping the oldest records
// (squeeze), and when nothing old is left by calling shrink (if not nil)
// with the pages missing, which makes the transaction smaller and reports
// whether it could.
//
// After fn has made its changes (in memory: bbolt writes pages only at
// commit) the pages the commit can allocate are bounded by extra() plus
// three pages per node fn made dirty (a node, a sibling a rebalance merges
// into it, and a split; every node fits one page) and four for new branch
// pages; if they do not fit, the transaction is rolled back. fn may
// therefore run more than once and must start from scratch each time. The
// caller holds wmu.
func (q *Queue) write(extra func() int64, reserve int64, shrink func(deficit int64) bool, fn func(*bolt.Tx) error) error {
	refreshed := false
	for {
		err := q.update(func(tx *bolt.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			st := tx.Stats()
			need := extra() + 3*st.GetNodeCount() + 4
			if !q.fits(tx, need, reserve) {
				return errNoRoom
			}
			q.onCommit(tx, need)
			return nil
		})
		if !errors.Is(err, errNoRoom) {
			return err
		}
		if !refreshed {
			q.refreshFree()
			refreshed = true
			continue
		}
		deficit := q.deficit
		dropped, err := q.squeeze(deficit)
		if err != nil {
			return err
		}
		if !dropped && (shrink == nil || !shrink(deficit)) {
			return fmt.Errorf("%w: %d pages short", errNoRoom, deficit)
		}
	}
}

// onCommit passes what tx allocates, once committed, to allocHook if it is
// set. The caller holds wmu.
func (q *Queue) onCommit(tx *bolt.Tx, bound int64) {
	if h := q.allocHook; h != nil {
		tx.OnCommit(func() {
			st := tx.Stats()
			h(bound, st.GetPageCount(), st.GetSpill())
		})
	}
}

// noExtra is write's extra for a transaction that only deletes.
func noExtra() int64 { return 0 }

// refreshFree lets bbolt release the pages freed by earlier transactions
// and count them: a write transaction begun while no reader is open (dbmu
// held exclusively) and rolled back, which writes nothing. The caller holds
// wmu.
func (q *Queue) refreshFree() {
	q.dbmu.Lock()
	defer q.dbmu.Unlock()
	if tx, err := q.db.Begin(true); err == nil {
		_ = tx.Rollback()
	}
}

// squeeze drops the oldest records until about deficit pages are freed, in
// a transaction of its own, counts them like every drop, and refreshes the
// free count. It reports whether anything was dropped. The caller holds wmu.
func (q *Queue) squeeze(deficit int64) (bool, error) {
	target := (deficit + 4) * q.pageSize // element bytes to free
	var d delta
	err := q.update(func(tx *bolt.Tx) error {
		// The squeeze may use the reserve kept for it: it rewrites at most
		// the first leaf left and its branches, and a merge.
		q.fits(tx, reservePages, 0)
		q.onCommit(tx, reservePages)
		b := tx.Bucket(recordsBucket)
		rs := q.recScratch[:0]
		var freed int64
		c := b.Cursor()
		for k, v := c.First(); k != nil && freed < target; {
			var r rec
			r, k, v = nextRecord(c, k, v, nil)
			rs = append(rs, r.key())
			n := pointsOf(r.head)
			freed += r.elemBytes()
			d.removed++
			d.removedBytes += r.size
			d.removedPoints += int64(n)
			d.drop(r.head, n)
		}
		q.recScratch = rs
		deleteRecs(b, rs)
		bounds(b, &d)
		return q.pruneIndex(tx, &d)
	})
	if err != nil {
		q.writeFailed(err)
		return false, fmt.Errorf("buffer %s: drop oldest records to stay within the file bound: %w", q.path, err)
	}
	q.apply(&d)
	q.logDrops(d.dropRecords, d.dropPoints)
	q.refreshFree()
	return d.removed > 0, nil
}

// fileSize is the size of the queue's file, or 0 if it cannot be read.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// compact rewrites a file that is larger than the bound, or that holds
// records in elements larger than partMax (written by a version that did
// not store records in parts): the newest records that fit, the sequence
// and the age index are copied into path+".compact" with full pages and
// records in parts, which is then renamed over path and opened. Records
// that do not fit are counted as dropped. why says in the log why. It runs
// in Open, before the writer starts, so nothing else uses the queue; it
// needs free disk space for the records it keeps.
func (q *Queue) compact(why string) error {
	start := time.Now()
	before := fileSize(q.path)
	ps := q.pageSize
	// Budget in element bytes: everything but bbolt's own pages, branch
	// pages and the reserve; pages of elements no larger than a quarter
	// page are at least 3/4 full.
	budget := (q.maxPages - 8 - 2*fixedPages - reservePages) * ps * 3 / 4
	dstMax := partMax(pageSize)
	var keepFrom uint64
	var d delta
	err := q.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(recordsBucket).Cursor()
		var used int64
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			parts := int64(partKeys(len(v), dstMax) / partKeyLen)
			used += int64(len(k)+16+len(v)) + parts*(16+partKeyLen)
			if used > budget {
				break
			}
			if len(k) == 8 { // a record's head: the record fits whole
				keepFrom = binary.BigEndian.Uint64(k)
			}
		}
		for k, v := c.First(); k != nil; {
			if keepFrom != 0 && binary.BigEndian.Uint64(k) >= keepFrom {
				break
			}
			var r rec
			r, k, v = nextRecord(c, k, v, nil)
			d.drop(r.head, pointsOf(r.head))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if keepFrom == 0 {
		keepFrom = ^uint64(0) // nothing fits
	}
	tmp := q.path + ".compact"
	_ = os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: lockTimeout, PageSize: pageSize,
		FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	err = q.view(func(src *bolt.Tx) error { return copyRecords(dst, src, keepFrom) })
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("copy into %s: %w", tmp, err)
	}
	if err := q.db.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, q.path); err != nil {
		return err
	}
	if dir, err := os.Open(filepath.Dir(q.path)); err == nil {
		_ = dir.Sync()
		_ = dir.Close()
	}
	db, sc, err := openChecked(q.path)
	if err != nil {
		return fmt.Errorf("open the compacted file: %w", err)
	}
	q.db = db
	q.pageSize = int64(db.Info().PageSize)
	q.maxPages = max(q.maxBytes/q.pageSize, minFilePages)
	q.partMax = partMax(q.pageSize)
	q.idx = sc.idx
	q.st = Stats{Records: sc.records, Bytes: sc.bytes, Points: sc.points, LastSeq: sc.seq}
	if sc.records > 0 {
		q.st.FirstSeq, q.lastKey = sc.first, sc.last
	}
	q.st.DroppedRecords, q.st.DroppedPoints = d.dropRecords, d.dropPoints
	for dev, n := range d.byDevice {
		q.drops[dev] = &Drops{n.Records, n.Points}
	}
	q.log.Warn("buffer file "+why+", compacted it",
		"path", q.path, "bytes_before", before, "bytes_after", fileSize(q.path), "max_bytes", q.maxBytes,
		"dropped_records", d.dropRecords, "dropped_points", d.dropPoints, "took", time.Since(start))
	return nil
}

// copyRecords copies the records from keepFrom on, the records bucket's
// sequence and the age index from src into dst, committing every 4 MiB.
// A value stored whole that is larger than dst's partMax is stored in
// parts.
func copyRecords(dst *bolt.DB, src *bolt.Tx, keepFrom uint64) error {
	dstMax := partMax(int64(dst.Info().PageSize))
	sb := src.Bucket(recordsBucket)
	var from [8]byte
	binary.BigEndian.PutUint64(from[:], keepFrom)
	c := sb.Cursor()
	k, v := c.Seek(from[:])
	first := true
	for first || k != nil {
		err := dst.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(recordsBucket)
			if err != nil {
				return err
			}
			b.FillPercent = 1.0
			if first {
				if err := b.SetSequence(sb.Sequence()); err != nil {
					return err
				}
				tb, err := tx.CreateBucketIfNotExists(timesBucket)
				if err != nil {
					return err
				}
				tb.FillPercent = 1.0
				if st := src.Bucket(timesBucket); st != nil {
					if err := st.ForEach(tb.Put); err != nil {
						return err
					}
				}
			}
			first = false
			var arena []byte
			for n := 0; k != nil && n < 4<<20; k, v = c.Next() {
				if len(k) == 8 && len(v) > dstMax {
					arena = make([]byte, 0, partKeys(len(v), dstMax))
				}
				if err := putRecord(b, k, v, dstMax, &arena); err != nil {
					return err
				}
				n += len(v)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
