package uplink

import (
	"context"
	"log/slog"

	"github.com/fieldgate/fieldgate/telemetry"
)

// WriteRequest is one cloud-to-device write, as any format's Command
// parses it from its command topic (JSON set topic, Sparkplug DCMD,
// ThingsBoard RPC). Every format hands its requests to the same Writer, so
// one write path decides what may be written.
type WriteRequest struct {
	ID     string // the requester's correlation id, echoed in the result; may be empty
	Source string // the format that received it: "json", "sparkplug", "thingsboard"
	Topic  string // the MQTT topic it arrived on, for the audit log
	Device string
	Tag    string
	// Value is the value as sent: a bool, an integer (a JSON number
	// without fraction or exponent, a Sparkplug integer type), a float, or
	// a string. The Writer checks it against the tag's type.
	Value telemetry.Value
}

// Write result codes: WriteOK, or why a request was rejected before
// anything was written (Reject*), or why a write that was attempted failed
// (Fail*). They are part of every format's documented result payload.
const (
	WriteOK             = "ok"
	RejectBadRequest    = "bad_request"     // the command payload could not be parsed
	RejectDisabled      = "writes_disabled" // this gateway has no write path
	RejectUnknownDevice = "unknown_device"
	RejectUnknownTag    = "unknown_tag"
	RejectNotWritable   = "not_writable" // the tag is not marked writable: true
	RejectWrongType     = "wrong_type"   // the value's type does not fit the tag
	RejectOutOfRange    = "out_of_range" // outside the tag's min/max
	RejectRateLimited   = "rate_limited" // over the tag's rate limit
	RejectBusy          = "busy"         // too many writes waiting
	// RejectAuditUnavailable: the audit log could not be written, and a
	// write that leaves no trace is not carried out.
	RejectAuditUnavailable = "audit_unavailable"
	FailDevice             = "device_error" // the device refused the write or did not answer
	FailVerify             = "verify_failed"
)

// WriteResult is the outcome of a WriteRequest.
type WriteResult struct {
	Code   string // WriteOK or one of the Reject/Fail codes
	Reason string // a sentence for people; empty when Code is WriteOK
}

// OK reports whether the write was carried out.
func (r WriteResult) OK() bool { return r.Code == WriteOK }

// Writer carries out write requests: the gateway's one write path, with
// its allow-list, range and rate checks and audit log. Write may block for
// as long as the device takes; it honours ctx.
type Writer interface {
	Write(ctx context.Context, req WriteRequest) WriteResult
}

// Rejecter is implemented by Writers that keep a record of every attempt
// (the gateway's audit log): Writes calls Reject for the requests it
// answers without calling Write (queue full, gateway stopping), and a
// format for a command it could not parse (RejectBadRequest; the request
// then holds what could be read). Reject may be called from any goroutine,
// concurrently with Write, and must not block for long.
type Rejecter interface {
	Reject(req WriteRequest, r WriteResult)
}

// DefaultWriteQueue is how many write requests may wait in Writes before
// new ones are rejected with RejectBusy.
const DefaultWriteQueue = 64

// Writes runs the write requests of the formats' Command handlers on its
// own goroutine, one at a time in arrival order, so that paho's goroutines
// (which also deliver PUBACKs) never wait for a device. A nil *Writes, or
// one made with a nil Writer, rejects every request with RejectDisabled.
type Writes struct {
	w    Writer
	jobs chan writeJob
	log  *slog.Logger
}

type writeJob struct {
	req  WriteRequest
	done func(WriteResult)
}

// NewWrites returns a Writes that hands requests to w; queue bounds the
// requests waiting (DefaultWriteQueue when 0 or less).
func NewWrites(w Writer, queue int, log *slog.Logger) *Writes {
	if queue <= 0 {
		queue = DefaultWriteQueue
	}
	return &Writes{w: w, jobs: make(chan writeJob, queue), log: log}
}

// Submit queues req and returns at once; done is called with the result
// from the Writes goroutine (or at once, from the caller's goroutine, when
// the request is rejected as busy or disabled). done typically publishes
// the result; it must not block for long.
func (ws *Writes) Submit(req WriteRequest, done func(WriteResult)) {
	if ws == nil || ws.w == nil {
		done(WriteResult{Code: RejectDisabled, Reason: "writes are not enabled on this gateway"})
		return
	}
	select {
	case ws.jobs <- writeJob{req: req, done: done}:
	default:
		ws.log.Warn("write rejected: queue full", "device", req.Device, "tag", req.Tag, "source", req.Source)
		r := WriteResult{Code: RejectBusy, Reason: "too many writes waiting; try again later"}
		ws.Reject(req, r)
		done(r)
	}
}

// Reject records a request answered without being carried out (see
// Rejecter); the caller publishes r itself. It does nothing when the
// Writer keeps no record, or ws is nil.
func (ws *Writes) Reject(req WriteRequest, r WriteResult) {
	if ws == nil {
		return
	}
	if rj, ok := ws.w.(Rejecter); ok {
		rj.Reject(req, r)
	}
}

// Run carries out queued requests until ctx is done. Requests still queued
// then are answered with RejectBusy, not written.
func (ws *Writes) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case j := <-ws.jobs:
					r := WriteResult{Code: RejectBusy, Reason: "the gateway is stopping"}
					ws.Reject(j.req, r)
					j.done(r)
				default:
					return nil
				}
			}
		case j := <-ws.jobs:
			j.done(ws.w.Write(ctx, j.req))
		}
	}
}
