package sim

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// RTUBus is a simulated Modbus RTU serial line with several slaves on it:
// one ModbusServer per unit id. It reads request frames (checking their
// CRC), hands each to the server of its unit id and writes the answer with
// its CRC. Frames for a unit id the bus does not have, or whose server is
// silent (ModbusServer.SetSilent), get no answer at all, as from a dead
// slave; frames with a bad CRC are ignored, as real slaves do.
//
// It serves an io.ReadWriter (one end of a pseudo-terminal pair: a serial
// line) with Serve, or TCP connections carrying RTU frames (what a serial
// server, a "TCP-to-RTU bridge", does) with Listen. All its methods are safe
// for concurrent use.
type RTUBus struct {
	mu    sync.RWMutex // guards units
	units map[uint8]*ModbusServer

	corrupt atomic.Int64 // answers left to send with a wrong CRC; -1: all

	lmu   sync.Mutex // guards lns, conns, addr
	lns   map[net.Listener]struct{}
	conns map[net.Conn]struct{}
	addr  net.Addr
	wg    sync.WaitGroup
}

// NewRTUBus returns a bus with no slaves; add them with Add.
func NewRTUBus() *RTUBus {
	return &RTUBus{
		units: map[uint8]*ModbusServer{},
		lns:   map[net.Listener]struct{}{},
		conns: map[net.Conn]struct{}{},
	}
}

// Add puts s on the bus as unit, replacing any server already there. s
// need not listen on TCP itself. (If its ModbusOptions.Units is set and
// lacks unit, it answers exception 0B.)
func (b *RTUBus) Add(unit uint8, s *ModbusServer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.units[unit] = s
}

// Remove takes unit off the bus: its requests go unanswered from now on.
func (b *RTUBus) Remove(unit uint8) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.units, unit)
}

// CorruptCRC makes the next n answers go out with a wrong CRC (n < 0: every
// answer until CorruptCRC(0)), like a noisy line.
func (b *RTUBus) CorruptCRC(n int) { b.corrupt.Store(int64(n)) }

func (b *RTUBus) takeCorrupt() bool {
	for {
		n := b.corrupt.Load()
		switch {
		case n == 0:
			return false
		case n < 0:
			return true
		case b.corrupt.CompareAndSwap(n, n-1):
			return true
		}
	}
}

// Serve answers the request frames read from rw until a read fails, and
// returns nil when that is io.EOF or a closed file or connection. To stop
// it, close rw.
func (b *RTUBus) Serve(rw io.ReadWriter) error {
	var (
		buf  = make([]byte, 0, 1024)
		tmp  [512]byte
		resp = make([]byte, 0, 260)
	)
	// fill reads until buf holds at least n bytes.
	fill := func(n int) error {
		for len(buf) < n {
			k, err := rw.Read(tmp[:])
			buf = append(buf, tmp[:k]...)
			if err != nil && len(buf) < n {
				return err
			}
		}
		return nil
	}
	for {
		if err := fill(2); err != nil {
			return serveErr(err)
		}
		n := 0
		switch fc := buf[1]; fc {
		case 1, 2, 3, 4, 5, 6:
			n = 8
		case 15, 16:
			if err := fill(7); err != nil {
				return serveErr(err)
			}
			n = 9 + int(buf[6])
		}
		if n == 0 {
			buf = append(buf[:0], buf[1:]...) // not a request we know: resynchronise
			continue
		}
		if err := fill(n); err != nil {
			return serveErr(err)
		}
		frame := buf[:n]
		if CRC16(frame[:n-2]) != uint16(frame[n-2])|uint16(frame[n-1])<<8 {
			buf = append(buf[:0], buf[1:]...) // noise: resynchronise
			continue
		}
		resp = b.answer(resp[:0], frame[0], frame[1:n-2])
		buf = append(buf[:0], buf[n:]...)
		if len(resp) == 0 {
			continue
		}
		if _, err := rw.Write(resp); err != nil {
			return serveErr(err)
		}
	}
}

// answer appends the RTU answer frame to dst, or nothing for a silent or
// missing unit.
func (b *RTUBus) answer(dst []byte, unit byte, pdu []byte) []byte {
	b.mu.RLock()
	s := b.units[unit]
	b.mu.RUnlock()
	if s == nil {
		return dst
	}
	s.requests.Add(1)
	if s.silent.Load() {
		return dst
	}
	dst = append(dst, unit)
	dst = s.handle(dst, unit, pdu)
	crc := CRC16(dst)
	if b.takeCorrupt() {
		crc ^= 0xA5A5
	}
	s.delay()
	return append(dst, byte(crc), byte(crc>>8))
}

func serveErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
		return nil
	}
	return fmt.Errorf("rtu simulator: %w", err)
}

// Listen listens on addr (use "127.0.0.1:0") for TCP connections that carry
// RTU frames, as a serial server does, and serves them in the background
// until Close. Addr and URL report the address.
func (b *RTUBus) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("rtu simulator: %w", err)
	}
	b.lmu.Lock()
	b.lns[ln] = struct{}{}
	b.addr = ln.Addr()
	b.wg.Add(1)
	b.lmu.Unlock()
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.lmu.Lock()
			if _, open := b.lns[ln]; !open {
				b.lmu.Unlock()
				_ = c.Close()
				return
			}
			b.conns[c] = struct{}{}
			b.wg.Add(1)
			b.lmu.Unlock()
			go func() {
				defer b.wg.Done()
				_ = b.Serve(c)
				b.lmu.Lock()
				delete(b.conns, c)
				b.lmu.Unlock()
				_ = c.Close()
			}()
		}
	}()
	return nil
}

// Addr returns the address of the last listener, or "" before Listen.
func (b *RTUBus) Addr() string {
	b.lmu.Lock()
	defer b.lmu.Unlock()
	if b.addr == nil {
		return ""
	}
	return b.addr.String()
}

// URL returns "rtuovertcp://" + Addr(), the form a device's modbus.url takes.
func (b *RTUBus) URL() string { return "rtuovertcp://" + b.Addr() }

// Conns returns how many TCP connections are open, so tests can check that
// devices share one.
func (b *RTUBus) Conns() int {
	b.lmu.Lock()
	defer b.lmu.Unlock()
	return len(b.conns)
}

// Close stops the listeners, closes their connections and waits for their
// goroutines. It does not stop Serve calls on other ReadWriters.
func (b *RTUBus) Close() error {
	b.lmu.Lock()
	for ln := range b.lns {
		_ = ln.Close()
		delete(b.lns, ln)
	}
	for c := range b.conns {
		_ = c.Close()
	}
	b.lmu.Unlock()
	b.wg.Wait()
	return nil
}

// CRC16 returns the Modbus RTU CRC of b (polynomial 0xA001 reflected,
// initial value 0xFFFF). A frame sends it low byte first.
func CRC16(b []byte) uint16 {
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
