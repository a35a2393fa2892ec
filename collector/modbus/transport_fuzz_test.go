package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/telemetry"
)

// fuzzStream is a stream that plays back the bytes a device sent, at most
// chunk bytes per read, so that frames arrive cut anywhere. When they run
// out it answers as a link that went quiet (errWait: the deadline passed,
// without waiting for it) or, with eof, as a closed connection. It never
// blocks, so a reader that loops on it is bounded by the input.
type fuzzStream struct {
	in      []byte
	chunk   int
	eof     bool
	reads   int // readBy calls
	written [][]byte
}

func newFuzzStream(in []byte, chunk uint8, eof bool) *fuzzStream {
	return &fuzzStream{in: in, chunk: int(chunk%64) + 1, eof: eof}
}

func (s *fuzzStream) Write(b []byte) (int, error) {
	s.written = append(s.written, bytes.Clone(b))
	return len(b), nil
}

func (s *fuzzStream) readBy(b []byte, _ time.Time) (int, error) {
	s.reads++
	if len(s.in) == 0 {
		if s.eof {
			return 0, io.EOF
		}
		return 0, errWait
	}
	n := copy(b[:min(len(b), s.chunk)], s.in)
	s.in = s.in[n:]
	return n, nil
}

func (s *fuzzStream) Close() error { return nil }

// checkReads fails when a reader called readBy more often than the input
// can explain: every call but the last few consumes at least one byte.
func checkReads(t *testing.T, s *fuzzStream, in []byte) {
	t.Helper()
	if s.reads > len(in)+8 {
		t.Fatalf("%d reads for %d bytes: the reader spins", s.reads, len(in))
	}
}

// mbap returns a Modbus TCP frame.
func mbap(tid uint16, unit byte, pdu ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, tid)
	b = append(b, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pdu)+1))
	b = append(b, unit)
	return append(b, pdu...)
}

