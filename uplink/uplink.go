package uplink

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Source is the durable queue the uplink drains. The buffer implements it.
// The uplink calls Peek and Wait from one goroutine and Ack from another;
// an implementation must be safe for that.
type Source interface {
	// Peek returns the oldest records with Seq > after, at most max, in
	// Seq order.
	Peek(after uint64, max int) ([]telemetry.Record, error)
	// Wait blocks until a record with Seq > after exists, or ctx is done
	// (then it returns ctx.Err()).
	Wait(ctx context.Context, after uint64) error
	// Ack deletes every record with Seq <= upTo.
	Ack(upTo uint64) error
}

// Encoder turns a record into a message payload. Encode appends to dst and
// returns the extended slice. It is called from one goroutine at a time.
// An error means the record can never be encoded: the uplink logs it, counts
// it in Stats.EncodeErrors and acknowledges the record without sending it,
// so one bad record cannot stall the queue.
type Encoder interface {
	Encode(dst []byte, gateway string, r *telemetry.Record) ([]byte, error)
}

// Stats is a snapshot of the uplink's counters.
type Stats struct {
	Connected    bool   // a broker connection is up
	Published    uint64 // data PUBLISHes handed to the client, re-sends included
	Acked        uint64 // data PUBLISHes whose PUBACK arrived (records acked to the Source)
	Reconnects   uint64 // successful connections after the first
	EncodeErrors uint64 // records the encoder refused (acked without sending)
	InFlight     int    // data PUBLISHes sent and not yet acknowledged
	LastError    string // the last connection or source error, "" if none yet
}

// Errors that end a connection; LastError shows their text.
var (
	errPubackTimeout = errors.New("no PUBACK within publish_timeout")
	errConnectTimout = errors.New("connect timed out")
)

const (
	drainTimeout  = 5 * time.Second        // clean shutdown: offline status + in-flight PUBACKs
	quiesce       = 250                    // ms paho may spend sending DISCONNECT
	maxTopicCache = 4096                   // devices whose topic is remembered
	sourceRetry   = 500 * time.Millisecond // first wait after a Source error
)

// Uplink publishes the records of a Source to an MQTT broker and acknowledges
// them to the Source once the broker has. Create it with New and start it
// with Run; Stats may be called from any goroutine.
type Uplink struct {
	cfg         Config
	addr        string // host:port
	useTLS      bool
	src         Source
	enc         Encoder
	log         *slog.Logger
	topic       template // bound: only {device} left
	statusTopic string

	// Used only by the Run goroutine.
	topics map[string]string // device -> topic
	bufs   chan []byte       // payload buffers whose PUBACK arrived

	running      atomic.Bool
	connected    atomic.Bool
	published    atomic.Uint64
	acked        atomic.Uint64
	reconnects   atomic.Uint64
	encodeErrors atomic.Uint64
	inFlight     atomic.Int64
	maxInFlight  atomic.Int64 // highest InFlight seen; for tests
	mu           sync.Mutex   // guards lastErr
	lastErr      string
}

// New checks cfg (see Config.Validate), applies its defaults and returns an
// Uplink that publishes what src holds, encoded by enc. log may be nil.
func New(cfg Config, src Source, enc Encoder, log *slog.Logger) (*Uplink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt config: %w", err)
	}
	if src == nil || enc == nil {
		return nil, errors.New("uplink: nil source or encoder")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := cfg.withDefaults()
	addr, useTLS, _ := brokerAddr(c.URL)
	topic, _ := parseTemplate(c.Topic, true)
	status, _ := parseTemplate(c.StatusTopic, false)
	return &Uplink{
		cfg:         c,
		addr:        addr,
		useTLS:      useTLS,
		src:         src,
		enc:         enc,
		log:         log.With("component", "uplink"),
		topic:       topic.bind(c.Prefix, c.Gateway),
		statusTopic: status.bind(c.Prefix, c.Gateway).expand(""),
		topics:      make(map[string]string),
		bufs:        make(chan []byte, c.Window),
	}, nil
}

