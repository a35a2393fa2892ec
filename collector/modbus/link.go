package modbus

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Links is the set of physical links (serial ports, TCP connections) that
// a gateway's Modbus devices share. Devices built by New with the same
// WithLinks(l) and the same Endpoint.Link() (one serial port; one TCP
// serial server; one Modbus TCP address with several unit ids behind it)
// use one connection, and their requests take turns on it. Make one Links
// per gateway (per configuration load) and pass it to every New. It is safe
// for concurrent use.
type Links struct {
	log   *slog.Logger
	mu    sync.Mutex // guards m and plans
	m     map[string]*link
	plans map[compiledKey]*compiled
}

// NewLinks returns an empty set of links. log gets link events (opened,
// closed, broken); nil discards.
func NewLinks(log *slog.Logger) *Links {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Links{log: log, m: map[string]*link{}, plans: map[compiledKey]*compiled{}}
}

// compiled returns the compiled tags kept for k, or nil. tags are the
// configured tags k was made of; they are compared in full, so a hash that
// collides, or a field JSON leaves out, never shares a wrong plan.
func (ls *Links) compiled(k compiledKey, tags []Tag) *compiled {
	ls.mu.Lock()
	c := ls.plans[k]
	ls.mu.Unlock()
	if c != nil && reflect.DeepEqual(c.src, tags) {
		return c
	}
	return nil
}

// keep keeps c for the next driver whose tags are k's.
func (ls *Links) keep(k compiledKey, c *compiled) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.plans[k] = c
}

// get returns the link for ep, creating it on first use. Devices on one
// serial port must agree on its settings.
func (ls *Links) get(ep Endpoint) (*link, error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	key := ep.Link()
	if l, ok := ls.m[key]; ok {
		if l.ep.Serial != ep.Serial {
			return nil, fmt.Errorf("%s is already used with baud=%d data=%d parity=%s stop=%d; every device on one serial port must use the same settings",
				ep.Addr, l.ep.Serial.Baud, l.ep.Serial.DataBits, l.ep.Serial.Parity, l.ep.Serial.StopBits)
		}
		return l, nil
	}
	l := newLink(ep, ls.log.With("link", key))
	ls.m[key] = l
	return l, nil
}

// link is one physical link and the devices' turns on it.
//
// Lock order: sem (the turn on the link) before mu; no code holding mu
// waits for sem.
type link struct {
	ep  Endpoint
	log *slog.Logger
	gap time.Duration // the quiet time the line needs between frames

	sem   chan struct{} // holds one token while a device has its turn
	tr    transport     // nil when closed; guarded by sem
	quiet time.Time     // when the line last went quiet; guarded by sem
	tid   uint16        // the last Modbus TCP transaction id; guarded by sem

	mu    sync.Mutex // guards users
	users int        // connected drivers, plus Write/Inspect calls in progress

	budget atomic.Int64 // sum of the registered devices' turn lengths (timeout+pause), ns
}

// discardLog is the logger of links made without one.
var discardLog = slog.New(slog.DiscardHandler)

func newLink(ep Endpoint, log *slog.Logger) *link {
	if log == nil {
		log = discardLog
	}
	return &link{ep: ep, log: log, gap: frameGap(ep), sem: make(chan struct{}, 1)}
}

// frameGap returns the silence Modbus RTU needs between frames: 3.5
// character times, and a fixed 1.75 ms above 19200 baud (the serial line
// specification, 2.5.1.1). A TCP serial server's baud rate is unknown: it
// gets the 1.75 ms. Modbus TCP needs none.
func frameGap(ep Endpoint) time.Duration {
	switch ep.Transport {
	case RTU, ASCII:
		if ep.Serial.Baud > 19200 {
			return 1750 * time.Microsecond
		}
		bits := 1 + ep.Serial.DataBits + ep.Serial.StopBits
		if ep.Serial.Parity != "N" {
			bits++
		}
		return time.Duration(float64(time.Second) * 3.5 * float64(bits) / float64(ep.Serial.Baud))
	case RTUOverTCP:
		return 1750 * time.Microsecond
	}
	return 0
}

// shared reports whether a silent device leaves the link usable by others:
// a serial bus, directly or through a serial server.
func (l *link) shared() bool { return l.ep.Transport != TCP }

// use counts a user of the link.
func (l *link) use() {
	l.mu.Lock()
	l.users++
	l.mu.Unlock()
}

