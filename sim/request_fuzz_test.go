package sim

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"testing"
)

// fuzzConn is a client that sends fixed bytes, at most chunk bytes per
// read, then closes its side (io.EOF); it records every Write the server
// makes. It never blocks.
type fuzzConn struct {
	net.Conn // nil: only Read and Write are used
	in       []byte
	chunk    int
	out      [][]byte
}

func (c *fuzzConn) Read(b []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(len(b), c.chunk)], c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *fuzzConn) Write(b []byte) (int, error) {
	c.out = append(c.out, bytes.Clone(b))
	return len(b), nil
}

// fuzzTableSize is the size of every table of the fuzzed servers: small,
// so that addresses past the end are easy to reach.
const fuzzTableSize = 40

func fuzzServer(units ...uint8) *ModbusServer {
	s := NewModbus(ModbusOptions{Coils: fuzzTableSize, Discrete: fuzzTableSize, Input: fuzzTableSize, Holding: fuzzTableSize, Units: units})
	s.SetHolding(0, 0x1234, 0x5678)
	s.SetInput(3, 0xBEEF)
	s.SetCoil(1, true)
	s.SetDiscrete(9, true)
	return s
}

// wantException returns the exception code the Modbus application protocol
// gives to the request pdu (function code, data) on a server whose tables
// have fuzzTableSize entries, or 0 when it is served.
func wantException(unitKnown bool, pdu []byte) byte {
	if !unitKnown {
		return 0x0B
	}
	fc, data := pdu[0], pdu[1:]
	if !slices.Contains([]byte{1, 2, 3, 4, 5, 6, 15, 16}, fc) {
		return 0x01
	}
	if len(data) < 4 {
		return 0x03
	}
	addr := int(binary.BigEndian.Uint16(data))
	qty := int(binary.BigEndian.Uint16(data[2:])) // the value, for 5 and 6
	var valid bool
	end := addr + qty
	switch fc {
	case 1, 2:
		valid = len(data) == 4 && qty >= 1 && qty <= 2000
	case 3, 4:
		valid = len(data) == 4 && qty >= 1 && qty <= 125
	case 5:
		valid, end = len(data) == 4 && (qty == 0 || qty == 0xFF00), addr+1
	case 6:
		valid, end = len(data) == 4, addr+1
	case 15:
		valid = len(data) >= 5 && qty >= 1 && qty <= 1968 && int(data[4]) == (qty+7)/8 && len(data) == 5+int(data[4])
	case 16:
		valid = len(data) >= 5 && qty >= 1 && qty <= 123 && int(data[4]) == 2*qty && len(data) == 5+2*qty
	}
	switch {
	case !valid:
		return 0x03
	case end > fuzzTableSize:
		return 0x02
	}
	return 0
}

// checkAnswer fails unless resp is the well-formed answer PDU to the
// request PDU req: the exception the protocol prescribes, or the function
// code and the byte count and data of a read, or the echo of a write.
func checkAnswer(t *testing.T, unitKnown bool, req, resp []byte) {
	t.Helper()
	fc := req[0]
	if code := wantException(unitKnown, req); code != 0 {
		if len(resp) != 2 || resp[0] != fc|0x80 || resp[1] != code {
			t.Fatalf("request % x: answer % x, want exception %02X", req, resp, code)
		}
		return
	}
	qty := int(binary.BigEndian.Uint16(req[3:]))
	switch fc {
	case 1, 2, 3, 4:
		n := (qty + 7) / 8
		if fc >= 3 {
			n = 2 * qty
		}
		if len(resp) != 2+n || resp[0] != fc || int(resp[1]) != n {
			t.Fatalf("read % x: answer % x", req, resp)
		}
	default:
		if !bytes.Equal(resp, req[:5]) {
			t.Fatalf("write % x: answer % x, want the echo", req, resp)
		}
	}
}

