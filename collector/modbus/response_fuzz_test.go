package modbus

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// pduAnswers is a device that answers every request with a correctly
// framed answer (MBAP header with the request's transaction id, RTU CRC,
// ASCII LRC) around a PDU made from fuzz bytes: only the PDU is wrong, so
// every failure must come from checking the PDU.
//
// Each answer replaces whatever the previous one left unread: every
// request starts on a clean line.
type pduAnswers struct {
	fuzzStream
	tb   testing.TB
	tr   Transport
	mode uint8
	body []byte
	sent [][]byte // the answer frames, in order
	pdus [][]byte // their PDUs
}

// The ways pduAnswers makes a PDU from the body.
const (
	pduRaw       = iota // the body is the whole PDU
	pduFunction         // the request's function code, then the body
	pduFit              // the request's function code, the byte count it wants, then that many bytes of the body (zero-padded)
	pduException        // the request's function code | 0x80, then the body
	pduModes
)

func (d *pduAnswers) Write(req []byte) (int, error) {
	d.written = append(d.written, bytes.Clone(req))
	var unit, fc byte
	var want int // the data bytes a read wants; -1 for a write
	var reqPDU []byte
	switch d.tr {
	case TCP:
		unit, reqPDU = req[6], req[7:]
	case ASCII:
		raw, err := hex.DecodeString(string(req[1 : len(req)-2]))
		if err != nil {
			panic(err) // our own encoder's frame
		}
		unit, reqPDU = raw[0], raw[1:len(raw)-1]
	default:
		unit, reqPDU = req[0], req[1:len(req)-2]
	}
	fc = reqPDU[0]
	n := int(binary.BigEndian.Uint16(reqPDU[3:]))
	switch fc {
	case 1, 2:
		want = (n + 7) / 8
	case 3, 4:
		want = 2 * n
	default:
		want = -1
	}
	var pdu []byte
	switch d.mode % pduModes {
	case pduRaw:
		pdu = bytes.Clone(d.body)
		if len(pdu) == 0 {
			pdu = []byte{fc}
		}
	case pduFunction:
		pdu = append([]byte{fc}, d.body...)
	case pduFit:
		if want < 0 { // a write: its echo, with the body's first bytes over it
			pdu = append([]byte{fc}, reqPDU[1:5]...)
			copy(pdu[1:], d.body)
			break
		}
		pdu = append([]byte{fc, byte(want)}, make([]byte, want)...)
		copy(pdu[2:], d.body)
	default:
		pdu = append([]byte{fc | 0x80}, d.body...)
	}
	pdu = pdu[:min(len(pdu), 253)] // the largest PDU every framing carries
	var frame []byte
	switch d.tr {
	case TCP:
		frame = mbap(binary.BigEndian.Uint16(req), unit, pdu...)
	case ASCII:
		frame = asciiEncode(d.tb, unit, pdu[0], pdu[1:]...)
	default:
		frame = rtuEncode(d.tb, unit, pdu[0], pdu[1:]...)
	}
	d.in = append(d.in[:0], frame...)
	d.sent = append(d.sent, frame)
	d.pdus = append(d.pdus, pdu)
	return len(req), nil
}

