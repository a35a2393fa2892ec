package buffer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// The structural check below reads the file with ReadAt, never through a
// memory map, so damage shows up as an error instead of a fault. It walks
// every page bbolt will touch when it opens the file and rebuilds its
// freelist, and is at least as strict as bbolt's own freepages check, whose
// failures are panics in a goroutine of bbolt's that cannot be recovered.
//
// Layout of the bbolt v1 file format (version 2), in native byte order:
//
//	page header: id u64 | flags u16 | count u16 | overflow u32
//	meta (after the header): magic u32 | version u32 | pageSize u32 |
//	    flags u32 | root u64 | sequence u64 | freelist u64 | pgid u64 |
//	    txid u64 | checksum u64 (FNV-64a of the fields before it)
//	branch element: pos u32 | ksize u32 | pgid u64
//	leaf element:   flags u32 | pos u32 | ksize u32 | vsize u32
//
// An element's key starts pos bytes after the element itself; a leaf value
// follows its key. A leaf value with the bucket flag is a bucket header
// (root u64 | sequence u64), followed by an inline leaf page when root is 0.
const (
	pageHeaderSize  = 16
	elemSize        = 16
	metaChecksumOff = 56
	flagBranch      = 0x01
	flagLeaf        = 0x02
	flagFreelist    = 0x10
	bucketLeafFlag  = 0x01
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	noFreelist      = ^uint64(0)
	maxTreeDepth    = 64
)

var ne = binary.NativeEndian

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
	ok       bool
}

// parseMeta reads the meta stored in the page starting at p[0].
func parseMeta(p []byte) boltMeta {
	if len(p) < pageHeaderSize+metaChecksumOff+8 {
		return boltMeta{}
	}
	m := p[pageHeaderSize:]
	h := fnv.New64a()
	_, _ = h.Write(m[:metaChecksumOff])
	return boltMeta{
		pageSize: ne.Uint32(m[8:]),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
		ok: ne.Uint32(m[0:]) == boltMagic && ne.Uint32(m[4:]) == boltVersion &&
			ne.Uint64(m[metaChecksumOff:]) == h.Sum64(),
	}
}

type fileChecker struct {
	r        io.ReaderAt
	pageSize uint64
	pgid     uint64   // high-water mark: pages in use are < pgid
	used     []uint64 // bitset of pages referenced so far
	free     []uint64 // bitset of pages on a synced freelist
	bufs     [maxTreeDepth + 1][]byte
}

// checkFile checks that f is a bbolt file bbolt can open and walk without
// faulting or panicking. An empty file is fine: bbolt initialises it.
func checkFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if size == 0 {
		return nil
	}
	buf := make([]byte, 4096)
	n, _ := f.ReadAt(buf, 0)
	var ps uint64
	if m := parseMeta(buf[:n]); m.ok {
		ps = uint64(m.pageSize)
	} else {
		// bbolt probes for the second meta page the same way.
		for i := 0; i <= 14; i++ {
			pos := int64(1024) << i
			if pos >= size-1024 {
				break
			}
			n, _ := f.ReadAt(buf, pos)
			if m := parseMeta(buf[:n]); m.ok {
				ps = uint64(m.pageSize)
				break
			}
		}
	}
	if ps == 0 {
		return fmt.Errorf("no valid meta page (file is %d bytes)", size)
	}
	if ps < 1024 || ps > 1<<16 || ps&(ps-1) != 0 {
		return fmt.Errorf("meta page size %d is not supported", ps)
	}
	if uint64(size) < 2*ps {
		return fmt.Errorf("file is truncated: %d bytes, less than two %d-byte meta pages", size, ps)
	}
	metas := [2]boltMeta{}
	for i := range metas {
		p := make([]byte, ps)
		if _, err := f.ReadAt(p, int64(uint64(i)*ps)); err != nil {
			return fmt.Errorf("read meta page %d: %w", i, err)
		}
		metas[i] = parseMeta(p)
	}
	// bbolt uses the meta with the higher txid if it is valid, else the other.
	a, b := metas[0], metas[1]
	if b.txid > a.txid {
		a, b = b, a
	}
	m := a
	if !m.ok {
		m = b
	}
	switch {
	case !m.ok:
		return fmt.Errorf("both meta pages are invalid")
	case uint64(m.pageSize) != ps:
		return fmt.Errorf("meta page size %d differs from %d", m.pageSize, ps)
	case m.pgid > uint64(size)/ps:
		return fmt.Errorf("file is truncated: %d bytes, the meta page needs %d pages of %d bytes", size, m.pgid, ps)
	case m.root < 2 || m.root >= m.pgid:
		return fmt.Errorf("root page %d out of range [2, %d)", m.root, m.pgid)
	}
	c := &fileChecker{r: f, pageSize: ps, pgid: m.pgid}
	c.used = make([]uint64, (m.pgid+63)/64)
	c.free = make([]uint64, (m.pgid+63)/64)
	setBit(c.used, 0)
	setBit(c.used, 1)
	if m.freelist != noFreelist {
		if err := c.checkFreelist(m.freelist); err != nil {
			return err
		}
	}
	return c.checkPage(m.root, nil, nil, 0)
}

