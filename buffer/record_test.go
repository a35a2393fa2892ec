package buffer

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/fieldgate/fieldgate/telemetry"
)

// fileElements opens a closed queue file with bbolt and returns the
// records bucket's keys and the largest value.
func fileElements(t *testing.T, path string) (keys [][]byte, largest int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(recordsBucket).ForEach(func(k, v []byte) error {
			keys = append(keys, append([]byte(nil), k...))
			largest = max(largest, len(v))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys, largest
}

// peekEncoded returns the stored records after after, encoded again, by
// sequence number.
func peekEncoded(t *testing.T, q *Queue, after uint64) map[uint64][]byte {
	t.Helper()
	recs, err := q.Peek(after, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[uint64][]byte, len(recs))
	for _, r := range recs {
		out[r.Seq] = telemetry.AppendBatch(nil, &r.Batch)
	}
	return out
}

// TestQueueStoresLargeRecordsInParts: batches larger than a quarter page
// are stored in parts of at most partMax bytes, and read, counted, acked
// and dropped whole; the parts survive a reopen.
func TestQueueStoresLargeRecordsInParts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	q := openQueue(t, path, Options{}, nil)
	sizes := []int{1, 100, 1000, 3000, 20, 99, 5000}
	want := make(map[uint64][]byte)
	var bytesWant int64
	for i, n := range sizes {
		b := sizedBatch("d", i, n)
		mustAppend(t, q, b)
		want[uint64(i+1)] = telemetry.AppendBatch(nil, b)
		bytesWant += encodedLen(b)
	}
	check := func(when string) {
		t.Helper()
		got := peekEncoded(t, q, 0)
		if len(got) != len(want) {
			t.Fatalf("%s: peeked %d records, want %d", when, len(got), len(want))
		}
		var n int64
		for seq, w := range want {
			if !bytes.Equal(got[seq], w) {
				t.Fatalf("%s: record %d reads back as %d bytes, differing from the %d appended", when, seq, len(got[seq]), len(w))
			}
			n += int64(len(w))
		}
		if st := q.Stats(); st.Records != int64(len(want)) || st.Bytes != n {
			t.Fatalf("%s: Stats %+v, want %d records of %d bytes", when, st, len(want), n)
		}
	}
	check("appended")
	if st := q.Stats(); st.Bytes != bytesWant {
		t.Fatalf("Stats.Bytes = %d, want %d", st.Bytes, bytesWant)
	}
	// Peek from inside the run of a record in parts starts at the next.
	if got := peekSeqs(t, q, 4, 1); len(got) != 1 || got[0] != 5 {
		t.Fatalf("Peek(4, 1) = %v, want [5]", got)
	}

	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	keys, largest := fileElements(t, path)
	if max := partMax(pageSize); largest > max {
		t.Fatalf("an element of %d bytes is stored, parts are at most %d", largest, max)
	}
	parts := 0
	for _, k := range keys {
		if len(k) == partKeyLen {
			parts++
		}
	}
	if parts == 0 || len(keys) != len(sizes)+parts {
		t.Fatalf("%d elements with %d parts for %d records", len(keys), parts, len(sizes))
	}

	q = openQueue(t, path, Options{}, nil)
	check("reopened")
	// Out of order (a record in parts and a small one), then a prefix.
	if err := q.AckSeqs([]uint64{4, 6}); err != nil {
		t.Fatal(err)
	}
	delete(want, 4)
	delete(want, 6)
	check("acked 4 and 6")
	if err := q.Ack(3); err != nil {
		t.Fatal(err)
	}
	for s := range uint64(4) {
		delete(want, s)
	}
	check("acked up to 3")
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	keys, _ = fileElements(t, path)
	for _, k := range keys {
		if s := binary.BigEndian.Uint64(k); want[s] == nil {
			t.Fatalf("an element of record %d is left after it was acknowledged", s)
		}
	}

	// Drops by the byte bound take records whole.
	q = openQueue(t, path, Options{MaxBytes: 1 << 20}, nil)
	for i := range 60 {
		mustAppend(t, q, sizedBatch("d", 100+i, 3000))
	}
	st := q.Stats()
	if st.DroppedRecords == 0 || st.Bytes > 1<<20 {
		t.Fatalf("after the byte bound: %+v", st)
	}
	if got := peekEncoded(t, q, 0); int64(len(got)) != st.Records {
		t.Fatalf("peeked %d records, Stats says %d", len(got), st.Records)
	}
}

// TestQueueSplitsRecordsStoredWhole: a file written by a version that
// stored every record as one element, large ones in multi-page nodes, is
// rewritten at Open with its records in parts, all of them kept when they
// fit.
func TestQueueSplitsRecordsStoredWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: pageSize})
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[uint64][]byte)
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(recordsBucket)
		if err != nil {
			return err
		}
		for i, n := range []int{10, 1000, 3000, 10, 2000} {
			v := telemetry.AppendBatch(nil, sizedBatch("d", i, n))
			seq, _ := b.NextSequence()
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], seq)
			if err := b.Put(k[:], v); err != nil {
				return err
			}
			want[seq] = v
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, largest := fileElements(t, path); largest <= partMax(pageSize) {
		t.Fatalf("test file's largest value is only %d bytes", largest)
	}

	logs := newLogRecorder()
	q := openQueue(t, path, Options{MaxBytes: 4 << 20}, slog.New(logs))
	if n := logs.count("held records not stored in parts"); n != 1 {
		t.Fatalf("logged the rewrite %d times, want once", n)
	}
	got := peekEncoded(t, q, 0)
	for seq, w := range want {
		if !bytes.Equal(got[seq], w) {
			t.Fatalf("record %d reads back as %d bytes, differing from the %d stored", seq, len(got[seq]), len(w))
		}
	}
	if st := q.Stats(); st.Records != int64(len(want)) || st.DroppedRecords != 0 || st.LastSeq != uint64(len(want)) {
		t.Fatalf("Stats after the rewrite: %+v", st)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, largest := fileElements(t, path); largest > partMax(pageSize) {
		t.Fatalf("an element of %d bytes is left after the rewrite", largest)
	}
	// Once rewritten, the next Open has nothing to do.
	logs = newLogRecorder()
	q = openQueue(t, path, Options{MaxBytes: 4 << 20}, slog.New(logs))
	if n := logs.count("compacted"); n != 0 {
		t.Fatalf("the second Open compacted again")
	}
	mustAppend(t, q, sizedBatch("d", 9, 3000))
	if s := peekSeqs(t, q, uint64(len(want)), 10); len(s) != 1 || s[0] != uint64(len(want))+1 {
		t.Fatalf("numbering after the rewrite: %v", s)
	}
}

// TestQueuePartWithoutItsRecordIsCorrupt: a part whose record is missing
// (or out of order) is damage: the file is moved aside.
func TestQueuePartWithoutItsRecordIsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	q := openQueue(t, path, Options{}, nil)
	mustAppend(t, q, sizedBatch("d", 0, 3000), sizedBatch("d", 1, 10))
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], 1)
		return tx.Bucket(recordsBucket).Delete(k[:])
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	logs := newLogRecorder()
	q = openQueue(t, path, Options{}, slog.New(logs))
	if n := logs.count("corrupt"); n != 1 {
		t.Fatalf("logged %d corrupt files, want 1", n)
	}
	checkWorking(t, q)
}