// rtuEncode returns an RTU frame built by goburrow's packager (CRC
// appended).
func rtuEncode(tb testing.TB, unit, fc byte, data ...byte) []byte {
	tb.Helper()
	h := mb.NewRTUClientHandler("")
	h.SlaveId = unit
	b, err := h.Encode(&mb.ProtocolDataUnit{FunctionCode: fc, Data: data})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// asciiEncode returns an ASCII line built by goburrow's packager (LRC,
// CR LF).
func asciiEncode(tb testing.TB, unit, fc byte, data ...byte) []byte {
	tb.Helper()
	h := mb.NewASCIIClientHandler("")
	h.SlaveId = unit
	b, err := h.Encode(&mb.ProtocolDataUnit{FunctionCode: fc, Data: data})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// FuzzTCPReader feeds an arbitrary byte stream to the Modbus TCP reader as
// the answer to a read request with transaction id tid. It checks the
// reader against a model of MBAP framing: the answer is the first frame
// whose transaction id is the request's, earlier complete frames (stale
// answers) are skipped, a header that is not Modbus TCP or a frame cut
// short breaks the link, nothing at all is a timeout. The reader takes
// exactly the frames it looked at (no byte of the next answer), never
// returns a frame with another transaction id, and what it returns is a
// well-formed frame that re-encodes to the same bytes. Bytes it read past
// the frames it looked at stay buffered for the next answer.
func FuzzTCPReader(f *testing.F) {
	answer := mbap(7, 1, 3, 4, 0x12, 0x34, 0x56, 0x78)
	f.Add(answer, uint16(7), uint8(0), false)
	f.Add(cat(mbap(6, 1, 3, 2, 0, 1), answer), uint16(7), uint8(3), false)                     // a late answer first
	f.Add(cat(mbap(6, 1, 0x83, 2), mbap(5, 1, 3, 2, 0, 1), answer), uint16(7), uint8(0), true) // two stale, one an exception
	f.Add(mbap(7, 1, 0x83, 2), uint16(7), uint8(1), false)                                     // exception
	f.Add(answer[:5], uint16(7), uint8(63), false)                                             // header cut short
	f.Add(answer[:9], uint16(7), uint8(63), true)                                              // frame cut short, then closed
	f.Add([]byte{0, 7, 0, 1, 0, 6, 1, 3, 0, 0, 0, 1}, uint16(7), uint8(63), false)             // protocol id 1
	f.Add([]byte{0, 7, 0, 0, 0xff, 0xff, 1, 3}, uint16(7), uint8(63), false)                   // length 65535
	f.Add(cat(answer, mbap(8, 1, 3, 0)), uint16(7), uint8(63), false)                          // the next answer already waiting
	f.Add([]byte{}, uint16(0), uint8(0), false)
	f.Fuzz(func(t *testing.T, in []byte, tid uint16, chunk uint8, eof bool) {
		s := newFuzzStream(in, chunk, eof)
		tr := &tcpTransport{s: s}
		req := mbap(tid, 1, 3, 0, 0, 0, 2)
		got, err := tr.roundTrip(req, time.Now().Add(time.Second))
		checkReads(t, s, in)
		if cap(tr.buf) > tcpBuffer {
			t.Fatalf("buffer grew to %d bytes for frames of at most 260", cap(tr.buf))
		}

		// The model.
		var want []byte
		wantErr := ""
		pos := 0
		for {
			rest := in[pos:]
			if len(rest) < mbapHeader {
				if len(rest) == 0 && !eof {
					wantErr = "timeout"
				} else {
					wantErr, pos = "broken", len(in)
				}
				break
			}
			length := int(binary.BigEndian.Uint16(rest[4:]))
			if rest[2] != 0 || rest[3] != 0 || length < 2 || length > 254 {
				wantErr, pos = "broken", pos+mbapHeader
				break
			}
			if len(rest) < 6+length {
				wantErr, pos = "broken", len(in)
				break
			}
			pos += 6 + length
			if binary.BigEndian.Uint16(rest) == tid {
				want = rest[:6+length]
				break
			}
		}

		// Bytes read past the frames looked at stay in the buffer for the
		// next answer; after a broken frame the link is closed.
		if taken := len(in) - len(s.in) - (tr.end - tr.off); taken != pos && wantErr != "broken" {
			t.Fatalf("took %d bytes of % x, want %d (got % x, %v)", taken, in, pos, got, err)
		}
		switch wantErr {
		case "":
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("% x: got % x, %v; want % x", in, got, err, want)
			}
		case "timeout":
			var te *timeoutError
			if got != nil || !errors.As(err, &te) || !isTimeout(err) {
				t.Fatalf("% x: got % x, %v; want a timeout", in, got, err)
			}
		case "broken":
			var re *ResponseError
			if got != nil || err == nil || isTimeout(err) || errors.As(err, &re) {
				t.Fatalf("% x: got % x, %v; want a broken link", in, got, err)
			}
		}
		if err != nil {
			return
		}
		if binary.BigEndian.Uint16(got) != tid {
			t.Fatalf("answer % x to transaction %d", got, tid)
		}
		pk := mb.NewTCPClientHandler("")
		pdu, derr := pk.Decode(got)
		if derr != nil {
			t.Fatalf("accepted % x, which does not decode: %v", got, derr)
		}
		if re := mbap(tid, got[6], append([]byte{pdu.FunctionCode}, pdu.Data...)...); !bytes.Equal(re, got) {
			t.Fatalf("accepted % x, re-encodes to % x", got, re)
		}
	})
}

// rtuModelLen is the length of an RTU answer by the serial line
// specification, from its first three bytes; 0 for a function code no
// answer has.
func rtuModelLen(b []byte) int {
	fc := b[1]
	switch {
	case fc >= 0x80:
		return 5 // unit, function|0x80, exception code, CRC
	case fc == 1, fc == 2, fc == 3, fc == 4, fc == 23:
		return 3 + int(b[2]) + 2 // unit, function, byte count, data, CRC
	case fc == 5, fc == 6, fc == 15, fc == 16:
		return 8 // unit, function, address, value or quantity, CRC
	case fc == 22:
		return 10 // unit, function, address, and mask, or mask, CRC
	}
	return 0
}

// FuzzRTUReader feeds an arbitrary byte stream to the RTU reader as the
// answer to a request of unit to function fc, and checks it against a model
// of RTU framing: the frame's length from its function code, byte count
// and exception bit; a wrong CRC is a *ResponseError with reason crc; an
// unknown function code or a frame cut short by the deadline is a
// *ResponseError with reason bad_response; complete frames of other units
// or functions (late answers) are skipped. The reader consumes exactly the
// frames it looked at, what it returns has a valid CRC, is the request's
// unit and function and re-encodes to the same bytes. A second request on
// the same reader (after the drain a failure asks for) is bounded too.
func FuzzRTUReader(f *testing.F) {
	answer := rtuEncode(f, 1, 3, 4, 0x12, 0x34, 0x56, 0x78)
	f.Add(answer, byte(1), byte(3), uint8(0), false)
	f.Add(cat(rtuEncode(f, 2, 3, 2, 0, 1), answer), byte(1), byte(3), uint8(2), false) // another slave's late answer first
	f.Add(rtuEncode(f, 1, 0x83, 2), byte(1), byte(3), uint8(63), false)                // exception
	f.Add(rtuEncode(f, 1, 1, 1, 0x05), byte(1), byte(1), uint8(63), false)             // coils
	f.Add(rtuEncode(f, 1, 6, 0, 1, 0, 7), byte(1), byte(6), uint8(63), false)          // write echo
	f.Add(rtuEncode(f, 1, 16, 0, 1, 0, 2), byte(1), byte(16), uint8(63), false)
	f.Add(rtuEncode(f, 1, 22, 0, 1, 0xff, 0, 0, 1), byte(1), byte(22), uint8(63), false)
	f.Add(rtuEncode(f, 1, 23, 2, 0, 9), byte(1), byte(23), uint8(63), false)
	bad := bytes.Clone(answer)
	bad[len(bad)-1] ^= 0xff
	f.Add(bad, byte(1), byte(3), uint8(63), false)                       // CRC error
	f.Add(answer[:6], byte(1), byte(3), uint8(1), false)                 // cut short
	f.Add(answer[:6], byte(1), byte(3), uint8(1), true)                  // cut short, then closed
	f.Add([]byte{1, 0x41, 0, 0, 0}, byte(1), byte(3), uint8(63), false)  // unknown function
	f.Add(cat(answer, []byte{0, 0}), byte(1), byte(3), uint8(63), false) // trailing noise
	f.Add([]byte{}, byte(1), byte(3), uint8(0), false)
	f.Fuzz(func(t *testing.T, in []byte, unit, fc byte, chunk uint8, eof bool) {
		fc &= 0x7f
		s := newFuzzStream(in, chunk, eof)
		tr := newRTUTransport(s, 0)
		req := rtuEncode(t, unit, fc, 0, 0, 0, 1)
		got, err := tr.roundTrip(req, time.Now().Add(time.Second))
		checkReads(t, s, in)
		if cap(tr.buf) > 512 {
			t.Fatalf("buffer grew to %d bytes for frames of at most 260", cap(tr.buf))
		}

		// The model.
		var want []byte
		wantErr := ""
		pos := 0
		for {
			rest := in[pos:]
			if len(rest) < 3 {
				switch {
				case eof:
					wantErr = "broken"
				case len(rest) == 0:
					wantErr = "timeout"
				default:
					wantErr = "bad_response"
				}
				pos = len(in)
				break
			}
			n := rtuModelLen(rest)
			if n == 0 {
				wantErr, pos = "bad_response", pos+3
				break
			}
			if len(rest) < n {
				wantErr, pos = "bad_response", len(in)
				if eof {
					wantErr = "broken"
				}
				break
			}
			frame := rest[:n]
			pos += n
			if crc := crc16(frame[:n-2]); frame[n-2] != byte(crc) || frame[n-1] != byte(crc>>8) {
				wantErr = "crc"
				break
			}
			if frame[0] == unit && frame[1]&0x7f == fc {
				want = frame
				break
			}
		}

		if consumed := len(in) - len(s.in); consumed != pos {
			t.Fatalf("read %d bytes of % x, want %d (got % x, %v)", consumed, in, pos, got, err)
		}
		var re *ResponseError
		switch wantErr {
		case "":
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("% x: got % x, %v; want % x", in, got, err, want)
			}
		case "timeout":
			var te *timeoutError
			if got != nil || !errors.As(err, &te) {
				t.Fatalf("% x: got % x, %v; want a timeout", in, got, err)
			}
		case "crc", "bad_response":
			r := telemetry.ReasonCRC
			if wantErr == "bad_response" {
				r = telemetry.ReasonBadResponse
			}
			if got != nil || !errors.As(err, &re) || re.Reason != r || reason(err) != r {
				t.Fatalf("% x: got % x, %v; want a *ResponseError (%s)", in, got, err, wantErr)
			}
		case "broken":
			if got != nil || err == nil || isTimeout(err) || errors.As(err, &re) {
				t.Fatalf("% x: got % x, %v; want a broken link", in, got, err)
			}
		}
		if err == nil {
			h := mb.NewRTUClientHandler("")
			h.SlaveId = got[0]
			if re, eerr := h.Encode(&mb.ProtocolDataUnit{FunctionCode: got[1], Data: got[2 : len(got)-2]}); eerr == nil && !bytes.Equal(re, got) {
				t.Fatalf("accepted % x, re-encodes to % x", got, re)
			}
			if err := h.Verify(req, got); err != nil {
				t.Fatalf("accepted % x: %v", got, err)
			}
		}

		// Once more on what is left: the drain after a failure reads it
		// all, and the request either gets an answer or fails, in bounds.
		s.reads = 0
		left := s.in
		_, _ = tr.roundTrip(req, time.Now().Add(time.Second))
		checkReads(t, s, left)
	})
}

