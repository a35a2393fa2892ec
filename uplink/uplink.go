package uplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Source is the durable queue the uplink drains. The buffer implements it.
// The uplink calls PeekInto and Depth from one goroutine, Wait from
// another, and AckSeqs from two more (Depth also from Stats); an
// implementation must be safe for that.
type Source interface {
	// PeekInto returns the oldest records with Seq > after, at most max,
	// in Seq order, as dst[:0] extended; it may decode into dst's records
	// (their Points arrays), which the uplink does not use again once it
	// passes dst back.
	PeekInto(dst []telemetry.Record, after uint64, max int) ([]telemetry.Record, error)
	// Wait blocks until a record with Seq > after exists, or ctx is done
	// (then it returns ctx.Err()).
	Wait(ctx context.Context, after uint64) error
	// AckSeqs deletes exactly the records with these sequence numbers (in
	// ascending order); numbers that are not stored are ignored. The
	// uplink calls it only with records whose PUBACK arrived.
	AckSeqs(seqs []uint64) error
	// Depth returns the number of records stored and the highest sequence
	// number ever issued (0 if none).
	Depth() (records int64, lastSeq uint64)
}

// AckCommitter is implemented by a Source whose AckSeqs may wait for more
// work to share a commit with (the buffer's Options.AckLinger). The uplink
// calls CommitAcks when it is held back by records waiting for AckSeqs, and
// when a connection ends, so that those waits end now. CommitAcks must
// also cover AckSeqs calls made soon after it (the buffer's covers those
// until its next commit of appends).
type AckCommitter interface {
	CommitAcks()
}

// Encoder turns a record into a message payload. Encode appends to dst and
// returns the extended slice. historical is true for a record replayed from
// the backlog: one committed before the current broker connection was
// established (see the package documentation). Encode is called from one
// goroutine at a time. An error means the record can never be encoded: the
// uplink logs it, counts it in Stats.EncodeErrors and acknowledges the
// record without sending it, so one bad record cannot stall the queue.
type Encoder interface {
	Encode(dst []byte, gateway string, r *telemetry.Record, historical bool) ([]byte, error)
}

// Stats is a snapshot of the uplink's counters.
type Stats struct {
	Connected    bool   // a broker connection is up
	Published    uint64 // data PUBLISHes handed to the client, re-sends included
	Acked        uint64 // data PUBLISHes whose PUBACK arrived (records acked to the Source)
	Reconnects   uint64 // successful connections after the first
	EncodeErrors uint64 // records the encoder refused (acked without sending)
	InFlight     int    // data PUBLISHes sent and not yet acknowledged by the broker
	MaxInFlight  int    // the highest InFlight since New; never above Config.Window
	// Settling counts records the broker has acknowledged whose deletion
	// from the Source has not returned yet (at most 8 × Config.Window,
	// less InFlight).
	Settling  int
	LastError string // the last connection or source error, "" if none yet

	// BacklogRecords is the backlog still to replay: while connected, the
	// records committed before this connection was established that have
	// not been PUBACKed yet (records the buffer dropped meanwhile are
	// subtracted once the replay reaches the end); while disconnected,
	// every stored record.
	BacklogRecords int64
	ReplayedTotal  uint64 // backlog records PUBACKed (sent with historical=true)
	LiveTotal      uint64 // live records PUBACKed (committed during their connection)
	// SlowAcks counts acknowledgements to the Source still running after
	// 10 s. Their records count as Settling until they return, so a stuck
	// one stalls publishing; each is also logged (at most once a minute).
	SlowAcks uint64
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
	slowAck       = 10 * time.Second       // an acknowledgement to the Source this long is reported
	slowAckLog    = time.Minute            // the least time between two warnings about them
)

