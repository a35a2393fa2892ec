package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// lockTimeout is how long Open waits for another opener to let go.
const lockTimeout = time.Second

// Open opens or creates the queue file at path, creating its directory if
// needed, and starts the writer goroutine that Close stops. A file held by
// another opener yields an error wrapping ErrLocked after about a second. A
// file that is not a sound bbolt queue is renamed to
// path+".corrupt-<UTC time>", logged as an error, and replaced by an empty
// queue. log may be nil.
func Open(path string, opts Options, log *slog.Logger) (*Queue, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBytes < 0 || opts.SyncInterval < 0 || opts.MaxAge < 0 || opts.AckLinger < 0 {
		return nil, fmt.Errorf("buffer %s: negative max bytes %d, sync interval %s, max age %s or ack linger %s",
			path, opts.MaxBytes, opts.SyncInterval, opts.MaxAge, opts.AckLinger)
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("buffer %s: create directory: %w", path, err)
	}

	db, sc, err := openChecked(path)
	if err != nil && !errors.Is(err, errCorrupt) {
		return nil, err
	}
	if err != nil {
		aside, rerr := moveAside(path)
		if rerr != nil {
			return nil, fmt.Errorf("buffer %s: move corrupt file aside: %w (file is %w)", path, rerr, err)
		}
		log.Error("buffer file is corrupt, moved it aside and started an empty buffer",
			"path", path, "moved_to", aside, "err", err)
		db, sc, err = openChecked(path)
		if err != nil {
			return nil, fmt.Errorf("buffer %s: open new file after moving the corrupt one aside: %w", path, err)
		}
	}

	q := &Queue{
		db:        db,
		log:       log,
		path:      path,
		maxBytes:  opts.MaxBytes,
		interval:  opts.SyncInterval,
		maxAge:    opts.MaxAge,
		ackLinger: opts.AckLinger,
		drops:     make(map[string]*Drops),
		flush:     newFlush(),
		notify:    make(chan struct{}),
		kick:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	// bbolt grows the file in AllocSize steps (16 MiB by default); keep the
	// step small next to the bound so the file tracks what it holds. fits
	// lowers it further near the bound.
	q.allocStep = min(max(opts.MaxBytes/32, 1<<20), 16<<20)
	q.pageSize = int64(db.Info().PageSize)
	q.maxPages = max(opts.MaxBytes/q.pageSize, minFilePages)
	q.partMax = partMax(q.pageSize)
	q.indexEvery = indexEvery(opts.MaxAge)
	q.idx = sc.idx
	q.st = Stats{Records: sc.records, Bytes: sc.bytes, Points: sc.points, LastSeq: sc.seq}
	if sc.records > 0 {
		q.st.FirstSeq, q.lastKey = sc.first, sc.last
	}
	why := ""
	switch {
	case fileSize(path) > q.maxPages*q.pageSize:
		// Written with a larger bound, or by a version that bounded only
		// the stored bytes.
		why = "was larger than max_bytes"
	case sc.largest > int64(q.partMax):
		// Written by a version that stored large records whole, in
		// multi-page nodes the file bound cannot account for.
		why = "held records not stored in parts"
	}
	if why != "" {
		if err := q.compact(why); err != nil {
			_ = q.db.Close()
			return nil, fmt.Errorf("buffer %s: compact a file larger than the bound: %w", path, err)
		}
		db = q.db
	}
	if q.st.Bytes > q.maxBytes || q.maxAge > 0 && q.hasBelow(q.ageBound(time.Now(), sc.seq)) {
		// A bound shrank, or records aged, since the file was written:
		// trim it now.
		if err := q.commit(&pending{}); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	log.Info("buffer opened", "path", path, "records", q.st.Records, "bytes", q.st.Bytes,
		"points", q.st.Points, "last_seq", q.st.LastSeq, "max_bytes", q.maxBytes,
		"sync_interval", q.interval, "max_age", q.maxAge)
	go q.run()
	return q, nil
}

// scan is what Open learns from one pass over the records.
type scan struct {
	records, bytes, points int64
	largest                int64 // the largest element's value
	first, last, seq       uint64
	idx                    []ageMark
}

// openChecked checks the file's structure, opens it with bbolt, makes sure
// the records bucket exists and scans it. Errors wrapping errCorrupt mean
// the file should be moved aside; any other error is returned to the caller.
func openChecked(path string) (*bolt.DB, scan, error) {
	if err := checkFileLocked(path); err != nil {
		return nil, scan{}, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        lockTimeout,
		PageSize:       pageSize, // new files only
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
	})
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return nil, scan{}, lockedError(path, err)
	case errors.Is(err, fs.ErrPermission), errors.Is(err, fs.ErrNotExist):
		return nil, scan{}, fmt.Errorf("buffer %s: open: %w", path, err)
	case err != nil:
		return nil, scan{}, fmt.Errorf("buffer %s: %w: %w", path, errCorrupt, err)
	}
	sc, err := safeInitAndScan(db)
	if err != nil {
		_ = db.Close()
		return nil, scan{}, fmt.Errorf("buffer %s: %w: %w", path, errCorrupt, err)
	}
	return db, sc, nil
}