// crc16 is the Modbus CRC, written out again so that the RTU model does
// not share code with the reader it checks.
func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// fuzzLink returns a link of transport tr whose connection is s, with no
// frame gap.
func fuzzLink(tr Transport, s *fuzzStream) *link {
	l := newLink(Endpoint{Transport: tr, Addr: "fuzz", Serial: DefaultSerial}, nil)
	l.gap = 0
	switch tr {
	case TCP:
		l.tr = &tcpTransport{s: s}
	case ASCII:
		l.tr = &asciiTransport{s: s}
	default:
		l.tr = newRTUTransport(s, 0)
	}
	return l
}

// FuzzASCIIReader feeds an arbitrary byte stream to a Modbus ASCII link as
// the answer to a request of unit to function fc: the line reader finds
// the ":" ... CR LF frame and the link checks it (length, unit, hex digits,
// LRC). Every failure is a *ResponseError, an *ExceptionError or a timeout
// (or, after a closed connection, the connection's error), never a panic;
// the reader's buffer stays within a frame's 513 characters plus one read.
// An answer starts with ":", ends with CR LF, appears in the stream as
// sent, has a valid LRC, is the request's unit and function, and
// re-encodes to the same line (hex digits in either case).
func FuzzASCIIReader(f *testing.F) {
	answer := asciiEncode(f, 1, 3, 4, 0x12, 0x34, 0x56, 0x78)
	f.Add(answer, byte(1), byte(3), uint8(0), false)
	f.Add(cat([]byte("\x00noise"), answer), byte(1), byte(3), uint8(2), false)
	f.Add(bytes.ToLower(answer), byte(1), byte(3), uint8(63), false)
	f.Add(asciiEncode(f, 1, 0x83, 2), byte(1), byte(3), uint8(63), false) // exception
	f.Add(asciiEncode(f, 2, 3, 2, 0, 1), byte(1), byte(3), uint8(63), false)
	f.Add(asciiEncode(f, 1, 6, 0, 1, 0, 7), byte(1), byte(6), uint8(5), false)
	bad := bytes.Clone(answer)
	bad[len(bad)-3] ^= 1 // LRC
	f.Add(bad, byte(1), byte(3), uint8(63), false)
	f.Add(answer[:9], byte(1), byte(3), uint8(63), false)
	f.Add(answer[:9], byte(1), byte(3), uint8(63), true)
	f.Add([]byte(":01\r\n"), byte(1), byte(3), uint8(63), false)
	f.Add([]byte(":01030GZZ\r\n"), byte(1), byte(3), uint8(63), false)
	f.Add(bytes.Repeat([]byte("0"), 600), byte(1), byte(3), uint8(63), false)
	f.Fuzz(func(t *testing.T, in []byte, unit, fc byte, chunk uint8, eof bool) {
		fc &= 0x7f
		s := newFuzzStream(in, chunk, eof)
		l := fuzzLink(ASCII, s)
		pk := mb.NewASCIIClientHandler("")
		pk.SlaveId = unit
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a, err := l.transactLocked(ctx, pk, fc, []byte{0, 0, 0, 1}, time.Second)
		checkReads(t, s, in)
		if at, ok := l.tr.(*asciiTransport); ok && cap(at.buf) > 2048 {
			t.Fatalf("buffer grew to %d bytes", cap(at.buf))
		}
		checkTransactErr(t, in, err, eof)
		var ex *ExceptionError
		if err != nil && !errors.As(err, &ex) {
			return
		}
		fr := a.frame
		if len(fr) < 9 || fr[0] != ':' || !bytes.HasSuffix(fr, []byte("\r\n")) || !bytes.Contains(in, fr) {
			t.Fatalf("% x: accepted %q", in, fr)
		}
		raw, herr := hex.DecodeString(string(fr[1 : len(fr)-2]))
		if herr != nil {
			t.Fatalf("accepted %q: %v", fr, herr)
		}
		var sum byte
		for _, c := range raw {
			sum += c
		}
		if sum != 0 || raw[0] != unit || raw[1]&0x7f != fc {
			t.Fatalf("accepted %q: LRC sum %d, unit %d, function %d", fr, sum, raw[0], raw[1])
		}
		if re := asciiEncode(t, raw[0], raw[1], raw[2:len(raw)-1]...); !bytes.EqualFold(re, fr) {
			t.Fatalf("accepted %q, re-encodes to %q", fr, re)
		}
		if ex != nil && (raw[1] != fc|0x80 || len(raw) != 4 || ex.Code != raw[2] || ex.Function != fc) {
			t.Fatalf("%q is %v", fr, ex)
		}
		if err == nil && (raw[1] != fc || !bytes.Equal(a.data, raw[2:len(raw)-1])) {
			t.Fatalf("%q answered with data % x", fr, a.data)
		}
	})
}

