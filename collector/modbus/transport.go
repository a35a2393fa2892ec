package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	mb "github.com/goburrow/modbus"
	"github.com/goburrow/serial"

	"github.com/fieldgate/fieldgate/telemetry"
)

// ExceptionError is a Modbus exception response: the device understood the
// request and refused it (code 2: illegal data address, ...). The link is
// fine; only that request's tags are affected.
type ExceptionError struct {
	Function byte // the request's function code
	Code     byte // the exception code
}

var exceptionNames = map[byte]string{
	1: "illegal function", 2: "illegal data address", 3: "illegal data value",
	4: "server device failure", 5: "acknowledge", 6: "server device busy",
	8: "memory parity error", 10: "gateway path unavailable",
	11: "gateway target device failed to respond",
}

func (e *ExceptionError) Error() string {
	if n, ok := exceptionNames[e.Code]; ok {
		return fmt.Sprintf("exception %02X (%s) to function %d", e.Code, n, e.Function)
	}
	return fmt.Sprintf("exception %02X to function %d", e.Code, e.Function)
}

// ResponseError is an answer that cannot be used: its checksum is wrong
// (Reason telemetry.ReasonCRC: RTU CRC or ASCII LRC) or it does not match
// the request (telemetry.ReasonBadResponse: wrong unit, function, length or
// echo). The link is kept; only that request's tags are affected.
type ResponseError struct {
	Reason telemetry.Quality
	Err    error
}

func (e *ResponseError) Error() string {
	if e.Reason == telemetry.ReasonCRC {
		return "corrupted answer: " + e.Err.Error()
	}
	return "answer does not match the request: " + e.Err.Error()
}

// Unwrap returns Err.
func (e *ResponseError) Unwrap() error { return e.Err }

func badResponse(format string, args ...any) *ResponseError {
	return &ResponseError{Reason: telemetry.ReasonBadResponse, Err: fmt.Errorf(format, args...)}
}

// timeoutError is a request the device did not answer in time. Like a
// net.Error it reports Timeout() == true, and it matches
// os.ErrDeadlineExceeded with errors.Is.
type timeoutError struct{ after time.Duration }

func (e *timeoutError) Error() string {
	return fmt.Sprintf("no answer within %v", e.after.Round(time.Millisecond))
}
func (e *timeoutError) Timeout() bool        { return true }
func (e *timeoutError) Is(target error) bool { return target == os.ErrDeadlineExceeded }

// isTimeout reports whether err is a timeout (ours, a net.Error's, or a
// context deadline).
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &te) && te.Timeout()
}

// reason returns the Bad reason for a failed request.
func reason(err error) telemetry.Quality {
	var ex *ExceptionError
	var re *ResponseError
	switch {
	case errors.As(err, &ex):
		return telemetry.ReasonException
	case errors.As(err, &re):
		return re.Reason
	case isTimeout(err):
		return telemetry.ReasonTimeout
	}
	return telemetry.ReasonNoConnection
}

// errWait is returned by stream.readBy when the deadline passed.
var errWait = errors.New("deadline")

// stream is a byte pipe to the devices: a serial port or a TCP connection.
type stream interface {
	io.Writer
	// readBy reads what is available into b, waiting at most until
	// deadline; it returns errWait when the deadline passed with nothing
	// read.
	readBy(b []byte, deadline time.Time) (int, error)
	Close() error
}

// connStream is a TCP connection.
type connStream struct{ net.Conn }

func (c connStream) Write(b []byte) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.Conn.Write(b)
}

func (c connStream) readBy(b []byte, deadline time.Time) (int, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := c.Read(b)
	if n == 0 && isTimeout(err) {
		return 0, errWait
	}
	if n > 0 {
		err = nil
	}
	return n, err
}

// serialTick is how long one read of a serial port blocks; readBy loops
// until its deadline.
const serialTick = 10 * time.Millisecond

// serialStream is a serial port opened with goburrow/serial.
type serialStream struct{ p serial.Port }

func openSerial(ep Endpoint) (serialStream, error) {
	p, err := serial.Open(&serial.Config{
		Address:  ep.Addr,
		BaudRate: ep.Serial.Baud,
		DataBits: ep.Serial.DataBits,
		StopBits: ep.Serial.StopBits,
		Parity:   ep.Serial.Parity,
		Timeout:  serialTick,
	})
	if err != nil {
		return serialStream{}, err
	}
	return serialStream{p}, nil
}

func (s serialStream) Write(b []byte) (int, error) { return s.p.Write(b) }
func (s serialStream) Close() error                { return s.p.Close() }