// Stats returns a snapshot of the counters. Safe for concurrent use.
func (u *Uplink) Stats() Stats {
	u.mu.Lock()
	last := u.lastErr
	u.mu.Unlock()
	return Stats{
		Connected:    u.connected.Load(),
		Published:    u.published.Load(),
		Acked:        u.acked.Load(),
		Reconnects:   u.reconnects.Load(),
		EncodeErrors: u.encodeErrors.Load(),
		InFlight:     int(u.inFlight.Load()),
		LastError:    last,
	}
}

func (u *Uplink) setErr(err error) {
	u.mu.Lock()
	u.lastErr = err.Error()
	u.mu.Unlock()
}

// cursor is the delivery position, kept across connections.
type cursor struct {
	next  uint64 // highest Seq sent on the current connection
	acked uint64 // highest Seq acknowledged to the Source
}

// Run connects, publishes and reconnects until ctx is cancelled; then it
// publishes the offline status, waits up to 5 s for outstanding PUBACKs,
// disconnects and returns nil after all its goroutines have exited (see the
// package doc for the one paho call that can add up to PublishTimeout). Broker
// and Source failures are logged once per state change and retried with
// capped exponential backoff and jitter; Run returns an error only if it is
// already running.
func (u *Uplink) Run(ctx context.Context) error {
	if !u.running.CompareAndSwap(false, true) {
		return errors.New("uplink: Run is already running")
	}
	defer u.running.Store(false)
	u.log.Info("uplink starting", "url", u.cfg.URL, "client_id", u.cfg.ClientID, "status_topic", u.statusTopic)

	var (
		cur      cursor
		attempt  int
		failing  bool // a failure has been logged at Warn since the last connection
		everConn bool
	)
	for {
		r := u.session(ctx, &cur, everConn)
		if r.connected {
			everConn = true
		}
		if ctx.Err() != nil {
			u.log.Info("uplink stopped", "acked_seq", cur.acked)
			return nil
		}
		if r.err != nil {
			u.setErr(r.err)
		}
		if r.connected {
			failing = false
			if r.progressed || r.uptime >= u.cfg.ReconnectMax {
				attempt = 0
			}
		}
		delay := u.backoff(attempt)
		attempt++
		switch {
		case r.connected:
			u.log.Warn("connection to the broker lost; readings stay in the buffer and unacknowledged ones are sent again",
				"url", u.cfg.URL, "err", r.err, "next_retry", delay, "resend_from_seq", cur.acked+1)
			failing = true
		case !failing:
			u.log.Warn("cannot connect to the broker; readings stay in the buffer until it answers",
				"url", u.cfg.URL, "err", r.err, "next_retry", delay)
			failing = true
		default:
			u.log.Debug("cannot connect to the broker", "url", u.cfg.URL, "err", r.err, "next_retry", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			u.log.Info("uplink stopped", "acked_seq", cur.acked)
			return nil
		case <-t.C:
		}
	}
}

// backoff returns the wait before attempt n (0-based): ReconnectMin doubled
// n times, capped at ReconnectMax, then a random 50–100 % of that.
func (u *Uplink) backoff(n int) time.Duration {
	d := u.cfg.ReconnectMin
	for i := 0; i < n && d < u.cfg.ReconnectMax; i++ {
		d *= 2
	}
	d = min(d, u.cfg.ReconnectMax)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// flight is one PUBLISH waiting for its PUBACK.
type flight struct {
	seq  uint64
	tok  mqtt.Token // nil: nothing was sent (encoder refused the record)
	sent time.Time
	buf  []byte
}

// session is one broker connection. The Run goroutine is the sender; one
// acker goroutine waits for PUBACKs in send order. fail may be called from
// any goroutine, including paho's.
type session struct {
	u      *Uplink
	ctx    context.Context // cancelled by fail and by Run's ctx
	cancel context.CancelFunc
	client mqtt.Client

	failOnce sync.Once
	dead     chan struct{} // closed by fail
	err      error         // why; written before dead is closed

	connMu sync.Mutex
	conn   net.Conn // the raw connection, closed by fail

	fifo  chan flight   // sent, in order; closed by the sender when it stops
	freed chan struct{} // the acker freed window slots
	abort chan struct{} // closed by the sender when the drain deadline passes
	acked uint64        // owned by the acker; read after it exits
	done  chan struct{} // closed when the acker exits
	prog  bool          // acker saw at least one PUBACK
}

type sessionResult struct {
	connected  bool
	progressed bool
	uptime     time.Duration
	err        error
}

func (s *session) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.dead)
		s.cancel()
		s.connMu.Lock()
		if s.conn != nil {
			_ = s.conn.Close() // the broker sees no DISCONNECT, so it sends the will
		}
		s.connMu.Unlock()
	})
}

