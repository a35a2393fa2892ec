// Package uplink publishes the gateway's buffered telemetry to an MQTT broker
// and tells the buffer what it may forget.
//
// # Delivery
//
// The uplink drains a Source (the durable buffer) in sequence order. It keeps
// a cursor, the highest sequence number sent on the current connection, and
// asks the Source for records after it, as many as the in-flight window has
// room for. Each record is encoded by an Encoder (uplink/jsonenc for the JSON
// format) and published with QoS 1 to the topic template with {device} set
// to the record's device. When PUBACKs arrive, the uplink acknowledges to the
// Source the longest prefix of sent records that are all acknowledged, one
// Source.Ack call per run of completions. A record is acknowledged to the
// Source only after its PUBACK arrived.
//
// If a PUBACK takes longer than Config.PublishTimeout, or paho reports the
// connection lost, the connection is closed without DISCONNECT (so the broker
// publishes the last will), the cursor goes back to the acknowledged prefix
// and everything after it is sent again on the next connection. Delivery is
// therefore at-least-once: a platform can see at most Window messages again
// after each reconnect, identified by their seq.
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
// connection one more goroutine waits for PUBACKs in send order and calls
// Source.Ack; paho calls the connection-lost handler from its own goroutine.
// Run returns after the PUBACK goroutine has exited. The two share the window
// count (atomic), a FIFO channel of sent messages, and the session's failure
// state (sync.Once plus a closed channel); the only mutex guards
// Stats.LastError.
package uplink