// unuse drops a user; the last one closes the connection.
func (l *link) unuse() error {
	l.mu.Lock()
	l.users--
	last := l.users == 0
	l.mu.Unlock()
	if !last {
		return nil
	}
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	l.mu.Lock()
	idle := l.users == 0
	l.mu.Unlock()
	if !idle || l.tr == nil {
		return nil
	}
	err := l.tr.Close()
	l.tr = nil
	l.log.Debug("link closed: no device uses it")
	return err
}

// lock waits for the link's turn, at most until ctx's deadline (the
// driver is collector.DeadlineBound).
func (l *link) lock(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	default:
	}
	var expired <-chan time.Time
	if dl, ok := ctx.Deadline(); ok {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		expired = t.C
	}
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", l.ep.Link(), ctx.Err())
	case <-expired:
		return fmt.Errorf("waiting for %s: %w", l.ep.Link(), context.DeadlineExceeded)
	}
}

func (l *link) unlock() { <-l.sem }

// openLocked opens the connection if it is closed. The caller holds the
// turn.
func (l *link) openLocked(ctx context.Context, timeout time.Duration) error {
	if l.tr != nil {
		return nil
	}
	switch l.ep.Transport {
	case TCP, RTUOverTCP:
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(dctx, "tcp", l.ep.Addr)
		if err != nil {
			return err
		}
		if l.ep.Transport == TCP {
			l.tr = &tcpTransport{s: connStream{c}}
		} else {
			l.tr = newRTUTransport(connStream{c}, l.gap)
		}
	case RTU, ASCII:
		s, err := openSerial(l.ep)
		if err != nil {
			return err
		}
		if l.ep.Transport == RTU {
			l.tr = newRTUTransport(s, l.gap)
		} else {
			l.tr = &asciiTransport{s: s}
		}
	default:
		return fmt.Errorf("transport %s not supported", l.ep.Transport)
	}
	l.quiet = time.Now()
	l.log.Debug("link opened")
	return nil
}

// closeLocked closes a broken connection; the next turn reopens it.
func (l *link) closeLocked(err error) {
	if l.tr == nil {
		return
	}
	_ = l.tr.Close()
	l.tr = nil
	l.log.Warn("link broken; it reopens on the next request", "err", err)
}

// answer is a device's answer to one request.
type answer struct {
	frame []byte // the whole frame as received (ADU)
	data  []byte // the PDU after the function code
}

// transactLocked sends one request PDU (function code fc, then data) to
// the device of packager pk and returns its answer. The caller holds the
// turn. deadline bounds the wait for the answer; it starts when the request
// is sent, after the frame gap.
func (l *link) transactLocked(ctx context.Context, pk mb.Packager, fc byte, data []byte, timeout time.Duration) (answer, error) {
	if err := l.openLocked(ctx, timeout); err != nil {
		return answer{}, err
	}
	if wait := time.Until(l.quiet.Add(l.gap)); wait > 0 {
		if err := sleep(ctx, wait); err != nil {
			return answer{}, err
		}
	}
	req, err := pk.Encode(&mb.ProtocolDataUnit{FunctionCode: fc, Data: data})
	if err != nil {
		return answer{}, err
	}
	if l.ep.Transport == TCP {
		l.tid++
		binary.BigEndian.PutUint16(req, l.tid)
	}
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	resp, err := l.tr.roundTrip(req, deadline)
	l.quiet = time.Now()
	if err != nil {
		if _, ok := err.(*ResponseError); !ok && !isTimeout(err) {
			l.closeLocked(err)
		}
		return answer{}, err
	}
	if err := pk.Verify(req, resp); err != nil {
		return answer{frame: resp}, &ResponseError{Reason: telemetry.ReasonBadResponse, Err: err}
	}
	pdu, err := pk.Decode(resp)
	if err != nil {
		r := telemetry.ReasonCRC
		if l.ep.Transport == TCP {
			r = telemetry.ReasonBadResponse
		}
		return answer{frame: resp}, &ResponseError{Reason: r, Err: err}
	}
	a := answer{frame: resp, data: pdu.Data}
	switch pdu.FunctionCode {
	case fc:
		return a, nil
	case fc | 0x80:
		if len(pdu.Data) != 1 {
			return a, badResponse("exception frame of %d bytes", len(pdu.Data))
		}
		return a, &ExceptionError{Function: fc, Code: pdu.Data[0]}
	}
	return a, badResponse("function %d in the answer to function %d", pdu.FunctionCode, fc)
}

// sleep waits for d or until ctx is done. If ctx's deadline comes first,
// it waits until then and returns context.DeadlineExceeded (the driver is
// collector.DeadlineBound).
func sleep(ctx context.Context, d time.Duration) error {
	var err error
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		d, err = max(time.Until(dl), 0), context.DeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