// Uplink publishes the records of a Source to an MQTT broker and acknowledges
// them to the Source once the broker has. Create it with New and start it
// with Run; Stats may be called from any goroutine.
type Uplink struct {
	cfg         Config
	addr        string // host:port
	useTLS      bool
	src         Source
	format      Format
	log         *slog.Logger
	topic       template // bound: only {device} left
	statusTopic string

	// Used only by the Run goroutine.
	bufs chan []byte // payload buffers whose PUBACK arrived

	running      atomic.Bool
	connected    atomic.Bool
	published    atomic.Uint64
	acked        atomic.Uint64
	reconnects   atomic.Uint64
	encodeErrors atomic.Uint64
	inFlight     atomic.Int64
	settling     atomic.Int64 // Stats.Settling
	maxInFlight  atomic.Int64 // highest InFlight seen
	backlog      atomic.Int64 // Stats.BacklogRecords while connected
	histFlying   atomic.Int64 // backlog records in flight
	replayed     atomic.Uint64
	live         atomic.Uint64
	slowAcks     atomic.Uint64
	slowLogged   atomic.Int64  // when the last slow acknowledgement was logged, Unix ns
	slowAfter    time.Duration // slowAck; tests shorten it before Run
	mu           sync.Mutex    // guards lastErr
	lastErr      string
}

// New checks cfg (see Config.Validate), applies its defaults and returns an
// Uplink that publishes what src holds, encoded by enc. If enc also
// implements Format (Sparkplug B, ThingsBoard), it decides topics, will and
// births; otherwise each record goes to Config.Topic with the JSON status
// topic as will. log may be nil.
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
	u := &Uplink{
		cfg:         c,
		addr:        addr,
		useTLS:      useTLS,
		src:         src,
		log:         log.With("component", "uplink"),
		topic:       topic.bind(c.Prefix, c.Gateway),
		statusTopic: status.bind(c.Prefix, c.Gateway).expand(""),
		bufs:        make(chan []byte, c.Window),
		slowAfter:   slowAck,
	}
	if f, ok := enc.(Format); ok {
		u.format = f
	} else {
		u.format = &encoderFormat{u: u, enc: enc, topics: make(map[string]string)}
	}
	return u, nil
}

// Stats returns a snapshot of the counters. Safe for concurrent use.
func (u *Uplink) Stats() Stats {
	u.mu.Lock()
	last := u.lastErr
	u.mu.Unlock()
	st := Stats{
		Connected:     u.connected.Load(),
		Published:     u.published.Load(),
		Acked:         u.acked.Load(),
		Reconnects:    u.reconnects.Load(),
		EncodeErrors:  u.encodeErrors.Load(),
		InFlight:      int(u.inFlight.Load()),
		MaxInFlight:   int(u.maxInFlight.Load()),
		Settling:      int(u.settling.Load()),
		LastError:     last,
		ReplayedTotal: u.replayed.Load(),
		LiveTotal:     u.live.Load(),
		SlowAcks:      u.slowAcks.Load(),
	}
	if st.Connected {
		st.BacklogRecords = max(0, u.backlog.Load())
	} else {
		st.BacklogRecords, _ = u.src.Depth()
	}
	return st
}

func (u *Uplink) setErr(err error) {
	u.mu.Lock()
	u.lastErr = err.Error()
	u.mu.Unlock()
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
		attempt  int
		failing  bool // a failure has been logged at Warn since the last connection
		everConn bool
	)
	for {
		r := u.session(ctx, everConn)
		if r.connected {
			everConn = true
		}
		if ctx.Err() != nil {
			u.log.Info("uplink stopped")
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
				"url", u.cfg.URL, "err", r.err, "next_retry", delay, "unacknowledged", r.unacked)
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
			u.log.Info("uplink stopped")
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
	tok  Token // nil: nothing was sent (encoder refused the record)
	sent time.Time
	buf  []byte
	hist bool // a backlog record (sent with historical=true)
}