func (s *session) failed() bool {
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

// dial opens the network connection for paho (SetCustomOpenConnectionFn), so
// that cancelling the session aborts it and fail can close it.
func (s *session) dial(_ *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
	u := s.u
	ctx, cancel := context.WithTimeout(s.ctx, u.cfg.ConnectTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, err
	}
	if u.useTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if u.cfg.TLS != nil {
			cfg = u.cfg.TLS.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(u.addr)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", u.addr, err)
		}
		conn = tc
	}
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.failed() {
		_ = conn.Close()
		return nil, s.err
	}
	s.conn = conn
	return closeOnWriteError{conn, s}, nil
}

// closeOnWriteError ends the session when a write fails, and reports the
// failure to paho as net.ErrClosed. paho v1.5.1's outgoing goroutine blocks
// on an unread error channel after a write error unless the error reads "use
// of closed network connection", and Publish then waits out its write
// timeout; paho does not report a read of a closed conn either, so the
// session must notice the failure itself.
type closeOnWriteError struct {
	net.Conn
	s *session
}

func (c closeOnWriteError) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.s.fail(fmt.Errorf("write: %w", err)) // closes the conn
		err = fmt.Errorf("%w: %w", net.ErrClosed, err)
	}
	return n, err
}

func (u *Uplink) clientOptions(s *session) *mqtt.ClientOptions {
	c := u.cfg
	o := mqtt.NewClientOptions()
	o.AddBroker(c.URL)
	o.SetClientID(c.ClientID)
	o.SetUsername(c.Username)
	o.SetPassword(c.Password)
	o.SetProtocolVersion(4) // MQTT 3.1.1; no silent fallback to 3.1
	o.SetCleanSession(true) // the buffer, not the broker session, holds unacked data
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	o.SetOrderMatters(false)
	o.SetKeepAlive(c.KeepAlive)
	o.SetPingTimeout(min(c.KeepAlive, 10*time.Second))
	o.SetConnectTimeout(c.ConnectTimeout)
	o.SetWriteTimeout(c.PublishTimeout)
	o.SetBinaryWill(u.statusTopic, u.statusPayload("offline"), 1, true)
	o.SetCustomOpenConnectionFn(s.dial)
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		s.fail(fmt.Errorf("connection lost: %w", err))
	})
	return o
}

// statusPayload is the JSON of the status topic.
func (u *Uplink) statusPayload(status string) []byte {
	b, _ := json.Marshal(struct {
		Status  string `json:"status"`
		Gateway string `json:"gateway"`
		TS      int64  `json:"ts"`
	}{status, u.cfg.Gateway, time.Now().UnixMilli()})
	return b
}