func (s serialStream) readBy(b []byte, deadline time.Time) (int, error) {
	for {
		if !time.Now().Before(deadline) {
			return 0, errWait
		}
		n, err := s.p.Read(b)
		if errors.Is(err, serial.ErrTimeout) {
			continue
		}
		if n > 0 {
			return n, nil
		}
		if err == nil {
			err = io.ErrUnexpectedEOF // a read of 0 bytes: the port went away
		}
		return 0, err
	}
}

// transport carries request frames (ADUs) to the devices of one link and
// brings back the answer to each. It is used under the link's lock.
type transport interface {
	// roundTrip sends adu and returns the answer to it, by deadline. It
	// returns a *timeoutError when none came, a *ResponseError for a
	// garbled frame, and any other error when the link is broken (the
	// caller closes it).
	roundTrip(adu []byte, deadline time.Time) ([]byte, error)
	Close() error
}

// tcpTransport speaks Modbus TCP (MBAP frames). An answer whose
// transaction id is not the request's (the late answer to a request that
// timed out) is read in full and discarded, so the connection stays in step.
//
// Reads take whatever the connection has, up to the buffer's size, so an
// answer usually arrives in one read; bytes past the current frame (the
// next frame, when a late answer and the current one arrive together) stay
// in the buffer for the next frame.
type tcpTransport struct {
	s   stream
	buf []byte // buf[off:end] read and not yet taken
	off int
	end int
}

const mbapHeader = 7

// tcpBuffer holds two frames of the largest size (7 + 253 bytes).
const tcpBuffer = 2 * 260

func (t *tcpTransport) Close() error { return t.s.Close() }

func (t *tcpTransport) roundTrip(adu []byte, deadline time.Time) ([]byte, error) {
	start := time.Now()
	if _, err := t.s.Write(adu); err != nil {
		return nil, err
	}
	for {
		if err := t.fill(mbapHeader, deadline); err != nil {
			if err == errWait && t.off == t.end {
				return nil, &timeoutError{time.Since(start)}
			}
			return nil, broken(err, "MBAP header")
		}
		h := t.buf[t.off:t.end]
		length := int(binary.BigEndian.Uint16(h[4:6]))
		if binary.BigEndian.Uint16(h[2:4]) != 0 || length < 2 || length > 254 {
			return nil, fmt.Errorf("not a Modbus TCP answer (header % x): the connection is out of step", h[:mbapHeader])
		}
		n := mbapHeader - 1 + length
		if err := t.fill(n, deadline); err != nil {
			return nil, broken(err, "MBAP frame")
		}
		frame := t.buf[t.off : t.off+n]
		t.off += n
		if t.off == t.end {
			t.off, t.end = 0, 0
		}
		if !bytes.Equal(frame[:2], adu[:2]) {
			continue // stale: the answer to an earlier request
		}
		return bytes.Clone(frame), nil
	}
}

// fill reads until the buffer holds n bytes not yet taken (n ≤ 260).
func (t *tcpTransport) fill(n int, deadline time.Time) error {
	if t.buf == nil {
		t.buf = make([]byte, tcpBuffer)
	}
	if t.end-t.off >= n {
		return nil
	}
	if len(t.buf)-t.off < n { // the frame would not fit: move it to the front
		t.end = copy(t.buf, t.buf[t.off:t.end])
		t.off = 0
	}
	for t.end-t.off < n {
		k, err := t.s.readBy(t.buf[t.end:], deadline)
		t.end += k
		if err != nil {
			return err
		}
	}
	return nil
}

// broken describes an error in the middle of a frame, after which the
// stream is out of step.
func broken(err error, where string) error {
	if err == errWait {
		return fmt.Errorf("%s cut short by the timeout: the link is out of step", where)
	}
	return err
}

// readFull reads from s into *buf until it holds n bytes.
func readFull(s stream, buf *[]byte, n int, deadline time.Time) error {
	if cap(*buf) < n {
		*buf = append(make([]byte, 0, max(n, 260)), *buf...)
	}
	for len(*buf) < n {
		k, err := s.readBy((*buf)[len(*buf):n], deadline)
		*buf = (*buf)[:len(*buf)+k]
		if err != nil {
			return err
		}
	}
	return nil
}

// rtuTransport speaks Modbus RTU on a serial line or through a TCP serial
// server. It finds a frame's end from its function code and byte count (as
// goburrow's serial transporter does), checks its CRC with goburrow's RTU
// packager, and skips complete frames from other units (a late answer of a
// slave that timed out). After a timeout or a garbled frame it drains the
// line before the next request.
type rtuTransport struct {
	s     stream
	crc   mb.Packager // goburrow's RTU packager: Decode verifies the CRC
	gap   time.Duration
	buf   []byte
	dirty bool
}