// session is one broker connection. The Run goroutine is the sender; a
// watcher goroutine tells it when the Source has new records; one acker
// goroutine waits for PUBACKs in send order, frees their window slots and
// hands each run of them to two ack workers, which acknowledge it to the
// Source (while one waits for its commit, the other's run joins the next).
// fail may be called from any goroutine, including paho's.
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
	// certAsked records that the broker asked for a client certificate
	// during the TLS handshake and none was configured.
	certAsked atomic.Bool

	fifo  chan flight   // sent, in order; closed by the sender when it stops
	freed chan struct{} // the acker freed window slots, or an ack worker acknowledged
	abort chan struct{} // closed by the sender when the drain deadline passes
	done  chan struct{} // closed when the acker and its workers have exited
	prog  atomic.Bool   // at least one PUBACK was acknowledged
	runs  chan *ackRun  // PUBACKed runs, from the acker to the ack workers
	spare chan *ackRun  // emptied runs, back to the acker
	seen  atomic.Uint64 // the sender's live, for the watcher

	// Owned by the sender (Run's goroutine).
	mark        uint64 // Source's last seq when the connection was established
	live        uint64 // highest live seq sent (starts at mark)
	back        uint64 // highest backlog seq sent
	backlogDone bool   // no stored record <= mark is left to send
	liveMaybe   bool   // the Source may hold live records after live
	rate        tokenBucket
	// Records each PeekInto decodes into: published (encoded) before the
	// next PeekInto, so their Points arrays are reused.
	liveRecs, backRecs []telemetry.Record
}

// ackRun is a run of records to acknowledge to the Source at once: seqs
// in ascending order, hist of them backlog records.
type ackRun struct {
	seqs []uint64
	hist int64
}

// ackBound, times Window, bounds the records PUBACKed whose acknowledgement
// to the Source has not returned. A record's window slot is freed at its
// PUBACK, not when the Source has made its deletion durable: a Source may
// hold acknowledgements back to share a commit with the next appends (the
// buffer's AckLinger), and the window would otherwise wait for that.
const ackBound = 8

// ackWorkers acknowledge runs to the Source concurrently. With the
// buffer's group commit an AckSeqs returns when the commit holding it is
// durable; a second worker lets the next run join the following commit
// meanwhile instead of waiting for the first to finish.
const ackWorkers = 2

// liveReserve is the part of the window that backlog records never take:
// a replay fills at most Window - Window/liveReserve slots, so live
// records always find a free slot and never wait behind the backlog for
// one. Live records may use the whole window. Half, not a quarter, since
// PUBACKs free slots without waiting for the buffer's fsync: the backlog's
// share then sits in the broker's queue ahead of live records (live p99
// during a 10 M replay 22-30 ms against 24-36 ms with a quarter, replay
// 1.15-1.46 M readings/s either way; docs/benchmarks.md).
const liveReserve = 2

type sessionResult struct {
	connected  bool
	progressed bool
	uptime     time.Duration
	unacked    int64 // records stored when the session ended
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
		if len(cfg.Certificates) == 0 && cfg.GetClientCertificate == nil {
			// Send no certificate, as without the callback, but note that
			// the broker asked: with TLS 1.3 a broker that requires one
			// refuses only after the handshake, and its alert can be lost
			// when it resets the connection.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				s.certAsked.Store(true)
				return new(tls.Certificate), nil
			}
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
	return closeOnWriteError{newBufferedConn(conn), s}, nil
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

func (u *Uplink) clientOptions(s *session, will Message) *mqtt.ClientOptions {
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
	o.SetStore(noStore{}) // the buffer keeps what is not acknowledged
	// Commands (set commands, DCMD, RPC) reach Format.Command one at a
	// time in arrival order, so that two writes of one tag are carried out
	// in the order sent. Command only parses and queues (see Writes), and
	// never waits for a token, so it cannot stall paho's router.
	o.SetOrderMatters(true)
	o.SetKeepAlive(c.KeepAlive)
	o.SetPingTimeout(pingTimeout(c.KeepAlive))
	o.SetConnectTimeout(c.ConnectTimeout)
	o.SetWriteTimeout(c.PublishTimeout)
	if will.Topic != "" {
		o.SetBinaryWill(will.Topic, will.Payload, will.QoS, will.Retained)
	}
	o.SetCustomOpenConnectionFn(s.dial)
	o.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		s.fail(fmt.Errorf("connection lost: %w", err))
	})
	return o
}