// session runs one connection: connect, announce, publish until it fails or
// ctx is cancelled, then tear down. cur is updated to what was acked.
func (u *Uplink) session(ctx context.Context, cur *cursor, reconnect bool) (res sessionResult) {
	s := &session{
		u:     u,
		dead:  make(chan struct{}),
		fifo:  make(chan flight, u.cfg.Window),
		freed: make(chan struct{}, 1),
		abort: make(chan struct{}),
		done:  make(chan struct{}),
		acked: cur.acked,
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	defer s.cancel()
	s.client = mqtt.NewClient(u.clientOptions(s))

	if err := s.connect(); err != nil {
		res.err = err
		return res
	}
	start := time.Now()
	res.connected = true
	u.connected.Store(true)
	if reconnect {
		u.reconnects.Add(1)
	}
	cur.next = cur.acked
	u.log.Info("connected", "url", u.cfg.URL, "resend_from_seq", cur.acked+1)

	online := s.client.Publish(u.statusTopic, 1, true, u.statusPayload("online"))
	go s.ackLoop()
	s.send(cur)
	close(s.fifo)

	if ctx.Err() != nil && !s.failed() {
		u.shutdown(s, online)
	} else {
		<-s.done // fail has closed dead, so the acker returns promptly
		// The conn is closed already. This stops paho's goroutines; they
		// finish in the background, and the next session uses a new client.
		s.client.Disconnect(0)
	}
	u.connected.Store(false)
	u.inFlight.Store(0)
	cur.acked = s.acked
	cur.next = s.acked
	res.progressed = s.prog
	res.uptime = time.Since(start)
	if s.failed() {
		res.err = s.err
	}
	return res
}

// connect waits for CONNACK, at most ConnectTimeout, or until ctx is done.
func (s *session) connect() error {
	tok := s.client.Connect()
	t := time.NewTimer(s.u.cfg.ConnectTimeout + time.Second)
	defer t.Stop()
	var err error
	select {
	case <-tok.Done():
		err = tok.Error()
	case <-t.C:
		err = errConnectTimout
	case <-s.ctx.Done():
		err = s.ctx.Err()
	}
	if err == nil {
		return nil
	}
	s.fail(err) // closes the conn, cancels the dial
	select {    // paho's attempt ends once its conn is closed
	case <-tok.Done():
	case <-t.C:
	}
	s.client.Disconnect(0)
	return fmt.Errorf("connect to %s: %w", s.u.cfg.URL, err)
}

// shutdown is the clean end of a session: retained offline status, up to
// drainTimeout for it and for outstanding PUBACKs, then DISCONNECT (which
// tells the broker not to send the will).
func (u *Uplink) shutdown(s *session, online mqtt.Token) {
	deadline := time.NewTimer(drainTimeout)
	defer deadline.Stop()
	offline := s.client.Publish(u.statusTopic, 1, true, u.statusPayload("offline"))
	for _, tok := range []mqtt.Token{online, offline} {
		select {
		case <-tok.Done():
		case <-deadline.C:
			close(s.abort)
			<-s.done
			u.log.Warn("offline status not acknowledged in time")
			s.client.Disconnect(quiesce)
			return
		case <-s.dead:
		}
	}
	select {
	case <-s.done:
	case <-deadline.C:
		close(s.abort)
		<-s.done
		u.log.Warn("stopped with publishes unacknowledged", "in_flight", u.inFlight.Load(), "acked_seq", s.acked)
	}
	s.client.Disconnect(quiesce)
}

// send publishes records while the session is healthy and ctx is live.
func (s *session) send(cur *cursor) {
	u := s.u
	window := int64(u.cfg.Window)
	var srcErr bool
	for s.ctx.Err() == nil {
		free := window - u.inFlight.Load()
		if free <= 0 {
			select {
			case <-s.freed:
			case <-s.ctx.Done():
			}
			continue
		}
		recs, err := u.src.Peek(cur.next, int(free))
		if err == nil && len(recs) == 0 {
			err = u.src.Wait(s.ctx, cur.next)
			if err == nil || s.ctx.Err() != nil {
				continue
			}
		}
		if err != nil {
			u.setErr(err)
			if !srcErr {
				u.log.Error("reading the buffer failed", "err", err, "after_seq", cur.next)
				srcErr = true
			}
			t := time.NewTimer(sourceRetry)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
			}
			continue
		}
		srcErr = false
		for i := range recs {
			if s.ctx.Err() != nil {
				return
			}
			s.publish(&recs[i])
			cur.next = recs[i].Seq
		}
	}
}

