package sim

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/telemetry"
)

// DefaultTableSize is the number of coils, discrete inputs, input registers
// and holding registers a ModbusServer has when ModbusOptions leaves a size
// at 0: the five-digit Modicon range 1..9999 plus one.
const DefaultTableSize = 10000

// ModbusOptions sizes a ModbusServer. Requests past the end of a table get
// exception 02 (illegal data address).
type ModbusOptions struct {
	Coils    int // 0 means DefaultTableSize; at most 65536
	Discrete int
	Input    int
	Holding  int
	// Units, when set, are the only unit ids the server answers; requests
	// for others get exception 0B (gateway target failed to respond).
	// Empty answers every unit id.
	Units []uint8
}

// Modbus exception codes the server sends.
const (
	exIllegalFunction = 0x01
	exIllegalAddress  = 0x02
	exIllegalValue    = 0x03
	exTargetNoAnswer  = 0x0B
)

// ModbusServer is an in-process Modbus TCP server. It serves any number of
// listeners and connections at once; all its methods are safe for
// concurrent use.
//
// Lock order: ModbusServer has two mutexes, mu (the tables) and lmu
// (listeners and connections); no code holds both.
type ModbusServer struct {
	units []uint8

	mu       sync.RWMutex // guards the tables and tick
	coils    []bool
	discrete []bool
	input    []byte // 2 bytes per register, big-endian (wire order)
	holding  []byte
	tick     uint64

	requests  atomic.Uint64
	silent    atomic.Bool
	delayNext atomic.Int64 // nanoseconds to hold the next answer

	lmu   sync.Mutex // guards lns, conns, addr
	lns   map[net.Listener]struct{}
	conns map[net.Conn]struct{}
	addr  net.Addr
	wg    sync.WaitGroup
}

// NewModbus returns a server with all values zero. It does not listen yet:
// call Listen or Serve.
func NewModbus(opts ModbusOptions) *ModbusServer {
	size := func(n int) int {
		if n <= 0 {
			return DefaultTableSize
		}
		return min(n, 1<<16)
	}
	return &ModbusServer{
		units:    slices.Clone(opts.Units),
		coils:    make([]bool, size(opts.Coils)),
		discrete: make([]bool, size(opts.Discrete)),
		input:    make([]byte, 2*size(opts.Input)),
		holding:  make([]byte, 2*size(opts.Holding)),
		lns:      map[net.Listener]struct{}{},
		conns:    map[net.Conn]struct{}{},
	}
}

// Listen listens on addr (use "127.0.0.1:0" for a free port) and serves in
// the background until Close. Addr reports the address.
func (s *ModbusServer) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("modbus simulator: %w", err)
	}
	s.lmu.Lock()
	s.lns[ln] = struct{}{}
	s.addr = ln.Addr()
	s.wg.Add(1)
	s.lmu.Unlock()
	go func() {
		defer s.wg.Done()
		_ = s.serve(ln)
	}()
	return nil
}

// Serve accepts connections on ln until Close, then returns nil.
func (s *ModbusServer) Serve(ln net.Listener) error {
	s.lmu.Lock()
	s.lns[ln] = struct{}{}
	s.addr = ln.Addr()
	s.wg.Add(1)
	s.lmu.Unlock()
	defer s.wg.Done()
	return s.serve(ln)
}

func (s *ModbusServer) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			s.lmu.Lock()
			_, open := s.lns[ln]
			s.lmu.Unlock()
			if !open || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("modbus simulator: accept: %w", err)
		}
		s.lmu.Lock()
		if _, open := s.lns[ln]; !open {
			s.lmu.Unlock()
			_ = c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.lmu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.lmu.Lock()
			delete(s.conns, c)
			s.lmu.Unlock()
			_ = c.Close()
		}()
	}
}

// Addr returns the address of the last listener, e.g. "127.0.0.1:40123",
// or "" before Listen or Serve.
func (s *ModbusServer) Addr() string {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	if s.addr == nil {
		return ""
	}
	return s.addr.String()
}

// URL returns "tcp://" + Addr(), the form a device's modbus.url takes.
func (s *ModbusServer) URL() string { return "tcp://" + s.Addr() }

// Close stops every listener and closes every live connection, so clients
// see the device die, and waits for the server's goroutines to exit. The
// tables keep their values; Listen may be called again afterwards (on the
// same address, to bring the device back).
func (s *ModbusServer) Close() error {
	s.lmu.Lock()
	for ln := range s.lns {
		_ = ln.Close()
		delete(s.lns, ln)
	}
	for c := range s.conns {
		_ = c.Close()
	}
	s.lmu.Unlock()
	s.wg.Wait()
	return nil
}

// SetSilent makes the server read requests and never answer them (true),
// like a device that hangs with its connections open, or answer again
// (false). Silent requests are still counted.
func (s *ModbusServer) SetSilent(silent bool) { s.silent.Store(silent) }