// pingTimeout is the PINGRESP wait that makes paho v1.5.1 notice a dead
// link within 1.5 × keepalive where its pinger allows. The pinger checks
// every ci (keepalive/4, or 5 s above 10 s), sends PINGREQ at the first
// check at least keepalive after the last packet received, and gives up at
// the first check at least the ping timeout after that. A timeout just below
// ci gives up one check after the PINGREQ: at most keepalive + 2·ci after
// the last packet, that is 1.5 × keepalive for keepalive ≤ 10 s or ≥ 20 s,
// and keepalive + 10 s in between.
func pingTimeout(keepalive time.Duration) time.Duration {
	ci := 5 * time.Second
	if keepalive <= 10*time.Second {
		ci = keepalive.Truncate(time.Second) / 4
	}
	return max(ci*3/4, 10*time.Millisecond)
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
// ctx is cancelled, then tear down. Every session starts from what the
// Source holds: records acknowledged on earlier connections are gone from
// it, and everything else is sent again.
func (u *Uplink) session(ctx context.Context, reconnect bool) (res sessionResult) {
	s := &session{
		u:     u,
		dead:  make(chan struct{}),
		fifo:  make(chan flight, u.cfg.Window),
		freed: make(chan struct{}, 1),
		abort: make(chan struct{}),
		done:  make(chan struct{}),
		runs:  make(chan *ackRun, (ackBound+1)*u.cfg.Window),
		spare: make(chan *ackRun, (ackBound+1)*u.cfg.Window),
		rate:  newTokenBucket(u.cfg.ReplayRate),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	defer s.cancel()
	will, err := u.format.Will()
	if err != nil {
		res.err = fmt.Errorf("last will: %w", err)
		return res
	}
	s.client = mqtt.NewClient(u.clientOptions(s, will))

	if err := s.connect(); err != nil {
		res.err = err
		return res
	}
	start := time.Now()
	res.connected = true
	// Everything committed up to now is backlog on this connection.
	records, last := u.src.Depth()
	s.mark, s.live = last, last
	s.backlogDone = records == 0
	u.backlog.Store(records)
	u.connected.Store(true)
	if reconnect {
		u.reconnects.Add(1)
	}
	u.log.Info("connected", "url", u.cfg.URL, "backlog_records", records, "backlog_up_to_seq", last,
		"replay_rate", u.cfg.ReplayRate)

	online, err := s.announce()
	if err != nil {
		s.fail(err)
	}
	go s.ackLoop()
	if err == nil {
		s.send()
	}
	close(s.fifo)

	if ctx.Err() != nil && !s.failed() {
		u.shutdown(s, online)
	} else {
		s.hurry()
		<-s.done // fail has closed dead, so the acker returns promptly
		// The conn is closed already. This stops paho's goroutines; they
		// finish in the background, and the next session uses a new client.
		s.client.Disconnect(0)
	}
	u.connected.Store(false)
	u.inFlight.Store(0)
	u.settling.Store(0)
	u.histFlying.Store(0)
	res.progressed = s.prog.Load()
	res.uptime = time.Since(start)
	res.unacked, _ = u.src.Depth()
	if s.failed() {
		res.err = s.err
	}
	return res
}

// announce subscribes to the Format's command topics and lets it publish
// what precedes the data (status, births).
func (s *session) announce() (Token, error) {
	u := s.u
	pub := sessionPublisher{s.client}
	for _, filter := range u.format.Subscriptions() {
		tok := s.client.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
			handle := u.format.Command
			if rc, ok := u.format.(RetainedCommander); ok && m.Retained() {
				handle = rc.RetainedCommand
			}
			if err := handle(pub, m.Topic(), m.Payload()); err != nil {
				s.fail(err)
			}
		})
		if err := s.wait(tok); err != nil {
			return nil, fmt.Errorf("subscribe %s: %w", filter, err)
		}
	}
	return u.format.Online(s.ctx, pub)
}