// publish encodes and sends one record and hands it to the acker.
func (s *session) publish(r *telemetry.Record) {
	u := s.u
	var buf []byte
	select {
	case buf = <-u.bufs:
	default:
	}
	payload, err := u.enc.Encode(buf[:0], u.cfg.Gateway, r)
	f := flight{seq: r.Seq, sent: time.Now()}
	if err != nil {
		u.encodeErrors.Add(1)
		u.log.Error("cannot encode record; dropping it", "seq", r.Seq, "device", r.Batch.Device, "err", err)
	} else {
		f.buf = payload
		f.tok = s.client.Publish(u.topicFor(r.Batch.Device), u.cfg.QoS, false, payload)
		u.published.Add(1)
	}
	n := u.inFlight.Add(1)
	if n > u.maxInFlight.Load() {
		u.maxInFlight.Store(n) // only the sender raises it
	}
	s.fifo <- f // never blocks: inFlight <= Window == cap(fifo)
}

// topicFor returns the data topic of device, cached.
func (u *Uplink) topicFor(device string) string {
	if t, ok := u.topics[device]; ok {
		return t
	}
	clean := strings.Map(func(r rune) rune {
		if r == '+' || r == '#' || r == 0 {
			return '_'
		}
		return r
	}, device)
	if clean != device {
		u.log.Warn("device name has characters not allowed in a topic; replaced with _", "device", device)
	}
	if len(u.topics) >= maxTopicCache {
		clear(u.topics)
	}
	t := u.topic.expand(clean)
	u.topics[device] = t
	return t
}

// ackLoop waits for PUBACKs in send order, and acknowledges to the Source
// the prefix of records that are all complete, one Ack per run of
// completions. It exits when fifo is closed and empty, or the session fails,
// or abort is closed.
func (s *session) ackLoop() {
	defer close(s.done)
	u := s.u
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var ackErr bool
	for {
		var f flight
		var ok bool
		select {
		case f, ok = <-s.fifo:
			if !ok {
				return
			}
		case <-s.dead:
			return
		case <-s.abort:
			return
		}
		last, n := uint64(0), int64(0)
		for {
			if f.tok != nil {
				if !isDone(f.tok) {
					timer.Reset(time.Until(f.sent.Add(u.cfg.PublishTimeout)))
					select {
					case <-f.tok.Done():
					case <-timer.C:
						s.ack(last, n, &ackErr)
						s.fail(fmt.Errorf("seq %d: %w", f.seq, errPubackTimeout))
						return
					case <-s.dead:
						s.ack(last, n, &ackErr)
						return
					case <-s.abort:
						s.ack(last, n, &ackErr)
						return
					}
				}
				if err := f.tok.Error(); err != nil {
					s.ack(last, n, &ackErr)
					s.fail(fmt.Errorf("publish seq %d: %w", f.seq, err))
					return
				}
				select {
				case u.bufs <- f.buf:
				default:
				}
			}
			last, n = f.seq, n+1
			// Coalesce: take whatever else is already complete.
			select {
			case f, ok = <-s.fifo:
			default:
				ok = false
			}
			if !ok {
				break
			}
			if f.tok != nil && !isDone(f.tok) {
				s.ack(last, n, &ackErr)
				last, n = 0, 0
			}
		}
		s.ack(last, n, &ackErr)
	}
}

func isDone(t mqtt.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

// ack acknowledges records up to last (n of them on this connection) to the
// Source and frees their window slots.
func (s *session) ack(last uint64, n int64, logged *bool) {
	if n == 0 {
		return
	}
	u := s.u
	if err := u.src.Ack(last); err != nil {
		u.setErr(err)
		if !*logged {
			u.log.Error("acknowledging to the buffer failed; records stay until a later ack", "err", err, "seq", last)
			*logged = true
		}
	} else {
		*logged = false
	}
	s.acked = last
	s.prog = true
	u.acked.Add(uint64(n))
	u.inFlight.Add(-n)
	select {
	case s.freed <- struct{}{}:
	default:
	}
}