// checkTransactErr fails unless err is one a link's caller handles by
// reason: an exception, a response error, a timeout or, after the stream
// closed, the stream's error.
func checkTransactErr(t *testing.T, in []byte, err error, eof bool) {
	t.Helper()
	var ex *ExceptionError
	var re *ResponseError
	var te *timeoutError
	switch {
	case err == nil, errors.As(err, &ex), errors.As(err, &re), errors.As(err, &te):
	case eof && errors.Is(err, io.EOF):
	default:
		t.Fatalf("% x: error %T %v", in, err, err)
	}
}

// TestTCPReaderKeepsTheNextAnswer: when one read brings an answer and the
// start of the next, the second round trip finds the rest where the first
// left it, and a whole answer takes one read.
func TestTCPReaderKeepsTheNextAnswer(t *testing.T) {
	first, second := mbap(7, 1, 3, 2, 0, 1), mbap(8, 1, 3, 4, 0, 2, 0, 3)
	in := cat(first, second)
	s := newFuzzStream(in, 63, false)
	tr := &tcpTransport{s: s}
	got, err := tr.roundTrip(mbap(7, 1, 3, 0, 0, 0, 1), time.Now().Add(time.Second))
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("first: % x, %v; want % x", got, err, first)
	}
	if s.reads != 1 {
		t.Errorf("%d reads for one answer of %d bytes, want 1", s.reads, len(first))
	}
	got, err = tr.roundTrip(mbap(8, 1, 3, 0, 0, 0, 2), time.Now().Add(time.Second))
	if err != nil || !bytes.Equal(got, second) {
		t.Fatalf("second: % x, %v; want % x", got, err, second)
	}
	if tr.off != tr.end {
		t.Errorf("%d bytes left in the buffer", tr.end-tr.off)
	}
}