// wait waits for tok at most PublishTimeout, or until the session ends.
func (s *session) wait(tok Token) error {
	t := time.NewTimer(s.u.cfg.PublishTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return errPubackTimeout
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// sessionPublisher is the Publisher of one connection.
type sessionPublisher struct{ c mqtt.Client }

func (p sessionPublisher) Publish(m Message) Token {
	return p.c.Publish(m.Topic, m.QoS, m.Retained, m.Payload)
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
		if s.failed() && s.err != nil {
			err = s.err // the session failed (a write did), not Run's ctx
		}
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
	return fmt.Errorf("connect to %s: %w", s.u.cfg.URL, explainConnect(err, s.u.useTLS, s.certAsked.Load()))
}

// explainConnect says what a refused connection most likely means for the
// configuration: who refused whom, and which setting to look at. useTLS
// says the connection was TLS, certAsked that the broker asked for a client
// certificate and none was sent. Other errors are returned unchanged.
func explainConnect(err error, useTLS, certAsked bool) error {
	var verr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var badName x509.HostnameError
	alert, remote := remoteAlert(err)
	switch {
	case errors.Is(err, packets.ErrorRefusedNotAuthorised), errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword):
		return fmt.Errorf("the broker refused the user name or password (mqtt.username, mqtt.password or password_file) or does not let this client in: %w", err)
	case remote && alert == alertCertificateRequired:
		return fmt.Errorf("the broker requires a client certificate (mutual TLS): set mqtt.tls.cert_file and key_file: %w", err)
	case remote && (alert == alertBadCertificate || alert == alertUnknownCA || alert == alertCertificateUnknown ||
		alert == alertCertificateExpired || alert == alertUnsupportedCertificate):
		return fmt.Errorf("the broker refused the client certificate of mqtt.tls.cert_file (not signed by a CA it trusts, expired, or not for client authentication): %w", err)
	case remote && alert == alertHandshakeFailure:
		return fmt.Errorf("the broker ended the TLS handshake; if it requires client certificates, set mqtt.tls.cert_file and key_file: %w", err)
	case errors.As(err, &verr) && errors.As(err, &unknownCA):
		return fmt.Errorf("the broker's certificate is not signed by a CA the system trusts; set mqtt.tls.ca_file to the CA that signed it: %w", err)
	case errors.As(err, &verr) && errors.As(err, &badName):
		return fmt.Errorf("the broker's certificate is not for the host of mqtt.url (set mqtt.tls.server_name to a name it carries): %w", err)
	case useTLS && certAsked && closedByPeer(err):
		return fmt.Errorf("the broker asked for a client certificate, none is set, and it closed the connection (mutual TLS): set mqtt.tls.cert_file and key_file: %w", err)
	case useTLS && closedByPeer(err):
		return fmt.Errorf("the broker closed the connection after the TLS handshake; if it requires client certificates it may not accept the one of mqtt.tls.cert_file (the broker's log says why): %w", err)
	}
	return err
}

// closedByPeer reports whether err says the other side closed or reset the
// connection.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// TLS alerts that explainConnect recognises (RFC 8446 section 6.2).
const (
	alertHandshakeFailure       = tls.AlertError(40)
	alertBadCertificate         = tls.AlertError(42)
	alertUnsupportedCertificate = tls.AlertError(43)
	alertCertificateExpired     = tls.AlertError(45)
	alertCertificateUnknown     = tls.AlertError(46)
	alertUnknownCA              = tls.AlertError(48)
	alertCertificateRequired    = tls.AlertError(116)
)

// remoteAlert returns the TLS alert the peer sent, if err is one. crypto/tls
// reports a received alert as a *net.OpError with Op "remote error" around
// an unexported alert type whose text is that of the tls.AlertError with the
// same code.
func remoteAlert(err error) (tls.AlertError, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	for _, a := range []tls.AlertError{alertHandshakeFailure, alertBadCertificate, alertUnsupportedCertificate,
		alertCertificateExpired, alertCertificateUnknown, alertUnknownCA, alertCertificateRequired} {
		if op.Err.Error() == a.Error() {
			return a, true
		}
	}
	return 0, false
}

// shutdown is the clean end of a session: retained offline status, up to
// drainTimeout for it and for outstanding PUBACKs, then DISCONNECT (which
// tells the broker not to send the will).
func (u *Uplink) shutdown(s *session, online Token) {
	s.hurry()
	deadline := time.NewTimer(drainTimeout)
	defer deadline.Stop()
	offline := u.format.Offline(sessionPublisher{s.client})
	for _, tok := range []Token{online, offline} {
		if tok == nil {
			continue
		}
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
		u.log.Warn("stopped with publishes unacknowledged; they stay in the buffer", "in_flight", u.inFlight.Load())
	}
	s.client.Disconnect(quiesce)
}

// send publishes records while the session is healthy and ctx is live:
// live records (committed after the connection was established) first, then
// backlog records as far as the window, its live reserve and
// Config.ReplayRate allow. It waits for a freed window slot, a new record
// (told by the watcher) or the replay rate, whichever comes first.
func (s *session) send() {
	u := s.u
	s.seen.Store(s.live)
	s.liveMaybe = true
	arrived := make(chan struct{}, 1)
	wctx, stopWatch := context.WithCancel(s.ctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		s.watch(wctx, arrived)
	}()
	defer func() {
		stopWatch()
		<-watching
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var srcErr bool
	for s.ctx.Err() == nil {
		select {
		case <-arrived:
			s.liveMaybe = true
		default:
		}
		sent, next, err := s.sendSome()
		if err != nil {
			u.setErr(err)
			if !srcErr {
				u.log.Error("reading the buffer failed", "err", err, "after_seq", s.live)
				srcErr = true
			}
			timer.Reset(sourceRetry)
			select {
			case <-timer.C:
			case <-s.ctx.Done():
			}
			s.liveMaybe = true
			continue
		}
		srcErr = false
		if sent > 0 {
			continue
		}
		// Nothing to send now: wait for a slot, a live record, or until
		// the replay rate allows the next backlog record.
		var rateC <-chan time.Time
		if next > 0 {
			timer.Reset(next)
			rateC = timer.C
		}
		arr := arrived
		if s.liveMaybe {
			arr = nil // known already; the window is full
		}
		select {
		case <-s.freed:
		case <-arr:
			s.liveMaybe = true
		case <-rateC:
		case <-s.ctx.Done():
		}
		timer.Stop()
	}
}

// watch signals arrived whenever the Source holds a record after the
// sender's live one, until ctx is done. The sender takes the signal before
// it peeks, so a record committed after its Peek is always signalled; a
// signal can be spurious (the sender had already seen the record).
func (s *session) watch(ctx context.Context, arrived chan<- struct{}) {
	for {
		err := s.u.src.Wait(ctx, s.seen.Load())
		if ctx.Err() != nil {
			return
		}
		select {
		case arrived <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			// The sender's Peek reports it; do not spin meanwhile.
			t := time.NewTimer(sourceRetry)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}
}

// sendSome publishes what the window allows, live records first. It
// returns how many it sent and, when the replay rate held back the
// backlog, how long until the next backlog record may go.
func (s *session) sendSome() (sent int, next time.Duration, err error) {
	u := s.u
	window := int64(u.cfg.Window)
	free := s.room(window)
	if free <= 0 {
		return 0, 0, nil
	}
	if s.liveMaybe {
		recs, err := u.src.PeekInto(s.liveRecs, s.live, free)
		s.liveRecs = recs
		if err != nil {
			return 0, 0, err
		}
		if len(recs) < free {
			s.liveMaybe = false // until the watcher says otherwise
		}
		for i := range recs {
			if s.ctx.Err() != nil {
				return sent, 0, nil
			}
			s.publish(&recs[i], false)
			s.live = recs[i].Seq
			sent++
		}
		s.seen.Store(s.live)
	}
	if s.backlogDone {
		return sent, 0, nil
	}
	// The backlog leaves Window/liveReserve slots to live records.
	free = s.room(window - window/liveReserve)
	if free <= 0 {
		return sent, 0, nil
	}
	n, next := s.rate.take(free)
	if n == 0 {
		return sent, next, nil
	}
	recs, err := u.src.PeekInto(s.backRecs, s.back, n)
	s.backRecs = recs
	if err != nil {
		s.rate.refund(n)
		return sent, 0, err
	}
	k := 0
	for ; k < len(recs) && recs[k].Seq <= s.mark; k++ {
		if s.ctx.Err() != nil {
			s.rate.refund(n - k)
			return sent, 0, nil
		}
		s.publish(&recs[k], true)
		s.back = recs[k].Seq
		sent++
	}
	s.rate.refund(n - k)
	if k < n {
		// The Source holds no more records <= mark after back.
		s.backlogDone = true
		u.backlog.Store(s.histInFlight())
		u.log.Info("backlog replayed", "up_to_seq", s.mark, "replayed_total", u.replayed.Load())
	}
	return sent, 0, nil
}

// room returns how many more records may be sent into a share of the
// window: share less those in flight, and no more than ackBound windows
// less those in flight and settling. When settling records are what holds
// the sender back, it asks the Source to commit them (hurry).
func (s *session) room(share int64) int {
	u := s.u
	window := int64(u.cfg.Window)
	flying := u.inFlight.Load()
	settled := ackBound*window - flying - u.settling.Load()
	if settled <= 0 && flying < window {
		s.hurry()
	}
	return int(min(share-flying, settled))
}

// hurry asks the Source to commit the acknowledgements it holds back, if
// it does that: the sender waits for them.
func (s *session) hurry() {
	if c, ok := s.u.src.(AckCommitter); ok {
		c.CommitAcks()
	}
}

// histInFlight counts the backlog records sent and not yet acknowledged.
func (s *session) histInFlight() int64 { return s.u.histFlying.Load() }

// publish encodes and sends one record and hands it to the acker.
func (s *session) publish(r *telemetry.Record, hist bool) {
	u := s.u
	var buf []byte
	select {
	case buf = <-u.bufs:
	default:
	}
	f := flight{seq: r.Seq, sent: time.Now(), hist: hist}
	tok, payload, err := u.format.Publish(sessionPublisher{s.client}, buf[:0], r, hist)
	if err != nil {
		u.encodeErrors.Add(1)
		u.log.Error("cannot encode record; dropping it", "seq", r.Seq, "device", r.Batch.Device, "err", err)
	} else {
		f.buf = payload
		f.tok = tok
		u.published.Add(1)
	}
	if hist {
		u.histFlying.Add(1)
	}
	n := u.inFlight.Add(1)
	if n > u.maxInFlight.Load() {
		u.maxInFlight.Store(n) // only the sender raises it
	}
	s.fifo <- f // never blocks: inFlight <= Window == cap(fifo)
}

// ackLoop waits for PUBACKs in send order and hands each run of completed
// records to the ack workers. It exits when fifo is closed and empty, or
// the session fails, or abort is closed; done is closed once the workers
// have acknowledged every run handed to them. A record whose PUBACK has
// not arrived is never acknowledged.
func (s *session) ackLoop() {
	var workers sync.WaitGroup
	for range ackWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			s.ackWorker()
		}()
	}
	defer func() {
		close(s.runs)
		workers.Wait()
		close(s.done)
	}()
	u := s.u
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var run *ackRun
	flush := func() {
		if run != nil {
			// Never blocks: a run holds at least one record, and the
			// sender keeps in flight and settling within cap(runs).
			n := int64(len(run.seqs))
			u.settling.Add(n)
			u.inFlight.Add(-n)
			s.runs <- run
			run = nil
			select {
			case s.freed <- struct{}{}:
			default:
			}
		}
	}
	add := func(f flight) {
		if run == nil {
			select {
			case run = <-s.spare:
			default:
				run = new(ackRun)
			}
		}
		run.seqs = append(run.seqs, f.seq)
		if f.hist {
			run.hist++
		}
	}
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
		for {
			if f.tok != nil {
				if !isDone(f.tok) {
					flush() // acknowledge what is complete before blocking
					timer.Reset(time.Until(f.sent.Add(u.cfg.PublishTimeout)))
					select {
					case <-f.tok.Done():
					case <-timer.C:
						s.fail(fmt.Errorf("seq %d: %w", f.seq, errPubackTimeout))
						return
					case <-s.dead:
						return
					case <-s.abort:
						return
					}
				}
				if err := f.tok.Error(); err != nil {
					flush()
					s.fail(fmt.Errorf("publish seq %d: %w", f.seq, err))
					return
				}
				select {
				case u.bufs <- f.buf:
				default:
				}
				f.buf = nil
			}
			add(f)
			// Coalesce: take whatever else is already sent.
			select {
			case f, ok = <-s.fifo:
			default:
				ok = false
			}
			if !ok {
				break
			}
		}
		flush()
	}
}