func lockedError(path string, err error) error {
	return fmt.Errorf("buffer %s: %w (waited %s; is another fieldgate running?): %w",
		path, ErrLocked, lockTimeout, err)
}

// checkFileLocked runs checkFile under the same exclusive lock bbolt takes,
// so the file cannot change while it is read. bbolt is not used here: it
// can fault on a truncated file, and it rebuilds the freelist in a goroutine
// that panics on a bad page, which no recover can catch.
func checkFileLocked(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("buffer %s: open: %w", path, err)
	}
	defer f.Close()
	if err := lockFile(f, lockTimeout); err != nil {
		if errors.Is(err, errLockTimeout) {
			return lockedError(path, err)
		}
		return fmt.Errorf("buffer %s: lock: %w", path, err)
	}
	defer unlockFile(f)
	if err := checkFile(f); err != nil {
		return fmt.Errorf("buffer %s: %w: %w", path, errCorrupt, err)
	}
	return nil
}

// initAndScan creates the records bucket if needed and counts what it
// holds. A fault or panic while reading (a file damaged in a way the
// structural check missed) is returned as an error.
func initAndScan(db *bolt.DB) (sc scan, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading the file failed: %v", r)
		}
	}()
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(recordsBucket)
		if err != nil {
			return err
		}
		c := b.Cursor()
		var part uint32 // the last part of the record sc.last seen so far
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v == nil {
				return fmt.Errorf("record key %x is a bucket", k)
			}
			sc.bytes += int64(len(v))
			sc.largest = max(sc.largest, int64(len(v)))
			if len(k) == partKeyLen && sc.records > 0 && binary.BigEndian.Uint64(k) == sc.last &&
				binary.BigEndian.Uint32(k[8:]) == part+1 {
				part++
				continue
			}
			if len(k) != 8 {
				return fmt.Errorf("record key %x is neither a sequence number nor the next part of record %d", k, sc.last)
			}
			s := binary.BigEndian.Uint64(k)
			if sc.records == 0 {
				sc.first = s
			}
			sc.last = s
			part = 0
			sc.records++
			sc.points += int64(pointsOf(v))
		}
		if sc.idx, err = loadIndex(tx); err != nil {
			return err
		}
		sc.seq = b.Sequence()
		if sc.last > sc.seq {
			// Never hand out a key that is already used.
			sc.seq = sc.last
			return b.SetSequence(sc.last)
		}
		return nil
	})
	return sc, err
}

// moveAside renames path to path+".corrupt-<UTC time>" and returns the new
// name.
func moveAside(path string) (string, error) {
	base := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
	aside := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, fs.ErrNotExist) {
			break
		}
		aside = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return aside, nil
}

// safeInitAndScan is initAndScan with bbolt's panics on a damaged file
// turned into an error, so the file is moved aside instead of the gateway
// crashing.
func safeInitAndScan(db *bolt.DB) (sc scan, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bbolt: %v", r)
		}
	}()
	return initAndScan(db)
}
