// Package uplink publishes the gateway's buffered telemetry to an MQTT broker
// and tells the buffer what it may forget.
//
// # Delivery
//
// When a connection is established the uplink reads the Source's last
// sequence number, the mark. Records at or below it are the backlog: they
// were committed before this connection existed (during an outage, before a
// restart, or in flight when the previous connection broke) and are
// published with historical=true. Records above it are live.
//
// The sender keeps two cursors. Whenever the in-flight window has room it
// first publishes every live record there is (in sequence order), then fills
// what is left of the window from the backlog (oldest first) — but never the
// last half of the window, which stays free for live records — at most
// Config.ReplayRate backlog records per second if that is set (a token
// bucket holding 100 ms worth). So live data keeps its latency while a
// backlog drains, and the backlog uses the rest of the link. Each stream is
// in sequence order, so per device each stream is in read order; a
// historical record can arrive after newer live ones.
//
// Each record is encoded by an Encoder (uplink/jsonenc for the JSON format)
// and published with QoS 1 to the topic template with {device} set to the
// record's device. An acker goroutine waits for PUBACKs in send order and
// hands each run of completed records to one of two ack workers, which call
// Source.AckSeqs naming exactly those records (two, so that one run can join
// the buffer's next group commit while the other waits for its fsync). A
// record's window slot is freed at its PUBACK; from then until AckSeqs
// returns it is settling (Stats.Settling). The buffer may hold
// acknowledgements back for the next poll's commit (its AckLinger); the
// sender stops while in-flight and settling records fill 8 windows, and
// then asks the Source to commit them at once (AckCommitter), as it does
// when a connection ends. Because live and backlog interleave, the
// acknowledged records are not a prefix; AckSeqs deletes only what it names.
// A record is acknowledged to the Source only after its own PUBACK arrived
// (or, if the encoder refused it, at once, counted in EncodeErrors).
//
// If a PUBACK takes longer than Config.PublishTimeout, or paho reports the
// connection lost (a write error, or no PINGRESP: see Dead links), the
// connection is closed without DISCONNECT (so the broker publishes the last
// will). The next connection starts again from what the Source holds: the
// records not yet acknowledged, now all backlog; it starts only once every
// acknowledgement of the old connection has returned. Delivery is therefore
// at-least-once: a platform can see at most Window messages again after
// each reconnect (those in flight at the break), identified by their seq,
// and after a crash at most 8 windows (those in flight or settling).
//
// # Dead links
//
// A link that stops forwarding without closing (a NAT or firewall that
// dropped the flow, a dead radio) is noticed by the MQTT keepalive: paho
// sends PINGREQ once nothing was received for KeepAlive, and the ping
// timeout is set so that the connection is declared lost at the next check
// of paho's pinger: within 1.5 × KeepAlive for KeepAlive <= 10 s or >= 20 s
// (KeepAlive + 10 s in between; paho checks every KeepAlive/4, at most every
// 5 s). While records are in flight, PublishTimeout bounds the wait too.
// Nothing sent into the dead link is acknowledged.
//
// # Connection state machine
//
// The uplink runs its own state machine instead of paho's auto-reconnect
// (STYLE rule 15): every connection uses a new paho client with a clean
// session, a fixed client id, no auto-reconnect and no connect retry. A
// failed or lost connection is retried with exponential backoff and jitter
// between Config.ReconnectMin and Config.ReconnectMax (1 s .. 1 min). Failures
// are logged once per state change (connected -> lost, first failed attempt);
// repeated failures log at debug level. No paho token is waited on without a
// timer or a context.
//
// On every connection the uplink publishes a retained
// {"status":"online","gateway":...,"ts":...} to the status topic, whose last
// will is a retained "offline". When Run's context is cancelled it stops
// sending, publishes a retained "offline", waits up to 5 s for the offline
// PUBACK and the outstanding data PUBACKs (acknowledging to the Source what
// arrives), then disconnects. Records not acknowledged stay in the buffer.
//
// # Limits
//
// paho v1.5.1's Publish hands each packet to its writer over an unbuffered
// channel and cannot be cancelled; when a connection dies in the middle of
// a burst, the one Publish call in progress can block until its write
// timeout, which the uplink sets to Config.PublishTimeout. A reconnect after
// such a loss can therefore start up to PublishTimeout late, and Run can
// return up to PublishTimeout + 5 s after its context is cancelled. The
// goroutines paho started for a dead connection finish in the background
// after the session has moved on to a new client. A connection wrapper
// closes the socket on the first write error, so that paho does not wait on
// it any longer than that.
//
// # Goroutines
//
// Run's goroutine connects, reads the Source (Peek, Wait) and publishes. Per
// connection one more goroutine waits for PUBACKs in send order and two ack
// workers call Source.AckSeqs; paho calls the connection-lost handler from
// its own goroutine. Run returns after the PUBACK goroutine and the ack
// workers have exited. They share the window
// and settling counts (atomic), a FIFO channel of sent messages, and the session's failure
// state (sync.Once plus a closed channel); the only mutex guards
// Stats.LastError.
package uplink
