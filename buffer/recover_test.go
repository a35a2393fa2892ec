package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// validFile writes a queue with n records (several pages, some acked) and
// returns the file's bytes.
func validFile(t testing.TB, n int) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "valid.db")
	q, err := Open(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		mustAppend(t, q, batch("press-1", i, 1+i%40))
	}
	if err := q.Ack(uint64(n / 4)); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkWorking fails unless q accepts, stores and returns a batch.
func checkWorking(t testing.TB, q *Queue) {
	t.Helper()
	last := q.Stats().LastSeq
	mustAppend(t, q, batch("after", 7, 3))
	recs, err := q.Peek(last, 10)
	if err != nil {
		t.Fatalf("Peek on the recovered queue: %v", err)
	}
	if len(recs) != 1 || recs[0].Seq != last+1 || batchID(recs[0].Batch) != 7 {
		t.Fatalf("recovered queue returned %+v after appending seq %d", recs, last+1)
	}
	if err := q.Ack(recs[0].Seq); err != nil {
		t.Fatalf("Ack on the recovered queue: %v", err)
	}
}

func TestQueueCorruptFileMovedAside(t *testing.T) {
	valid := validFile(t, 200)
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	cases := map[string][]byte{
		"truncated to 100 bytes":  valid[:100],
		"truncated to one page":   valid[:4096],
		"truncated to half":       valid[:len(valid)/2],
		"last page cut":           valid[:inUse(t, valid)-1],
		"random bytes":            random,
		"text":                    []byte("this is not a database\n"),
		"random after meta pages": append(append([]byte{}, valid[:8192]...), random...),
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "buffer.db")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			logs := newLogRecorder()
			q := openQueue(t, path, Options{}, slog.New(logs))
			aside, err := filepath.Glob(path + ".corrupt-*")
			if err != nil || len(aside) != 1 {
				t.Fatalf("files moved aside: %v (%v), want one", aside, err)
			}
			kept, err := os.ReadFile(aside[0])
			if err != nil || !bytes.Equal(kept, content) {
				t.Fatalf("%s does not hold the original bytes (%v)", aside[0], err)
			}
			if logs.count("ERROR buffer file is corrupt") != 1 {
				t.Fatalf("no error logged for the corrupt file")
			}
			if st := q.Stats(); st.Records != 0 || st.LastSeq != 0 {
				t.Fatalf("new queue Stats = %+v", st)
			}
			checkWorking(t, q)
		})
	}
}

// inUse is how many bytes of a valid file its newest meta page covers.
func inUse(t *testing.T, b []byte) int {
	m0, m1 := parseMeta(b), parseMeta(b[4096:])
	if !m0.ok || !m1.ok {
		t.Fatal("valid file has a bad meta page")
	}
	if m1.txid > m0.txid {
		m0 = m1
	}
	return int(m0.pgid) * int(m0.pageSize)
}

func TestQueueEmptyFileIsInitialised(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, path, Options{}, nil)
	checkWorking(t, q)
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Fatalf("an empty file was moved aside: %v", aside)
	}
}

func TestQueueUndecodableRecordSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	q, err := Open(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		mustAppend(t, q, batch("d", i, 10))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// Damage two values: one whose header still decodes (10 points), one
	// that is garbage from the first byte.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(recordsBucket)
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], 2)
		v := append([]byte{}, b.Get(k[:])...)
		if err := b.Put(k[:], v[:len(v)/2]); err != nil {
			return err
		}
		binary.BigEndian.PutUint64(k[:], 3)
		return b.Put(k[:], []byte{0xff, 0xfe})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	logs := newLogRecorder()
	q = openQueue(t, path, Options{}, slog.New(logs))
	for range 2 {
		if got := peekSeqs(t, q, 0, 10); len(got) != 2 || got[0] != 1 || got[1] != 4 {
			t.Fatalf("Peek = %v, want [1 4]", got)
		}
	}
	if got := peekSeqs(t, q, 0, 1); len(got) != 1 || got[0] != 1 {
		t.Fatalf("Peek(0, 1) = %v, want [1]", got)
	}
	if got := peekSeqs(t, q, 1, 1); len(got) != 1 || got[0] != 4 {
		t.Fatalf("Peek(1, 1) = %v, want [4]: undecodable records must not use up max", got)
	}
	st := q.Stats()
	want := encodedLen(batch("d", 0, 10)) + encodedLen(batch("d", 3, 10))
	if st.Records != 2 || st.Points != 20 || st.Bytes != want || st.DroppedRecords != 2 || st.DroppedPoints != 10 {
		t.Fatalf("Stats = %+v; want 2 records, 20 points, %d bytes, 2 dropped with 10 points", st, want)
	}
	if n := logs.count("does not decode"); n != 2 {
		t.Fatalf("logged %d undecodable records, want 2", n)
	}
	if err := q.Ack(4); err != nil {
		t.Fatal(err)
	}
	checkWorking(t, q)
}

// FuzzReopenTruncated damages a valid queue file (truncation and byte
// flips) and requires Open to return a working queue without panicking.
func FuzzReopenTruncated(f *testing.F) {
	valid := validFile(f, 120)
	size := uint32(len(valid))
	f.Add(size, []byte{})                              // untouched
	f.Add(uint32(4096), []byte{})                      // one page
	f.Add(size/2, []byte{})                            // half
	f.Add(size, []byte{0x20, 0, 0, 0, 0x01})           // meta 0 magic
	f.Add(size, []byte{0x10, 0x30, 0, 0, 0x80})        // page 3 header
	f.Add(size, []byte{0x18, 0x20, 0, 0, 0x04})        // page 2 element
	f.Add(size-100, []byte{0x00, 0x50, 0, 0, 0xff, 1}) // both
	f.Fuzz(func(t *testing.T, cut uint32, flips []byte) {
		b := append([]byte{}, valid[:min(cut, size)]...)
		// flips is a list of (offset uint32 little endian, xor byte).
		for ; len(flips) >= 5 && len(b) > 0; flips = flips[5:] {
			b[binary.LittleEndian.Uint32(flips)%uint32(len(b))] ^= flips[4]
		}
		path := filepath.Join(t.TempDir(), "buffer.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := Open(path, Options{}, nil)
		if err != nil {
			t.Fatalf("Open of a damaged file: %v", err)
		}
		defer q.Close()
		// Whatever survived must be readable, in order, without wedging.
		var after uint64
		for {
			recs, err := q.Peek(after, 50)
			if err != nil {
				t.Fatalf("Peek(%d): %v", after, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if r.Seq <= after {
					t.Fatalf("Peek returned seq %d after %d", r.Seq, after)
				}
				after = r.Seq
			}
		}
		if err := q.Ack(after); err != nil {
			if errors.Is(err, ErrDamaged) {
				// Damage the check at Open missed, found by bbolt on
				// write: reported as an error instead of a crash.
				if !q.Stats().Failing {
					t.Fatalf("Ack failed with %v but Stats is not Failing", err)
				}
				return
			}
			t.Fatalf("Ack(%d): %v", after, err)
		}
		checkWorking(t, q)
		if err := q.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	})
}
