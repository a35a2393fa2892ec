package buffer

import (
	"bytes"
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// How a record is laid out in the records bucket. A record whose value is
// at most partMax bytes is one element: the 8-byte big-endian sequence
// number and the encoded batch. A larger one is split into parts of at most
// partMax bytes: the first part under the sequence number (the head, which
// holds the batch header), the next ones under the sequence number followed
// by a 4-byte big-endian part number from 1. Parts sort right after their
// head and before the next record, and are written and deleted with it in
// one transaction.
//
// The split is what makes the file bound exact (filebound.go): bbolt
// writes a node to one run of contiguous pages, and never splits a node of
// four elements or fewer, so a node holding elements larger than a quarter
// page needs a run of several pages, which a fragmented freelist may not
// have even when it holds enough free pages in all: the run then comes
// from the end of the file and the file grows although the free page count
// said it would not. With every element at most a quarter page, every node
// bbolt writes fits one page, and any free page can take it.

// partKeyLen is the length of a part's key: sequence number, part number.
const partKeyLen = 12

// partMax is the largest value stored as one element for page size ps:
// four elements of this size (16-byte element header, the longer key) and
// the page header fill one page.
func partMax(ps int64) int {
	return int((ps-16)/4 - 16 - partKeyLen)
}

// rec is a stored record as read with a cursor.
type rec struct {
	seq   uint64
	head  []byte // the first part: the whole value when parts == 1
	value []byte // the whole value, when joined; see nextRecord
	size  int64  // value bytes in all parts
	parts uint32 // elements
}

// recKey names the elements of a stored record, for deleteRecs.
type recKey struct {
	seq   uint64
	parts uint32
}

func (r *rec) key() recKey { return recKey{r.seq, r.parts} }

// elemBytes is what the record's elements take in leaf pages.
func (r *rec) elemBytes() int64 {
	return r.size + 24 + int64(r.parts-1)*(16+partKeyLen)
}

// nextRecord reads the record whose head element k, v the cursor is on,
// and returns it with the element after it. If join is not nil, the value
// of a record stored in parts is assembled in *join (reused) and set in
// r.value; a record of one part has r.value = r.head either way.
func nextRecord(c *bolt.Cursor, k, v []byte, join *[]byte) (r rec, nk, nv []byte) {
	r = rec{seq: binary.BigEndian.Uint64(k), head: v, value: v, size: int64(len(v)), parts: 1}
	nk, nv = c.Next()
	for len(nk) == partKeyLen && binary.BigEndian.Uint64(nk) == r.seq {
		if join != nil {
			if r.parts == 1 {
				*join = append((*join)[:0], v...)
			}
			*join = append(*join, nv...)
		}
		r.size += int64(len(nv))
		r.parts++
		nk, nv = c.Next()
	}
	if join != nil && r.parts > 1 {
		r.value = *join
	}
	return r, nk, nv
}

// getRecord finds the record seq in b.
func getRecord(b *bolt.Bucket, seq uint64) (rec, bool) {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], seq)
	c := b.Cursor()
	k, v := c.Seek(key[:])
	if !bytes.Equal(k, key[:]) || v == nil {
		return rec{}, false
	}
	r, _, _ := nextRecord(c, k, v, nil)
	return r, true
}

// putRecord stores v as record k (its 8-byte key), in parts of at most max
// bytes. The parts' keys are appended to *arena, which bbolt reads until
// the transaction ends; arena must have room for them (partKeys), so that
// it is not reallocated under keys already given to bbolt.
func putRecord(b *bolt.Bucket, k, v []byte, max int, arena *[]byte) error {
	if len(v) <= max {
		return b.Put(k, v)
	}
	if err := b.Put(k, v[:max]); err != nil {
		return err
	}
	for i, off := uint32(1), max; off < len(v); i, off = i+1, off+max {
		start := len(*arena)
		*arena = binary.BigEndian.AppendUint32(append(*arena, k...), i)
		pk := (*arena)[start:len(*arena):len(*arena)]
		if err := b.Put(pk, v[off:min(off+max, len(v))]); err != nil {
			return err
		}
	}
	return nil
}

// partKeys is the key bytes putRecord needs beyond the head's for a value
// of n bytes.
func partKeys(n, max int) int {
	if n <= max {
		return 0
	}
	return (n - 1) / max * partKeyLen
}

// deleteRecs deletes the records' elements. Deletes go in their own pass,
// after any cursor over b is done with.
func deleteRecs(b *bolt.Bucket, rs []recKey) {
	var k [partKeyLen]byte
	for _, r := range rs {
		binary.BigEndian.PutUint64(k[:], r.seq)
		// Delete only fails on a read-only tx or a bucket key.
		_ = b.Delete(k[:8])
		for i := uint32(1); i < r.parts; i++ {
			binary.BigEndian.PutUint32(k[8:], i)
			_ = b.Delete(k[:])
		}
	}
}