// DelayNextAnswer holds the server's next answer for d before sending it,
// like a device that answers after the client has given up: the late answer
// arrives while the client waits for the answer to its next request. The
// requests that come meanwhile are answered after it, in order.
func (s *ModbusServer) DelayNextAnswer(d time.Duration) { s.delayNext.Store(int64(d)) }

// delay sleeps for a pending DelayNextAnswer, once.
func (s *ModbusServer) delay() {
	if d := time.Duration(s.delayNext.Swap(0)); d > 0 {
		time.Sleep(d) // the simulated device is busy; bounded by the test's d
	}
}

// Requests returns the number of requests received so far.
func (s *ModbusServer) Requests() uint64 { return s.requests.Load() }

// serveConn answers one connection's requests until it closes or sends a
// frame that is not Modbus TCP.
func (s *ModbusServer) serveConn(c net.Conn) {
	r := bufio.NewReaderSize(c, 1024)
	var req [7 + 253]byte
	resp := make([]byte, 0, 7+254)
	for {
		if _, err := io.ReadFull(r, req[:7]); err != nil {
			return
		}
		length := int(binary.BigEndian.Uint16(req[4:6]))
		if binary.BigEndian.Uint16(req[2:4]) != 0 || length < 2 || length > 254 {
			return // not Modbus TCP: drop the connection
		}
		if _, err := io.ReadFull(r, req[7:6+length]); err != nil {
			return
		}
		s.requests.Add(1)
		if s.silent.Load() {
			continue
		}
		resp = append(resp[:0], req[:7]...) // transaction, protocol, length (fixed below), unit
		resp = s.handle(resp, req[6], req[7:6+length])
		binary.BigEndian.PutUint16(resp[4:6], uint16(len(resp)-6))
		s.delay()
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// handle appends the response PDU to a request PDU for unit to dst.
func (s *ModbusServer) handle(dst []byte, unit byte, pdu []byte) []byte {
	fc := pdu[0]
	if len(s.units) > 0 && !slices.Contains(s.units, unit) {
		return append(dst, fc|0x80, exTargetNoAnswer)
	}
	ex := func(code byte) []byte { return append(dst, fc|0x80, code) }
	data := pdu[1:]
	switch fc {
	case 1, 2, 3, 4, 5, 6, 15, 16:
	default:
		return ex(exIllegalFunction)
	}
	if len(data) < 4 {
		return ex(exIllegalValue)
	}
	addr := int(binary.BigEndian.Uint16(data))
	qty := int(binary.BigEndian.Uint16(data[2:]))
	switch fc {
	case 1, 2:
		if len(data) != 4 || qty < 1 || qty > 2000 {
			return ex(exIllegalValue)
		}
		s.mu.RLock()
		defer s.mu.RUnlock()
		bits := s.coils
		if fc == 2 {
			bits = s.discrete
		}
		if addr+qty > len(bits) {
			return ex(exIllegalAddress)
		}
		n := (qty + 7) / 8
		dst = append(dst, fc, byte(n))
		start := len(dst)
		dst = append(dst, make([]byte, n)...)
		for i, b := range bits[addr : addr+qty] {
			if b {
				dst[start+i/8] |= 1 << (i % 8)
			}
		}
		return dst
	case 3, 4:
		if len(data) != 4 || qty < 1 || qty > 125 {
			return ex(exIllegalValue)
		}
		s.mu.RLock()
		defer s.mu.RUnlock()
		regs := s.holding
		if fc == 4 {
			regs = s.input
		}
		if 2*(addr+qty) > len(regs) {
			return ex(exIllegalAddress)
		}
		dst = append(dst, fc, byte(2*qty))
		return append(dst, regs[2*addr:2*(addr+qty)]...)
	case 5:
		if len(data) != 4 || (qty != 0xFF00 && qty != 0) {
			return ex(exIllegalValue)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if addr >= len(s.coils) {
			return ex(exIllegalAddress)
		}
		s.coils[addr] = qty == 0xFF00
		return append(dst, pdu[:5]...)
	case 6:
		if len(data) != 4 {
			return ex(exIllegalValue)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if 2*addr >= len(s.holding) {
			return ex(exIllegalAddress)
		}
		copy(s.holding[2*addr:], data[2:4])
		return append(dst, pdu[:5]...)
	case 15:
		if len(data) < 5 || qty < 1 || qty > 1968 || int(data[4]) != (qty+7)/8 || len(data) != 5+int(data[4]) {
			return ex(exIllegalValue)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if addr+qty > len(s.coils) {
			return ex(exIllegalAddress)
		}
		for i := range qty {
			s.coils[addr+i] = data[5+i/8]>>(i%8)&1 != 0
		}
		return append(dst, pdu[:5]...)
	default: // 16
		if len(data) < 5 || qty < 1 || qty > 123 || int(data[4]) != 2*qty || len(data) != 5+2*qty {
			return ex(exIllegalValue)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if 2*(addr+qty) > len(s.holding) {
			return ex(exIllegalAddress)
		}
		copy(s.holding[2*addr:], data[5:])
		return append(dst, pdu[:5]...)
	}
}

// SetHolding sets holding registers offset, offset+1, ... to regs. It
// panics when they run past the table, like an index out of range.
func (s *ModbusServer) SetHolding(offset uint16, regs ...uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	setRegs(s.holding, offset, regs)
}

// SetInput sets input registers offset, offset+1, ... to regs.
func (s *ModbusServer) SetInput(offset uint16, regs ...uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	setRegs(s.input, offset, regs)
}

// SetCoil sets coils offset, offset+1, ... to bits.
func (s *ModbusServer) SetCoil(offset uint16, bits ...bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.coils[offset:int(offset)+len(bits)], bits)
}

// SetDiscrete sets discrete inputs offset, offset+1, ... to bits.
func (s *ModbusServer) SetDiscrete(offset uint16, bits ...bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(s.discrete[offset:int(offset)+len(bits)], bits)
}

// Holding returns n holding registers from offset, for checking writes.
func (s *ModbusServer) Holding(offset uint16, n int) []uint16 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]uint16, n)
	for i := range out {
		out[i] = binary.BigEndian.Uint16(s.holding[2*(int(offset)+i):])
	}
	return out
}

// Coil returns coil offset, for checking writes.
func (s *ModbusServer) Coil(offset uint16) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.coils[offset]
}

func setRegs(table []byte, offset uint16, regs []uint16) {
	b := table[2*int(offset) : 2*(int(offset)+len(regs))]
	for i, r := range regs {
		binary.BigEndian.PutUint16(b[2*i:], r)
	}
}

// PutValue writes v as type typ in byte order order into table (input or
// holding) from offset, encoded by modbus.AppendRegisters: the exact inverse
// of what the gateway's driver decodes. length is the register count of a
// string and is ignored for other types.
func (s *ModbusServer) PutValue(table modbus.Table, offset uint16, typ modbus.Type, order modbus.Order, length uint16, v telemetry.Value) error {
	var buf [16]byte
	b, err := modbus.AppendRegisters(buf[:0], typ, order, length, v)
	if err != nil {
		return fmt.Errorf("modbus simulator: %s %d: %w", table, offset, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putLocked(table, offset, b)
}

// putLocked copies wire-order register bytes into a register table.
func (s *ModbusServer) putLocked(table modbus.Table, offset uint16, b []byte) error {
	var regs []byte
	switch table {
	case modbus.HoldingRegister:
		regs = s.holding
	case modbus.InputRegister:
		regs = s.input
	default:
		return fmt.Errorf("modbus simulator: %s holds bits, not registers", table)
	}
	if 2*int(offset)+len(b) > len(regs) {
		return fmt.Errorf("modbus simulator: %s %d..%d: past the table's %d registers", table, offset, int(offset)+len(b)/2-1, len(regs)/2)
	}
	copy(regs[2*int(offset):], b)
	return nil
}

// PutFloat32 writes f at offset of table in order; see PutValue.
func (s *ModbusServer) PutFloat32(table modbus.Table, offset uint16, order modbus.Order, f float32) error {
	return s.PutValue(table, offset, modbus.TypeFloat32, order, 0, telemetry.Float(float64(f)))
}

// PutFloat64 writes f at offset of table in order; see PutValue.
func (s *ModbusServer) PutFloat64(table modbus.Table, offset uint16, order modbus.Order, f float64) error {
	return s.PutValue(table, offset, modbus.TypeFloat64, order, 0, telemetry.Float(f))
}

// PutInt writes i as typ (int16, int32 or int64) at offset of table in
// order; see PutValue.
func (s *ModbusServer) PutInt(table modbus.Table, offset uint16, typ modbus.Type, order modbus.Order, i int64) error {
	return s.PutValue(table, offset, typ, order, 0, telemetry.Int(i))
}

// PutUint writes u as typ (uint16, uint32 or uint64) at offset of table in
// order; see PutValue.
func (s *ModbusServer) PutUint(table modbus.Table, offset uint16, typ modbus.Type, order modbus.Order, u uint64) error {
	return s.PutValue(table, offset, typ, order, 0, telemetry.Uint(u))
}

// PutString writes str into length registers from offset of table, two
// characters per register, NUL-padded; see PutValue.
func (s *ModbusServer) PutString(table modbus.Table, offset uint16, order modbus.Order, length uint16, str string) error {
	b, err := modbus.AppendRegisters(nil, modbus.TypeString, order, length, telemetry.String(str))
	if err != nil {
		return fmt.Errorf("modbus simulator: %s %d: %w", table, offset, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putLocked(table, offset, b)
}
