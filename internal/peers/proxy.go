package peers

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 between a client (the gateway) and a
// target (the broker) that the test can break in the ways a network
// breaks:
//
//   - Cut resets every open connection (RST, not FIN);
//   - Hold refuses new connections (each is reset at once) while open ones
//     keep working;
//   - Blackhole stops forwarding on the connections open now without
//     closing them, and refuses new ones, as a dead route would;
//   - Stall holds back everything the target sends (an MQTT broker's
//     PUBACKs, say) while the client's data still goes through;
//   - SetRate slows what is forwarded towards the target.
//
// Its methods are safe for concurrent use. It is closed when the test
// ends.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	held  bool                  // new connections are refused
	hole  chan struct{}         // closed while forwarding; open while black-holed
	stall chan struct{}         // closed while forwarding from the target; open while stalled
	conns map[net.Conn]struct{} // both ends of every open connection
	rate  int                   // bytes per second towards the target; 0 unlimited
}

// StartProxy listens on a free loopback port and forwards every
// connection to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, hole: make(chan struct{}), stall: make(chan struct{})}
	close(p.hole)
	close(p.stall)
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Blackhole(false)
		p.Stall(false)
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr returns the proxy's host:port, for the client to dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		held := p.held
		p.mu.Unlock()
		if held {
			reset(c)
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			reset(c)
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, c, true)
		go p.pipe(c, up, false)
	}
}

// pipe copies src to dst until either end fails, then resets both. While
// the proxy is black-holed, data read from a connection that was open when
// the black hole started waits until it ends; while it is stalled, data
// from the target waits.
func (p *Proxy) pipe(dst, src net.Conn, toTarget bool) {
	defer p.wg.Done()
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hole, stall, rate := p.hole, p.stall, p.rate
			_, open := p.conns[src]
			p.mu.Unlock()
			if open {
				<-hole
			}
			if !toTarget {
				<-stall
			}
			if toTarget && rate > 0 {
				time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
	reset(dst)
	reset(src)
}

// reset closes c with an RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Cut resets every open connection (RST, not FIN), as a failed link would.
// New connections are accepted unless Hold or Blackhole is on.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		reset(c)
	}
}

// Hold refuses (on) or accepts again (off) new connections: each new one
// is reset at once. Open connections keep working; Hold(true) then Cut()
// takes the link away until Hold(false).
func (p *Proxy) Hold(on bool) {
	p.mu.Lock()
	p.held = on
	p.mu.Unlock()
}

// Blackhole starts (on) or ends (off) swallowing everything on the
// connections open now: nothing is forwarded and nothing is closed, so only
// the endpoints' own timeouts notice. While on, new connections are
// refused, as a dead route would; when it ends, what was held back is
// forwarded.
func (p *Proxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = on
	if on {
		select {
		case <-p.hole:
			p.hole = make(chan struct{})
		default: // already black-holed
		}
		return
	}
	select {
	case <-p.hole:
	default:
		close(p.hole)
	}
}

// Stall holds back (on) or releases (off) everything the target sends, on
// every connection, open or new; what the client sends is still
// forwarded.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.stall:
		if on {
			p.stall = make(chan struct{})
		}
	default:
		if !on {
			close(p.stall)
		}
	}
}

// SetRate limits what is forwarded towards the target to about
// bytesPerSec bytes a second on each connection; 0 lifts the limit.
func (p *Proxy) SetRate(bytesPerSec int) {
	p.mu.Lock()
	p.rate = bytesPerSec
	p.mu.Unlock()
}