// pduDriver returns a driver with tags of every type in the four tables,
// reading from d.
func pduDriver(t *testing.T, d *pduAnswers) *Driver {
	t.Helper()
	url := map[Transport]string{TCP: "tcp://fuzz:502", RTUOverTCP: "rtuovertcp://fuzz:4001", ASCII: "ascii:///dev/fuzz"}[d.tr]
	o := func(v uint16) *uint16 { return &v }
	b := func(v uint8) *uint8 { return &v }
	sc := 0.1
	drv, err := New("fuzz", Config{URL: url, Unit: 7, Poll: time.Second, Tags: []Tag{
		{Name: "u16", Address: 40001, Type: TypeUint16},
		{Name: "f32", Address: 40002, Type: TypeFloat32, Order: CDAB},
		{Name: "str", Address: 40004, Type: TypeString, Length: 2},
		{Name: "bit", Address: 40006, Type: TypeBool, Bit: b(3)},
		{Name: "bcd", Address: 40007, Type: TypeBCD16},
		{Name: "i16s", Address: 40008, Type: TypeInt16, Scale: &sc},
		{Name: "i32", Table: InputRegister, Offset: o(0), Type: TypeInt32, Order: DCBA},
		{Name: "u64", Table: InputRegister, Offset: o(2), Type: TypeUint64},
		{Name: "f64", Table: InputRegister, Offset: o(6), Type: TypeFloat64, Order: BADC},
		{Name: "bcd32", Table: InputRegister, Offset: o(10), Type: TypeBCD32},
		{Name: "c0", Address: 1, Type: TypeBool},
		{Name: "c9", Address: 10, Type: TypeBool},
		{Name: "d0", Address: 10001, Type: TypeBool},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	drv.link.gap = 0
	attach(drv, d)
	return drv
}

// attach gives drv's link a connection to d (the last user of a link
// closes it).
func attach(drv *Driver, d *pduAnswers) {
	switch d.tr {
	case TCP:
		drv.link.tr = &tcpTransport{s: d}
	case ASCII:
		drv.link.tr = &asciiTransport{s: d}
	default:
		drv.link.tr = newRTUTransport(d, 0)
	}
}

// framePDU returns the PDU of an answer frame the link accepted.
func framePDU(tr Transport, frame []byte) []byte {
	switch tr {
	case TCP:
		return frame[7:]
	case ASCII:
		raw, err := hex.DecodeString(string(frame[1 : len(frame)-2]))
		if err != nil {
			panic(err)
		}
		return raw[1 : len(raw)-1]
	}
	return frame[1 : len(frame)-2]
}

// FuzzResponsePDU reads a driver's whole plan (Inspect: holding and input
// registers of every type, coils, discrete inputs), then writes a register,
// a bit of a register and a coil, from a device whose answers are correctly
// framed (valid MBAP header, RTU CRC or ASCII LRC) around fuzzed PDUs. Each
// request either succeeds or fails with an *ExceptionError or a
// *ResponseError, never anything else (on RTU, a frame of another function
// is skipped as a late answer and the request times out): the link is not
// broken by a bad PDU, and nothing panics. A read succeeds exactly when the PDU is the
// request's function code, the byte count it asked for and that many bytes;
// then Data is those bytes and every tag is Good or Bad|decode (a BCD digit
// above 9). An exception is reported exactly when the PDU is the function
// code with bit 7 set and one byte, the exception code. Failed requests'
// tags are Bad with the error's reason. A write succeeds only on the exact
// echo of the request.
func FuzzResponsePDU(f *testing.F) {
	for tr := range uint8(3) {
		f.Add(tr, uint8(pduFit), []byte{0x12, 0x34, 0x42, 0xf6, 0xe9, 0x79, 'A', 'B', 'C', 0, 0, 8, 0x12, 0x34, 0xff, 0x38})
		f.Add(tr, uint8(pduFit), []byte{})
		f.Add(tr, uint8(pduException), []byte{2})
		f.Add(tr, uint8(pduException), []byte{})
		f.Add(tr, uint8(pduException), []byte{0x0b, 0})
		f.Add(tr, uint8(pduFunction), []byte{2, 0, 1})
		f.Add(tr, uint8(pduFunction), []byte{16, 0, 1})
		f.Add(tr, uint8(pduFunction), []byte{0xff})
		f.Add(tr, uint8(pduRaw), []byte{4, 4, 0, 0, 0, 1})
		f.Add(tr, uint8(pduRaw), []byte{0x90, 1})
		f.Add(tr, uint8(pduRaw), []byte{})
	}
	f.Fuzz(func(t *testing.T, trSel, mode uint8, body []byte) {
		tr := [...]Transport{TCP, RTUOverTCP, ASCII}[trSel%3]
		dev := &pduAnswers{fuzzStream: fuzzStream{chunk: 64}, tb: t, tr: tr, mode: mode, body: body}
		drv := pduDriver(t, dev)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ins, err := drv.Inspect(ctx)
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		if len(ins) != drv.Plan().Requests() || len(dev.sent) != len(ins) {
			t.Fatalf("%d inspections, %d answers, plan has %d requests", len(ins), len(dev.sent), drv.Plan().Requests())
		}
		for i, in := range ins {
			// The PDU the link got: what was sent, or on RTU the part of
			// it that the frame's length and CRC made a frame.
			pdu := dev.pdus[i]
			switch {
			case in.Frame == nil:
			case tr == RTUOverTCP && bytes.HasPrefix(dev.sent[i], in.Frame):
				pdu = framePDU(tr, in.Frame)
			case !bytes.Equal(in.Frame, dev.sent[i]):
				t.Fatalf("%s: frame % x, sent % x", tr, in.Frame, dev.sent[i])
			}
			fc := in.Request.Function()
			want := 2 * int(in.Request.Count)
			if in.Request.Table.IsBit() {
				want = (int(in.Request.Count) + 7) / 8
			}
			var ex *ExceptionError
			var re *ResponseError
			ok := len(pdu) == 2+want && pdu[0] == fc && int(pdu[1]) == want
			isEx := len(pdu) == 2 && pdu[0] == fc|0x80
			switch {
			case in.Err == nil:
				if !ok || !bytes.Equal(in.Data, pdu[2:]) {
					t.Fatalf("%s: PDU % x accepted as data % x", tr, pdu, in.Data)
				}
				for _, p := range in.Points {
					if p.Quality != telemetry.Good && p.Quality != telemetry.Bad|telemetry.ReasonDecode {
						t.Fatalf("%s: PDU % x: %s is %v", tr, pdu, p.Tag, p.Quality)
					}
				}
			case errors.As(in.Err, &ex):
				if !isEx || ex.Code != pdu[1] || ex.Function != fc {
					t.Fatalf("%s: PDU % x is %v", tr, pdu, in.Err)
				}
			case errors.As(in.Err, &re):
				if ok || isEx {
					t.Fatalf("%s: PDU % x refused: %v", tr, pdu, in.Err)
				}
			case tr == RTUOverTCP && isTimeout(in.Err) && pdu[0]&0x7f != fc:
				// A frame of another function: on a serial line, the late
				// answer to an earlier request, which the reader skips.
			default:
				t.Fatalf("%s: PDU % x: %T %v", tr, pdu, in.Err, in.Err)
			}
			if in.Err != nil {
				for _, p := range in.Points {
					if p.Quality != in.Quality() || !p.Value.IsNone() {
						t.Fatalf("%s: PDU % x, %v: %s is %v %v", tr, pdu, in.Err, p.Tag, p.Value, p.Quality)
					}
				}
			}
			if in.Err == nil && in.Frame == nil {
				t.Fatalf("%s: PDU % x accepted without a frame", tr, pdu)
			}
		}

		// Writes: function 6 (and 16 through writeBit's read, modify,
		// write) and 5. Only the echo succeeds.
		for _, w := range []struct {
			tag string
			v   telemetry.Value
		}{{"u16", telemetry.Uint(0x1234)}, {"bit", telemetry.Bool(true)}, {"c9", telemetry.Bool(true)}} {
			before := len(dev.written)
			attach(drv, dev)
			err := drv.Write(ctx, w.tag, w.v)
			var ex *ExceptionError
			var re *ResponseError
			last := len(dev.written) - 1
			skipped := tr == RTUOverTCP && isTimeout(err) && dev.pdus[last][0]&0x7f != framePDU(tr, dev.written[last])[0]
			if err != nil && !errors.As(err, &ex) && !errors.As(err, &re) && !skipped {
				t.Fatalf("%s: write %s: %T %v", tr, w.tag, err, err)
			}
			if err == nil {
				// Every request of the write was answered by its echo (or,
				// for the read of writeBit, one register).
				for i := before; i < len(dev.written); i++ {
					pdu, reqPDU := dev.pdus[i], framePDU(tr, dev.written[i])
					if tr == RTUOverTCP {
						// The frame may be a CRC-valid beginning of
						// what was sent.
						pdu = pdu[:min(len(pdu), rtuModelLen(append([]byte{7}, pdu...))-3)]
					}
					if reqPDU[0] == 3 {
						if len(pdu) != 4 || pdu[0] != 3 || pdu[1] != 2 {
							t.Fatalf("%s: write %s: read answered % x", tr, w.tag, pdu)
						}
						continue
					}
					if !bytes.Equal(pdu, reqPDU[:5]) {
						t.Fatalf("%s: write %s: % x accepted as the echo of % x", tr, w.tag, pdu, reqPDU)
					}
				}
			}
		}
	})
}
