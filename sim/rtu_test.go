package sim

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func TestCRC16KnownFrame(t *testing.T) {
	// Read holding registers 0..9 of unit 1, as every Modbus guide shows it.
	frame := []byte{0x01, 0x03, 0x00, 0x00, 0x00, 0x0A}
	if got := CRC16(frame); got != 0xCDC5 { // sent as C5 CD
		t.Errorf("CRC16 = %04X, want CDC5", got)
	}
}

// rtuFrame appends the CRC to b.
func rtuFrame(b ...byte) []byte {
	c := CRC16(b)
	return append(b, byte(c), byte(c>>8))
}

// exchange writes req to the bus over a pipe and returns what comes back
// within wait.
func exchange(t *testing.T, c net.Conn, req []byte, wait time.Duration) []byte {
	t.Helper()
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	var buf [300]byte
	n, _ := io.ReadAtLeast(c, buf[:], 1)
	return buf[:n]
}

func TestRTUBusAnswersByUnitAndStaysSilentForOthers(t *testing.T) {
	bus := NewRTUBus()
	s1, s2 := NewModbus(ModbusOptions{}), NewModbus(ModbusOptions{Holding: 4})
	s1.SetHolding(0, 0x1234)
	s2.SetHolding(0, 0x5678)
	bus.Add(1, s1)
	bus.Add(2, s2)
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- bus.Serve(server) }()
	defer func() {
		_ = client.Close()
		_ = server.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if got, want := exchange(t, client, rtuFrame(1, 3, 0, 0, 0, 1), time.Second), rtuFrame(1, 3, 2, 0x12, 0x34); !bytes.Equal(got, want) {
		t.Errorf("unit 1: % x, want % x", got, want)
	}
	if got, want := exchange(t, client, rtuFrame(2, 3, 0, 0, 0, 1), time.Second), rtuFrame(2, 3, 2, 0x56, 0x78); !bytes.Equal(got, want) {
		t.Errorf("unit 2: % x, want % x", got, want)
	}
	// Exception: past unit 2's four registers.
	if got, want := exchange(t, client, rtuFrame(2, 3, 0, 4, 0, 1), time.Second), rtuFrame(2, 0x83, 2); !bytes.Equal(got, want) {
		t.Errorf("exception: % x, want % x", got, want)
	}
	// Unit 3 is not there; unit 2 silent: no answer at all.
	if got := exchange(t, client, rtuFrame(3, 3, 0, 0, 0, 1), 100*time.Millisecond); len(got) != 0 {
		t.Errorf("missing unit answered % x", got)
	}
	s2.SetSilent(true)
	if got := exchange(t, client, rtuFrame(2, 3, 0, 0, 0, 1), 100*time.Millisecond); len(got) != 0 {
		t.Errorf("silent unit answered % x", got)
	}
	s2.SetSilent(false)
	// A request with a bad CRC, after noise, is ignored; the next one is
	// answered.
	bad := rtuFrame(1, 3, 0, 0, 0, 1)
	bad[len(bad)-1] ^= 0xFF
	if got := exchange(t, client, append([]byte{0x00, 0x99}, bad...), 100*time.Millisecond); len(got) != 0 {
		t.Errorf("bad CRC answered % x", got)
	}
	// A write, read back.
	if got, want := exchange(t, client, rtuFrame(1, 16, 0, 1, 0, 1, 2, 0xAB, 0xCD), time.Second), rtuFrame(1, 16, 0, 1, 0, 1); !bytes.Equal(got, want) {
		t.Errorf("write: % x, want % x", got, want)
	}
	if got := s1.Holding(1, 1)[0]; got != 0xABCD {
		t.Errorf("register 1 = %04X", got)
	}
	// Corrupted answers.
	bus.CorruptCRC(1)
	got := exchange(t, client, rtuFrame(1, 3, 0, 0, 0, 1), time.Second)
	if len(got) != 7 || CRC16(got[:5]) == uint16(got[5])|uint16(got[6])<<8 {
		t.Errorf("corrupted answer % x has a good CRC", got)
	}
	if got, want := exchange(t, client, rtuFrame(1, 3, 0, 0, 0, 1), time.Second), rtuFrame(1, 3, 2, 0x12, 0x34); !bytes.Equal(got, want) {
		t.Errorf("after the corrupted one: % x, want % x", got, want)
	}
	if s1.Requests() != 4 || s2.Requests() != 3 {
		t.Errorf("requests %d, %d; want 4, 3", s1.Requests(), s2.Requests())
	}
}
