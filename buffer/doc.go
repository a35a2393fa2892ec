// Package buffer is fieldgate's durable store-and-forward queue: every batch
// of readings the collector produces is appended here, the uplink publishes
// what it peeks, and a batch is forgotten only after the broker acknowledged
// it (at-least-once delivery).
//
// The queue is one bbolt file with two buckets. In "records" each record
// is one telemetry.Batch in the telemetry codec under the record's
// sequence number; a batch larger than about a quarter page is stored in
// parts, the first under the sequence number and the rest under the
// sequence number and a part number (record.go). "times" is the age index: for a sample of commits (one
// per granularity, see Options.MaxAge) the first sequence number the commit
// stored maps to the commit's wall-clock time and the granularity then in
// force.
//
// # Acknowledgement
//
// Ack(upTo) deletes a prefix; AckSeqs(seqs) deletes exactly the named
// records. The uplink uses AckSeqs, because it publishes live records ahead
// of an older backlog and so receives PUBACKs out of sequence order: a
// record is deleted only when its own PUBACK arrived, never because a later
// one's did. Gaps this leaves are harmless: Peek skips missing keys, and
// FirstSeq is the oldest record actually stored. With SyncInterval 0,
// AckSeqs hands its deletes to the writer, which commits them in the same
// transaction (and fsync) as the appends pending at that moment, and
// returns when that commit is durable: one write transaction per flush for
// appends and acknowledgements together, not one per PUBACK batch.
//
// # Invariants
//
//   - Keys are big-endian uint64 values from Bucket.NextSequence, one key per
//     batch (never one per reading), plus the parts' keys of a large batch,
//     which are written and deleted with it. Sequence numbers only grow: they are
//     committed with the records, so after a restart (also after SIGKILL or
//     power loss) numbering continues above the last number ever issued. Only
//     a file that is moved aside as corrupt restarts numbering at 1.
//   - Append returns only after the transaction holding its batches has been
//     committed and fsynced (Options.SyncInterval == 0). Appends that arrive
//     while a commit is running are group-committed: one bbolt transaction
//     and one fsync for everything pending, written by a single writer
//     goroutine owned by the Queue. When work arrived while the previous
//     commit ran, the writer first waits for more, four times as long as
//     that commit took but at most 8 ms, or until 64 batches or 32
//     acknowledgements are pending (queue.go, gatherMax): a little latency
//     for fewer, larger commits. With Options.AckLinger, acknowledgements
//     (AckSeqs) that find no appends pending wait up to that long for some
//     to share their commit, or until 256 are pending.
//   - Stored value bytes (Stats.Bytes) never exceed Options.MaxBytes. When an
//     append would pass the bound, the oldest records are deleted in the same
//     transaction, counted (DroppedRecords, DroppedPoints) and logged at most
//     once per throttle period. (The file bound below usually drops first.)
//   - Values are copied out (decoded) before a read transaction ends; no slice
//     into the memory map escapes a transaction.
//   - Deletes happen in their own pass after the cursor has collected the
//     keys; nothing is deleted while a cursor iterates.
//   - Transactions are short and never contain network I/O. bbolt's NoSync is
//     never set and DB.Batch is not used. NoFreelistSync is set: the
//     freelist is rebuilt at open instead of written on every commit.
//   - The file is opened with a one-second lock timeout, so a second opener
//     gets ErrLocked instead of hanging. Before bbolt maps a file, its page
//     structure is checked (check.go); an unreadable or corrupt file is
//     renamed to path+".corrupt-<UTC time>", logged as an error, and
//     replaced by a new empty file.
//   - A record whose value does not decode is logged, counted as dropped,
//     skipped by Peek and deleted, so it can never wedge the queue.
//   - With Options.MaxAge, a commit (and the writer, once per granularity
//     when idle) first deletes the records the age index proves older than
//     MaxAge, in the same transaction. Every drop, by bytes, by age or as
//     undecodable, is counted in Stats and per device (DroppedByDevice).
//   - A write transaction that fails (disk full, I/O error) changes nothing:
//     bbolt rolls it back. The failure is counted (Stats.WriteErrors), shown
//     (Stats.Failing, LastError) and logged at most every 10 s; the batches
//     of a failed commit are returned to Append's caller as the error and
//     counted in LostRecords/LostPoints, never reported as stored. The next
//     commit simply tries again, so the queue recovers by itself when space
//     returns.
//   - The file never grows past Options.MaxBytes (at least 64 pages). bbolt
//     never shrinks a file and grows it only when a write transaction needs
//     more pages than its freelist holds, so every write transaction checks,
//     after making its changes in memory and before committing, an upper
//     bound of the pages its commit can allocate against the free pages
//     and the room left under the bound, and sets bbolt's growth step so the
//     file cannot pass it. A transaction that would not fit is rolled back;
//     the queue then drops the oldest records in a transaction of its own
//     (counted like every drop) and tries again. No element is larger than
//     a quarter page, so every page bbolt allocates is a single page and
//     any free page can take it. A file already larger than the bound at
//     Open, or holding large records not stored in parts, is compacted: the
//     newest records that fit are copied into a new file that replaces it.
//     See filebound.go.
//
// # Sync modes
//
// With Options.SyncInterval == 0 ("sync: always") every Append is durable
// when it returns. With SyncInterval > 0 ("sync: interval") Append returns as
// soon as its batches are encoded and queued in memory, and the writer
// commits (with fsync, as always) at most once per interval; a crash loses at
// most the batches appended during the last interval. Both modes fsync every
// commit they make; interval mode just makes fewer of them.
//
// # Concurrency
//
// A Queue is safe for concurrent use by many goroutines. Internally mu
// guards the pending appends, the counters and the wake-up channel, and wmu
// serialises write transactions with the counter updates derived from them.
// dbmu is held shared by every bbolt transaction and exclusively only to
// let bbolt release freed pages while no reader is open. Lock order: wmu
// before dbmu, wmu before mu.
package buffer