func newRTUTransport(s stream, gap time.Duration) *rtuTransport {
	return &rtuTransport{s: s, crc: mb.NewRTUClientHandler(""), gap: gap, buf: make([]byte, 0, 512)}
}

func (t *rtuTransport) Close() error { return t.s.Close() }

// drain discards whatever arrives until the line has been quiet for a
// while.
func (t *rtuTransport) drain() {
	var tmp [256]byte
	quiet := max(4*t.gap, 20*time.Millisecond)
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		if _, err := t.s.readBy(tmp[:], time.Now().Add(quiet)); err != nil {
			return
		}
	}
}

// rtuFrameLen returns the length of the RTU answer frame that starts with
// b (at least 3 bytes), or 0 when its function code is unknown.
func rtuFrameLen(b []byte) int {
	fc := b[1]
	switch {
	case fc&0x80 != 0:
		return 5
	case fc >= 1 && fc <= 4, fc == 23:
		return 5 + int(b[2])
	case fc == 5 || fc == 6 || fc == 15 || fc == 16:
		return 8
	case fc == 22:
		return 10
	}
	return 0
}

func (t *rtuTransport) roundTrip(adu []byte, deadline time.Time) ([]byte, error) {
	if t.dirty {
		t.drain()
		t.dirty = false
	}
	start := time.Now()
	if _, err := t.s.Write(adu); err != nil {
		return nil, err
	}
	t.buf = t.buf[:0]
	for {
		if err := readFull(t.s, &t.buf, 3, deadline); err != nil {
			return nil, t.fail(err, start)
		}
		n := rtuFrameLen(t.buf)
		if n == 0 {
			t.dirty = true
			return nil, badResponse("unknown function code %d in % x", t.buf[1], t.buf)
		}
		if err := readFull(t.s, &t.buf, n, deadline); err != nil {
			return nil, t.fail(err, start)
		}
		frame := t.buf[:n]
		if _, err := t.crc.Decode(frame); err != nil {
			t.dirty = true
			return nil, &ResponseError{Reason: telemetry.ReasonCRC, Err: fmt.Errorf("CRC of % x: %w", frame, err)}
		}
		if frame[0] != adu[0] || frame[1]&0x7f != adu[1] {
			// A complete frame, not ours: a late answer. Skip it.
			t.buf = append(t.buf[:0], t.buf[n:]...)
			continue
		}
		if len(t.buf) > n {
			t.dirty = true // trailing noise
		}
		return bytes.Clone(frame), nil
	}
}

// fail turns a read error into the request's error.
func (t *rtuTransport) fail(err error, start time.Time) error {
	if err != errWait {
		return err
	}
	t.dirty = true
	if len(t.buf) > 0 {
		return &ResponseError{Reason: telemetry.ReasonBadResponse, Err: fmt.Errorf("incomplete frame % x", t.buf)}
	}
	return &timeoutError{time.Since(start)}
}

// asciiTransport speaks Modbus ASCII (":" hex digits LRC CR LF) on a serial
// line; goburrow's ASCII packager encodes and checks the frames.
type asciiTransport struct {
	s     stream
	buf   []byte
	dirty bool
}

func (t *asciiTransport) Close() error { return t.s.Close() }

func (t *asciiTransport) roundTrip(adu []byte, deadline time.Time) ([]byte, error) {
	if t.dirty {
		rt := rtuTransport{s: t.s}
		rt.drain()
		t.dirty = false
	}
	start := time.Now()
	if _, err := t.s.Write(adu); err != nil {
		return nil, err
	}
	t.buf = t.buf[:0]
	var tmp [128]byte
	for {
		k, err := t.s.readBy(tmp[:], deadline)
		t.buf = append(t.buf, tmp[:k]...)
		if err == errWait {
			t.dirty = true
			if len(t.buf) > 0 {
				return nil, badResponse("incomplete frame %q", t.buf)
			}
			return nil, &timeoutError{time.Since(start)}
		}
		if err != nil {
			return nil, err
		}
		if i := bytes.IndexByte(t.buf, ':'); i > 0 {
			t.buf = append(t.buf[:0], t.buf[i:]...) // noise before the frame
		}
		if i := bytes.Index(t.buf, []byte("\r\n")); i >= 0 {
			if i+2 < len(t.buf) {
				t.dirty = true
			}
			return bytes.Clone(t.buf[:i+2]), nil
		}
		if len(t.buf) > 513 {
			t.dirty = true
			return nil, badResponse("frame longer than 513 characters")
		}
	}
}