func setBit(s []uint64, i uint64)      { s[i/64] |= 1 << (i % 64) }
func hasBit(s []uint64, i uint64) bool { return s[i/64]&(1<<(i%64)) != 0 }

// readPage reads page id and its overflow pages into the buffer for depth,
// marking them used.
func (c *fileChecker) readPage(id uint64, depth int) ([]byte, error) {
	if id < 2 || id >= c.pgid {
		return nil, fmt.Errorf("page %d out of range [2, %d)", id, c.pgid)
	}
	var hdr [pageHeaderSize]byte
	if _, err := c.r.ReadAt(hdr[:], int64(id*c.pageSize)); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	if got := ne.Uint64(hdr[0:]); got != id {
		return nil, fmt.Errorf("page %d has id %d", id, got)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if overflow >= c.pgid-id {
		return nil, fmt.Errorf("page %d: overflow %d passes the high-water mark %d", id, overflow, c.pgid)
	}
	for i := id; i <= id+overflow; i++ {
		if hasBit(c.used, i) {
			return nil, fmt.Errorf("page %d: multiple references", i)
		}
		if hasBit(c.free, i) {
			return nil, fmt.Errorf("page %d: reachable and free", i)
		}
		setBit(c.used, i)
	}
	n := (overflow + 1) * c.pageSize
	if uint64(cap(c.bufs[depth])) < n {
		c.bufs[depth] = make([]byte, n)
	}
	p := c.bufs[depth][:n]
	if _, err := c.r.ReadAt(p, int64(id*c.pageSize)); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	return p, nil
}

func (c *fileChecker) checkFreelist(id uint64) error {
	p, err := c.readPage(id, 0)
	if err != nil {
		return fmt.Errorf("freelist: %w", err)
	}
	if flags := ne.Uint16(p[8:]); flags != flagFreelist {
		return fmt.Errorf("freelist page %d has flags %#x", id, flags)
	}
	n, off := uint64(ne.Uint16(p[10:])), uint64(pageHeaderSize)
	if n == 0xFFFF {
		n, off = ne.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
	}
	if n > (uint64(len(p))-off)/8 {
		return fmt.Errorf("freelist page %d: %d ids do not fit", id, n)
	}
	for i := range n {
		f := ne.Uint64(p[off+8*i:])
		if f < 2 || f >= c.pgid || hasBit(c.used, f) || hasBit(c.free, f) {
			return fmt.Errorf("freelist page %d: bad or repeated free page %d", id, f)
		}
		setBit(c.free, f)
	}
	return nil
}

// checkPage checks the subtree rooted at page id, whose keys must lie in
// [lo, hi) (nil means unbounded).
func (c *fileChecker) checkPage(id uint64, lo, hi []byte, depth int) error {
	if depth >= maxTreeDepth {
		return fmt.Errorf("page %d: tree deeper than %d", id, maxTreeDepth)
	}
	p, err := c.readPage(id, depth)
	if err != nil {
		return err
	}
	if err := c.checkNode(p, lo, hi, depth); err != nil {
		return fmt.Errorf("page %d: %w", id, err)
	}
	return nil
}

// checkNode checks a branch or leaf page held in p (a whole page span, or
// an inline bucket's page).
func (c *fileChecker) checkNode(p []byte, lo, hi []byte, depth int) error {
	if len(p) < pageHeaderSize {
		return fmt.Errorf("page of %d bytes", len(p))
	}
	flags := ne.Uint16(p[8:])
	count := uint64(ne.Uint16(p[10:]))
	if flags != flagBranch && flags != flagLeaf {
		return fmt.Errorf("invalid page type %#x", flags)
	}
	if pageHeaderSize+count*elemSize > uint64(len(p)) {
		return fmt.Errorf("%d elements do not fit %d bytes", count, len(p))
	}
	if flags == flagBranch && count == 0 {
		return fmt.Errorf("empty branch page")
	}
	var prev []byte
	for i := range count {
		e := pageHeaderSize + i*elemSize
		var pos, ksize, vsize uint64
		if flags == flagBranch {
			pos, ksize = uint64(ne.Uint32(p[e:])), uint64(ne.Uint32(p[e+4:]))
		} else {
			pos, ksize, vsize = uint64(ne.Uint32(p[e+4:])), uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
		}
		ks := e + pos
		if ks+ksize+vsize > uint64(len(p)) {
			return fmt.Errorf("element %d: key and value pass the end of the page", i)
		}
		key := p[ks : ks+ksize]
		if ksize == 0 {
			return fmt.Errorf("element %d: empty key", i)
		}
		if prev != nil && bytes.Compare(prev, key) >= 0 {
			return fmt.Errorf("element %d: key %x not after %x", i, key, prev)
		}
		if i == 0 && lo != nil && bytes.Compare(key, lo) < 0 {
			return fmt.Errorf("first key %x before the parent's %x", key, lo)
		}
		if hi != nil && bytes.Compare(key, hi) >= 0 {
			return fmt.Errorf("element %d: key %x not before the parent's next key %x", i, key, hi)
		}
		prev = key
		if flags == flagBranch {
			next := hi
			if i+1 < count {
				ne2 := pageHeaderSize + (i+1)*elemSize
				npos, nk := uint64(ne.Uint32(p[ne2:])), uint64(ne.Uint32(p[ne2+4:]))
				if ne2+npos+nk > uint64(len(p)) {
					return fmt.Errorf("element %d: key passes the end of the page", i+1)
				}
				next = p[ne2+npos : ne2+npos+nk]
			}
			if err := c.checkPage(ne.Uint64(p[e+8:]), key, next, depth+1); err != nil {
				return err
			}
			continue
		}
		if ne.Uint32(p[e:])&bucketLeafFlag == 0 {
			continue
		}
		v := p[ks+ksize : ks+ksize+vsize]
		if len(v) < 16 {
			return fmt.Errorf("bucket %x: header of %d bytes", key, len(v))
		}
		if root := ne.Uint64(v); root != 0 {
			if err := c.checkPage(root, nil, nil, depth+1); err != nil {
				return fmt.Errorf("bucket %x: %w", key, err)
			}
			continue
		}
		inline := v[16:]
		if len(inline) < pageHeaderSize || ne.Uint16(inline[8:]) != flagLeaf {
			return fmt.Errorf("bucket %x: bad inline page", key)
		}
		if depth+1 >= maxTreeDepth {
			return fmt.Errorf("bucket %x: nested deeper than %d", key, maxTreeDepth)
		}
		if err := c.checkNode(inline, nil, nil, depth+1); err != nil {
			return fmt.Errorf("bucket %x: inline page: %w", key, err)
		}
	}
	return nil
}
