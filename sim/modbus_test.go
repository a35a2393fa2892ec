package sim

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	mb "github.com/goburrow/modbus"

	"github.com/fieldgate/fieldgate/collector/modbus"
)

func start(t *testing.T, opts ModbusOptions) *ModbusServer {
	t.Helper()
	s := NewModbus(opts)
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func client(t *testing.T, s *ModbusServer) mb.Client {
	t.Helper()
	h := mb.NewTCPClientHandler(s.Addr())
	h.Timeout = 5 * time.Second
	h.SlaveId = 1
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return mb.NewClient(h)
}

func dial(t *testing.T, s *ModbusServer) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip sends one raw MBAP frame and returns the response PDU.
func roundTrip(t *testing.T, c net.Conn, unit byte, pdu []byte) ([]byte, error) {
	t.Helper()
	frame := []byte{0x12, 0x34, 0, 0, 0, byte(len(pdu) + 1), unit}
	frame = append(frame, pdu...)
	if _, err := c.Write(frame); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var hdr [7]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != 0x12 || hdr[1] != 0x34 || hdr[6] != unit {
		t.Fatalf("response header % x does not echo the request", hdr)
	}
	body := make([]byte, int(binary.BigEndian.Uint16(hdr[4:]))-1)
	_, err := io.ReadFull(c, body)
	return body, err
}

func TestModbusServerFunctionCodes(t *testing.T) {
	s := start(t, ModbusOptions{})
	c := client(t, s)
	if _, err := c.WriteSingleRegister(5, 0xBEEF); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteMultipleRegisters(6, 2, []byte{0, 1, 0, 2}); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadHoldingRegisters(5, 3)
	if err != nil || hex.EncodeToString(got) != "beef00010002" {
		t.Fatalf("read holding = % x, %v", got, err)
	}
	if h := s.Holding(5, 3); h[0] != 0xBEEF || h[2] != 2 {
		t.Errorf("Holding = %v", h)
	}
	if _, err := c.WriteSingleCoil(3, 0xFF00); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteMultipleCoils(10, 10, []byte{0b0000_0101, 0b10}); err != nil {
		t.Fatal(err)
	}
	got, err = c.ReadCoils(3, 17) // coils 3..19: 3, 10, 12 and 19 set
	if err != nil || hex.EncodeToString(got) != "810201" {
		t.Fatalf("read coils = % x, %v", got, err)
	}
	if !s.Coil(3) || s.Coil(4) {
		t.Error("Coil disagrees with the write")
	}
	s.SetInput(100, 1, 2, 3)
	if got, err = c.ReadInputRegisters(100, 3); err != nil || hex.EncodeToString(got) != "000100020003" {
		t.Fatalf("read input = % x, %v", got, err)
	}
	s.SetDiscrete(0, true, false, false, false, false, false, false, false, true)
	if got, err = c.ReadDiscreteInputs(0, 9); err != nil || hex.EncodeToString(got) != "0101" {
		t.Fatalf("read discrete = % x, %v", got, err)
	}
	if err := s.PutFloat32(modbus.InputRegister, 200, modbus.CDAB, 123.456); err != nil {
		t.Fatal(err)
	}
	if got, err = c.ReadInputRegisters(200, 2); err != nil || hex.EncodeToString(got) != "e97942f6" {
		t.Fatalf("float32 CDAB = % x, %v", got, err)
	}
	if s.Requests() != 9 {
		t.Errorf("Requests() = %d, want 9", s.Requests())
	}
}

func TestModbusServerExceptions(t *testing.T) {
	s := start(t, ModbusOptions{Holding: 100, Units: []uint8{1, 2}})
	c := dial(t, s)
	cases := []struct {
		name string
		unit byte
		pdu  string
		want string
	}{
		{"unknown function", 1, "2b 0e 01 00", "ab 01"},
		{"read past the table", 1, "03 00 63 00 02", "83 02"},
		{"read at the end", 1, "03 00 63 00 01", "03 02 00 00"},
		{"quantity 0", 1, "03 00 00 00 00", "83 03"},
		{"quantity 126", 1, "04 00 00 00 7e", "84 03"},
		{"2001 coils", 1, "01 00 00 07 d1", "81 03"},
		{"coil value", 1, "05 00 01 12 34", "85 03"},
		{"coil past the table", 1, "05 27 10 ff 00", "85 02"},
		{"write byte count", 1, "10 00 00 00 02 03 00 01 00", "90 03"},
		{"short request", 1, "03 00", "83 03"},
		{"other unit", 9, "03 00 00 00 01", "83 0b"},
		{"unit 2", 2, "03 00 00 00 01", "03 02 00 00"},
	}
	for _, tc := range cases {
		pdu, _ := hex.DecodeString(spaceless(tc.pdu))
		got, err := roundTrip(t, c, tc.unit, pdu)
		if err != nil || hex.EncodeToString(got) != spaceless(tc.want) {
			t.Errorf("%s: % x, %v; want %s", tc.name, got, err, tc.want)
		}
	}
}

func spaceless(s string) string {
	out := make([]byte, 0, len(s))
	for i := range len(s) {
		if s[i] != ' ' {
			out = append(out, s[i])
		}
	}
	return string(out)
}

func TestModbusServerManyConnections(t *testing.T) {
	s := start(t, ModbusOptions{})
	s.SetHolding(0, 42)
	const conns, reads = 20, 50
	var wg sync.WaitGroup
	for range conns {
		c := client(t, s)
		wg.Go(func() {
			for range reads {
				got, err := c.ReadHoldingRegisters(0, 125)
				if err != nil || len(got) != 250 || got[1] != 42 {
					t.Errorf("read = %d bytes, %v", len(got), err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := s.Requests(); n != conns*reads {
		t.Errorf("Requests() = %d, want %d", n, conns*reads)
	}
}

func TestModbusServerCloseKillsLiveConnections(t *testing.T) {
	s := start(t, ModbusOptions{})
	c := dial(t, s)
	if _, err := roundTrip(t, c, 1, []byte{3, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("read on a closed server's connection = %v, want EOF", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("the closed server still accepts connections")
	}
	// The device comes back on the same address with its values.
	s.SetHolding(0, 9)
	if err := s.Listen(addr); err != nil {
		t.Fatal(err)
	}
	got, err := roundTrip(t, dial(t, s), 1, []byte{3, 0, 0, 0, 1})
	if err != nil || hex.EncodeToString(got) != "03020009" {
		t.Fatalf("after restart: % x, %v", got, err)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

func TestModbusServerSilent(t *testing.T) {
	s := start(t, ModbusOptions{})
	c := dial(t, s)
	s.SetSilent(true)
	_, err := roundTrip(t, c, 1, []byte{3, 0, 0, 0, 1})
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silent server: %v, want a read timeout", err)
	}
	if s.Requests() != 1 {
		t.Errorf("Requests() = %d, want the silent request counted", s.Requests())
	}
	s.SetSilent(false)
	c2 := dial(t, s)
	if _, err := roundTrip(t, c2, 1, []byte{3, 0, 0, 0, 1}); err != nil {
		t.Fatalf("after silent mode: %v", err)
	}
}

func TestTickAnimatesTheDocumentedMap(t *testing.T) {
	s := NewModbus(ModbusOptions{})
	for range 3 {
		s.Tick()
	}
	h := s.Holding(0, 120)
	if counter := uint32(h[0])<<16 | uint32(h[1]); counter != 3 {
		t.Errorf("counter = %d, want 3", counter)
	}
	if h[7] != 3 || h[8]&1 != 1 {
		t.Errorf("sawtooth %d, status %#x", h[7], h[8])
	}
	for i := range 100 {
		if h[20+i] != uint16(3+i) {
			t.Fatalf("load register %d = %d, want %d", 20+i, h[20+i], 3+i)
		}
	}
	if !s.Coil(1) || !s.Coil(0) {
		t.Error("coil 1 should be set after an odd tick, coil 0 while running")
	}
	cfg := modbus.Config{URL: "tcp://127.0.0.1", Poll: time.Second, Tags: DemoTags()}
	d, err := modbus.New("demo", cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("DemoTags do not resolve: %v", err)
	}
	if n := d.Plan().Requests(); n != 4 {
		t.Errorf("DemoTags plan makes %d requests, want 4 (one per table):\n%s", n, d.Plan())
	}
}

// BenchmarkModbusServerRead120 is the simulator's cost of answering one
// 120-register read, with many connections polling in parallel while the
// values animate.
func BenchmarkModbusServerRead120(b *testing.B) {
	s := NewModbus(ModbusOptions{})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	s.Tick()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		h := mb.NewTCPClientHandler(s.Addr())
		h.Timeout = 5 * time.Second
		if err := h.Connect(); err != nil {
			b.Error(err)
			return
		}
		defer func() { _ = h.Close() }()
		c := mb.NewClient(h)
		for pb.Next() {
			if _, err := c.ReadHoldingRegisters(0, 120); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