func isDone(t Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

// ackWorker acknowledges the runs the acker hands over, each joined with
// those queued behind it, until runs is closed and empty. An
// acknowledgement still running after slowAfter is reported (slowAcked).
func (s *session) ackWorker() {
	var logged bool
	var seqs []uint64
	var records atomic.Int64 // in the acknowledgement under way
	slow := time.AfterFunc(time.Hour, func() { s.u.slowAcked(records.Load()) })
	slow.Stop()
	defer slow.Stop()
	for r := range s.runs {
		seqs = append(seqs[:0], r.seqs...)
		hist := r.hist
		n := int64(len(r.seqs))
		s.recycle(r)
	join:
		for {
			select {
			case r, ok := <-s.runs:
				if !ok {
					break join
				}
				seqs = append(seqs, r.seqs...)
				hist += r.hist
				n += int64(len(r.seqs))
				s.recycle(r)
			default:
				break join
			}
		}
		if s.ctx.Err() != nil {
			s.hurry() // the connection is ending: do not wait for appends
		}
		records.Store(n)
		slow.Reset(s.u.slowAfter)
		s.ack(seqs, hist, n, &logged)
		slow.Stop()
	}
}

// slowAcked counts an acknowledgement to the Source that has been running
// for slowAfter, and logs it at most once per slowAckLog: its records
// count as settling until it returns, and once 8 windows of records are,
// publishing stops, with nothing else to show for it.
func (u *Uplink) slowAcked(records int64) {
	total := u.slowAcks.Add(1)
	now := time.Now().UnixNano()
	last := u.slowLogged.Load()
	if last != 0 && now-last < int64(slowAckLog) || !u.slowLogged.CompareAndSwap(last, now) {
		return
	}
	u.log.Warn("acknowledgement to the buffer has not returned; publishing stops while 8 windows of records wait for one",
		"records", records, "after", u.slowAfter, "slow_acks_total", total, "settling", u.settling.Load(), "in_flight", u.inFlight.Load())
}

func (s *session) recycle(r *ackRun) {
	r.seqs, r.hist = r.seqs[:0], 0
	select {
	case s.spare <- r:
	default:
	}
}

// ack acknowledges n records (all PUBACKed, or refused by the encoder),
// hist of them backlog records, to the Source and counts them. seqs is
// sorted in place.
func (s *session) ack(seqs []uint64, hist, n int64, logged *bool) {
	if n == 0 {
		return
	}
	u := s.u
	slices.Sort(seqs) // backlog and live interleave
	if err := u.src.AckSeqs(seqs); err != nil {
		u.setErr(err)
		if !*logged {
			u.log.Error("acknowledging to the buffer failed; records stay and are sent again later",
				"err", err, "records", len(seqs))
			*logged = true
		}
	} else {
		*logged = false
	}
	s.prog.Store(true)
	u.acked.Add(uint64(n))
	u.replayed.Add(uint64(hist))
	u.live.Add(uint64(n - hist))
	u.backlog.Add(-hist)
	u.histFlying.Add(-hist)
	u.settling.Add(-n)
	select {
	case s.freed <- struct{}{}:
	default:
	}
}

// tokenBucket limits backlog records per second; a zero rate is unlimited.
// Used by the sender only.
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64) tokenBucket {
	burst := max(1, rate/10) // about 100 ms worth
	return tokenBucket{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

// take returns how many of n records may go now, and when none may, how
// long until the next one may.
func (b *tokenBucket) take(n int) (int, time.Duration) {
	if b.rate <= 0 {
		return n, 0
	}
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	k := min(n, int(b.tokens))
	if k == 0 {
		return 0, max(time.Millisecond, time.Duration((1-b.tokens)/b.rate*float64(time.Second)))
	}
	b.tokens -= float64(k)
	return k, 0
}

// refund returns tokens taken for records that were not sent.
func (b *tokenBucket) refund(n int) {
	if b.rate > 0 && n > 0 {
		b.tokens = min(b.burst, b.tokens+float64(n))
	}
}