// FuzzSimRequest feeds an arbitrary byte stream to the simulator's Modbus
// TCP server as one client connection. It never panics or hangs, reads
// requests exactly as MBAP frames them (a header that is not Modbus TCP
// drops the connection), and answers every complete request, in order,
// with one well-formed frame: the request's transaction id, protocol 0,
// the right length, the request's unit, and the answer PDU the protocol
// prescribes (see checkAnswer); when units are restricted, others get
// exception 0B. The tables keep their sizes.
func FuzzSimRequest(f *testing.F) {
	mbap := func(tid uint16, unit byte, pdu ...byte) []byte {
		b := []byte{byte(tid >> 8), byte(tid), 0, 0, byte((len(pdu) + 1) >> 8), byte(len(pdu) + 1), unit}
		return append(b, pdu...)
	}
	f.Add(mbap(1, 1, 3, 0, 0, 0, 2), uint8(0), false)
	f.Add(cat(mbap(1, 1, 3, 0, 0, 0, 2), mbap(2, 1, 4, 0, 3, 0, 1), mbap(3, 1, 1, 0, 0, 0, 16), mbap(4, 1, 2, 0, 8, 0, 2)), uint8(5), false)
	f.Add(cat(mbap(5, 1, 5, 0, 3, 0xff, 0), mbap(6, 1, 6, 0, 2, 0xab, 0xcd), mbap(7, 1, 15, 0, 0, 0, 10, 2, 0xff, 0x03), mbap(8, 1, 16, 0, 4, 0, 2, 4, 1, 2, 3, 4)), uint8(63), false)
	f.Add(cat(mbap(9, 1, 3, 0, 39, 0, 2), mbap(10, 1, 3, 0, 0, 0, 126), mbap(11, 1, 0x2b, 0x0e, 1, 0), mbap(12, 1, 5, 0, 0, 0x12, 0x34)), uint8(63), false)
	f.Add(cat(mbap(13, 2, 3, 0, 0, 0, 1), mbap(14, 9, 3, 0, 0, 0, 1)), uint8(63), true)
	f.Add(mbap(15, 1, 3), uint8(63), false)                                             // a PDU of the function code alone
	f.Add([]byte{0, 1, 0, 0, 0, 1, 1}, uint8(63), false)                                // length 1
	f.Add([]byte{0, 1, 0, 0, 0, 0xff, 1}, uint8(63), false)                             // length 255
	f.Add(cat(mbap(16, 1, 3, 0, 0, 0, 1)[:9]), uint8(0), false)                         // cut short
	f.Add(cat(mbap(17, 1, 16, 0, 0, 0, 123, 246), make([]byte, 246)), uint8(63), false) // the longest write
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, restrict bool) {
		var units []uint8
		if restrict {
			units = []uint8{1, 2}
		}
		s := fuzzServer(units...)
		c := &fuzzConn{in: in, chunk: int(chunk%64) + 1}
		s.serveConn(c)

		// The requests, framed as the protocol frames them.
		var reqs [][]byte
		for rest := in; len(rest) >= 7; {
			length := int(binary.BigEndian.Uint16(rest[4:]))
			if rest[2] != 0 || rest[3] != 0 || length < 2 || length > 254 || len(rest) < 6+length {
				break
			}
			reqs = append(reqs, rest[:6+length])
			rest = rest[6+length:]
		}
		if len(c.out) != len(reqs) || s.Requests() != uint64(len(reqs)) {
			t.Fatalf("% x: %d requests, %d counted, %d answers", in, len(reqs), s.Requests(), len(c.out))
		}
		for i, resp := range c.out {
			req := reqs[i]
			if len(resp) < 9 || !bytes.Equal(resp[:4], req[:4]) || int(binary.BigEndian.Uint16(resp[4:])) != len(resp)-6 || resp[6] != req[6] || len(resp) > 260 {
				t.Fatalf("request % x: answer % x", req, resp)
			}
			checkAnswer(t, !restrict || req[6] == 1 || req[6] == 2, req[7:], resp[7:])
		}
		if len(s.coils) != fuzzTableSize || len(s.discrete) != fuzzTableSize || len(s.input) != 2*fuzzTableSize || len(s.holding) != 2*fuzzTableSize {
			t.Fatal("a table changed size")
		}
	})
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// FuzzSimRTURequest feeds an arbitrary byte stream to the simulator's RTU
// bus (units 1 and 2; unit 3 silent) as a serial line. It never panics or
// hangs, and it finds request frames as a resynchronising reader does: the
// length from the function code (and the byte count of 15 and 16), a frame
// with a wrong CRC or an unknown function skipped one byte at a time. Every
// complete CRC-valid request of units 1 and 2 gets exactly one answer, in
// order: a frame with a valid CRC, the request's unit, a length a client
// finds from its function code and byte count, and the answer PDU the
// protocol prescribes. Other units, the silent one and garbage get none.
func FuzzSimRTURequest(f *testing.F) {
	f.Add(rtuFrame(1, 3, 0, 0, 0, 2), uint8(0))
	f.Add(cat(rtuFrame(1, 3, 0, 0, 0, 2), rtuFrame(2, 4, 0, 3, 0, 1), rtuFrame(3, 3, 0, 0, 0, 1), rtuFrame(4, 3, 0, 0, 0, 1)), uint8(3))
	f.Add(cat(rtuFrame(1, 5, 0, 3, 0xff, 0), rtuFrame(1, 6, 0, 2, 0xab, 0xcd), rtuFrame(2, 15, 0, 0, 0, 10, 2, 0xff, 0x03), rtuFrame(2, 16, 0, 4, 0, 2, 4, 1, 2, 3, 4)), uint8(63))
	f.Add(cat([]byte{0x00, 0x07}, rtuFrame(1, 1, 0, 0, 0, 16), []byte{0x55}, rtuFrame(2, 2, 0, 8, 0, 2)), uint8(1)) // noise
	f.Add(cat(rtuFrame(1, 3, 0, 39, 0, 2), rtuFrame(1, 3, 0, 0, 0, 126), rtuFrame(1, 5, 0, 0, 0x12, 0x34)), uint8(63))
	bad := rtuFrame(1, 3, 0, 0, 0, 1)
	bad[7] ^= 1
	f.Add(cat(bad, rtuFrame(1, 3, 0, 0, 0, 1)), uint8(63))
	f.Add(rtuFrame(1, 16, 0, 0, 0, 1, 250), uint8(63)) // a byte count that runs past the end
	f.Add(rtuFrame(1, 3, 0, 0, 0, 1)[:5], uint8(63))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		bus := NewRTUBus()
		s1, s2, s3 := fuzzServer(), fuzzServer(), fuzzServer()
		s3.SetSilent(true)
		bus.Add(1, s1)
		bus.Add(2, s2)
		bus.Add(3, s3)
		c := &fuzzConn{in: in, chunk: int(chunk%64) + 1}
		if err := bus.Serve(c); err != nil {
			t.Fatalf("Serve: %v", err)
		}

		// The requests, found as a resynchronising reader finds them.
		var reqs [][]byte
		for q := 0; q+2 <= len(in); {
			n := 0
			switch in[q+1] {
			case 1, 2, 3, 4, 5, 6:
				n = 8
			case 15, 16:
				if q+7 > len(in) {
					q = len(in)
					continue
				}
				n = 9 + int(in[q+6])
			}
			if n == 0 {
				q++
				continue
			}
			if q+n > len(in) {
				break
			}
			fr := in[q : q+n]
			if crc := crc16ref(fr[:n-2]); fr[n-2] != byte(crc) || fr[n-1] != byte(crc>>8) {
				q++
				continue
			}
			if fr[0] == 1 || fr[0] == 2 {
				reqs = append(reqs, fr)
			}
			q += n
		}
		if len(c.out) != len(reqs) {
			t.Fatalf("% x: %d requests to units 1 and 2, %d answers", in, len(reqs), len(c.out))
		}
		for i, resp := range c.out {
			req := reqs[i]
			n := len(resp)
			if n < 5 || resp[0] != req[0] || n != rtuAnswerLen(resp) || n > 256 {
				t.Fatalf("request % x: answer % x", req, resp)
			}
			if crc := crc16ref(resp[:n-2]); resp[n-2] != byte(crc) || resp[n-1] != byte(crc>>8) {
				t.Fatalf("request % x: answer % x with a wrong CRC", req, resp)
			}
			checkAnswer(t, true, req[1:len(req)-2], resp[1:n-2])
		}
	})
}

// rtuAnswerLen is the length of an RTU answer as a client finds it from
// its first three bytes (the serial line specification); 0 for a function
// code that has no answer.
func rtuAnswerLen(b []byte) int {
	switch fc := b[1]; {
	case fc >= 0x80:
		return 5
	case fc >= 1 && fc <= 4:
		return 5 + int(b[2])
	case fc == 5, fc == 6, fc == 15, fc == 16:
		return 8
	}
	return 0
}

// crc16ref is the Modbus CRC, written out again so that the model does not
// share code with the bus it checks.
func crc16ref(b []byte) uint16 {
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
