// Package gateway assembles fieldgate's stages from a config.Config and runs
// them under one context: the collector polls devices into the durable
// buffer, and the uplink drains the buffer to the MQTT broker.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fieldgate/fieldgate/api"
	"github.com/fieldgate/fieldgate/audit"
	"github.com/fieldgate/fieldgate/buffer"
	"github.com/fieldgate/fieldgate/collector"
	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/collector/opcua"
	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
	"github.com/fieldgate/fieldgate/uplink/sparkplug"
	"github.com/fieldgate/fieldgate/uplink/thingsboard"
)

// Options are the parts of a gateway that do not come from its config file.
type Options struct {
	// DropAuditInterval is how often the buffer's drop counters are
	// checked for buffer_drop audit entries; 0 means every 10 s.
	DropAuditInterval time.Duration

	// Observe, when set, is called with every batch after the buffer has
	// committed it, from the device's goroutine. It must not keep the batch.
	Observe func(b *telemetry.Batch)
}

// Gateway is one running fieldgate: collector, buffer and uplink.
// Create it with New, then call Run once.
type Gateway struct {
	cfg  *config.Config
	log  *slog.Logger
	opts Options

	queue  *buffer.Queue
	coll   *collector.Collector
	up     *uplink.Uplink
	writes *uplink.Writes // the queue of every format's commands, carried out by wr
	wr     *writer        // the one write path: checks, audit, metrics
	audit  *audit.Log

	api     *api.Server // nil when api.listen is empty or could not listen
	quality qualityCounts

	appendErrors atomic.Uint64
	lastAppend   struct {
		sync.Mutex
		err    string
		logged time.Time
	}
}

// New builds every stage from cfg and opens the buffer. It does not connect
// to any device or broker; Run does. An error means the configuration cannot
// work (a driver refused it) or the buffer file cannot be opened.
func New(cfg *config.Config, opts Options, log *slog.Logger) (*Gateway, error) {
	g := &Gateway{cfg: cfg, log: log, opts: opts}

	devs := make([]collector.Device, 0, len(cfg.Devices))
	links := modbus.NewLinks(log.With("component", "modbus"))
	for _, d := range cfg.Devices {
		drv, err := newDriver(d, links, log.With("device", d.Name))
		if err != nil {
			closeDrivers(devs)
			return nil, err
		}
		devs = append(devs, collector.Device{Name: d.Name, Driver: drv, PollOffset: d.PollOffset})
	}

	q, err := buffer.Open(cfg.Buffer.Path, bufferOptions(cfg), log.With("component", "buffer"))
	if err != nil {
		closeDrivers(devs)
		return nil, fmt.Errorf("open buffer: %w", err)
	}
	g.queue = q

	al, err := audit.Open(cfg.Audit.Path, audit.Options{MaxBytes: int64(cfg.Audit.MaxBytes), Files: cfg.Audit.Files}, log.With("component", "audit"))
	if err != nil {
		closeDrivers(devs)
		_ = q.Close()
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	g.audit = al
	g.wr = newWriter(cfg, devs, al, log.With("component", "writes"))
	g.writes = uplink.NewWrites(g.wr, 0, log.With("component", "writes"))
	ucfg := uplinkConfig(cfg)
	ucfg.Writes = g.writes
	if ucfg.TLS, err = tlsConfig(cfg.MQTT, log.With("component", "uplink")); err != nil {
		closeDrivers(devs)
		_ = q.Close()
		_ = al.Close()
		return nil, err
	}
	var up *uplink.Uplink
	enc, err := payloadFormat(cfg, g.writes, log)
	if err == nil {
		up, err = uplink.New(ucfg, q, enc, log)
	}
	if err != nil {
		closeDrivers(devs)
		_ = q.Close()
		_ = al.Close()
		return nil, fmt.Errorf("uplink: %w", err)
	}
	g.up = up
	g.coll = collector.New(devs, g.sink, log.With("component", "collector"))
	if cfg.API.Listen != "" {
		// The management API is an aid, not the gateway's job: if its port
		// is taken the gateway still collects and forwards.
		srv, err := api.New(api.Config{Listen: cfg.API.Listen, Token: string(cfg.API.Token)}, g, log.With("component", "api"))
		if err != nil {
			log.Error("management API not started; the gateway runs without it", "err", err)
		} else {
			g.api = srv
		}
	}
	return g, nil
}

// newDriver is the one place that knows every driver kind. Modbus devices
// on one serial bus or behind one TCP address share a link from links.
func newDriver(d config.Device, links *modbus.Links, log *slog.Logger) (collector.Driver, error) {
	switch {
	case d.Modbus != nil:
		drv, err := modbus.New(d.Name, *d.Modbus, log, modbus.WithLinks(links))
		if err != nil {
			return nil, fmt.Errorf("device %q: %w", d.Name, err)
		}
		return drv, nil
	case d.OPCUA != nil:
		drv, err := opcua.New(d.Name, *d.OPCUA, log)
		if err != nil {
			return nil, fmt.Errorf("device %q: %w", d.Name, err)
		}
		return drv, nil
	default:
		return nil, fmt.Errorf("device %q: no driver section (modbus: or opcua:)", d.Name)
	}
}

func closeDrivers(devs []collector.Device) {
	for _, d := range devs {
		_ = d.Driver.Close()
	}
}

// maxAckLinger bounds how long the buffer holds acknowledgements back for
// the next poll's appends (buffer.Options.AckLinger).
const maxAckLinger = time.Second

func bufferOptions(cfg *config.Config) buffer.Options {
	b := cfg.Buffer
	o := buffer.Options{MaxBytes: int64(b.MaxBytes), MaxAge: b.MaxAge}
	if b.Sync == "interval" {
		o.SyncInterval = time.Duration(b.SyncInterval)
	}
	// Acknowledgements wait at most one poll interval (of the fastest
	// device) for the next poll's readings to share their commit.
	for i := range cfg.Devices {
		p := min(cfg.Devices[i].ShortestPoll(), maxAckLinger)
		if o.AckLinger == 0 || p < o.AckLinger {
			o.AckLinger = p
		}
	}
	return o
}

// payloadFormat builds the encoder of mqtt.format. Sparkplug keeps its bdSeq
// in a small file beside the buffer file (buffer.path + ".bdseq").
func payloadFormat(cfg *config.Config, writes *uplink.Writes, log *slog.Logger) (uplink.Encoder, error) {
	switch cfg.MQTT.Format {
	case config.FormatSparkplugB:
		s := cfg.MQTT.Sparkplug
		return sparkplug.New(sparkplug.Config{
			Group: s.Group, Node: cfg.Gateway.ID, PrimaryHost: s.PrimaryHost, DataQoS: s.DataQoS,
			BdSeqFile: cfg.Buffer.Path + ".bdseq", Writes: writes, Catalog: sparkplugCatalog(cfg),
		}, log)
	case config.FormatThingsBoard:
		return thingsboard.New(cfg.Gateway.ID, cfg.MQTT.QoS, writes, log), nil
	}
	return jsonenc.Encoder{}, nil
}

// sparkplugCatalog lists each Modbus device's tags with the kind of value
// it reads, so that its DBIRTH names every tag before the first poll. OPC
// UA tags are left out: their type is known once read, and the Sparkplug
// format learns them from the records.
func sparkplugCatalog(cfg *config.Config) []sparkplug.CatalogDevice {
	var cat []sparkplug.CatalogDevice
	for _, d := range cfg.Devices {
		if d.Modbus == nil {
			continue
		}
		cd := sparkplug.CatalogDevice{Name: d.Name}
		for _, t := range d.Modbus.Tags {
			ct := sparkplug.CatalogTag{Name: t.Name, Unit: t.Unit}
			switch t.Type {
			case modbus.TypeBool:
				ct.Kind = telemetry.KindBool
			case modbus.TypeString:
				ct.Kind = telemetry.KindString
			case modbus.TypeNone:
			default:
				switch {
				case t.Scale != nil || t.ValueOffset != nil:
					ct.Kind = telemetry.KindFloat // raw*scale + value_offset
				case t.Type == modbus.TypeFloat32:
					ct.Kind, ct.Float32 = telemetry.KindFloat, true
				case t.Type == modbus.TypeFloat64:
					ct.Kind = telemetry.KindFloat
				case t.Type == modbus.TypeInt16 || t.Type == modbus.TypeInt32 || t.Type == modbus.TypeInt64:
					ct.Kind = telemetry.KindInt
				default: // uint16/32/64, bcd16/32
					ct.Kind = telemetry.KindUint
				}
			}
			cd.Tags = append(cd.Tags, ct)
		}
		cat = append(cat, cd)
	}
	return cat
}

func uplinkConfig(cfg *config.Config) uplink.Config {
	m := cfg.MQTT
	return uplink.Config{
		URL:            m.URL,
		ClientID:       cfg.Gateway.ID,
		Username:       m.Username,
		Password:       string(m.Password),
		KeepAlive:      time.Duration(m.KeepAlive),
		ConnectTimeout: time.Duration(m.ConnectTimeout),
		PublishTimeout: time.Duration(m.PublishTimeout),
		Window:         m.Window,
		ReplayRate:     m.ReplayRate,
		QoS:            m.QoS,
		Topic:          m.Topic,
		Prefix:         m.Prefix,
		StatusTopic:    m.StatusTopic,
		Gateway:        cfg.Gateway.ID,
	}
}

// tlsConfig builds the TLS settings of mqtt.tls: the roots of ca_file (the
// system's when empty), the client certificate, and the server name. Nil
// settings give nil: the system roots, the URL's host, no client
// certificate. The broker's certificate is verified unless
// insecure_skip_verify is set, which is logged as a warning at every start.
//
// With ca_file the certificate is verified here, in VerifyConnection, with
// the same checks crypto/tls makes (chain to the roots, validity, server
// name, server-auth usage), so that a failure names the CA file.
func tlsConfig(m config.MQTT, log *slog.Logger) (*tls.Config, error) {
	t := m.TLS
	if t == nil {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if c.ServerName == "" {
		if u, err := url.Parse(m.URL); err == nil {
			c.ServerName = u.Hostname()
		}
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.tls.cert_file %s, key_file %s: %w", t.CertFile, t.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if t.InsecureSkipVerify {
		log.Warn("mqtt.tls.insecure_skip_verify is set: the broker's certificate is not verified, so anyone on the network path can pose as the broker and read or change everything the gateway sends; set mqtt.tls.ca_file instead",
			"url", m.URL)
		c.InsecureSkipVerify = true
		return c, nil
	}
	if t.CAFile == "" {
		return c, nil
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("mqtt.tls.ca_file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("mqtt.tls.ca_file: %s holds no PEM certificate", t.CAFile)
	}
	name, caFile := c.ServerName, t.CAFile
	c.RootCAs = roots
	// crypto/tls's own check is replaced by the equal one below, which is
	// run on every handshake, resumed ones included.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the broker sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: roots, DNSName: name, Intermediates: x509.NewCertPool()}
		for _, ic := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(ic)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return fmt.Errorf("broker certificate not trusted with mqtt.tls.ca_file %s: %w", caFile, err)
		}
		return nil
	}
	return c, nil
}

// sink commits each batch to the buffer before the collector polls again.
func (g *Gateway) sink(ctx context.Context, b *telemetry.Batch) error {
	if err := g.queue.Append(ctx, b); err != nil {
		if ctx.Err() != nil {
			return nil // shutting down; the commit may still have happened
		}
		g.appendErrors.Add(1)
		g.noteAppendError(err, len(b.Points))
		return nil // the collector keeps polling; the error is counted and logged
	}
	g.quality.add(b)
	g.wr.observe(b)
	if g.opts.Observe != nil {
		g.opts.Observe(b)
	}
	return nil
}

// noteAppendError logs a failed commit at most every 10 s per distinct error.
func (g *Gateway) noteAppendError(err error, points int) {
	la := &g.lastAppend
	la.Lock()
	defer la.Unlock()
	msg := err.Error()
	if msg == la.err && time.Since(la.logged) < 10*time.Second {
		return
	}
	la.err, la.logged = msg, time.Now()
	g.log.Error("buffer commit failed; readings lost", "err", err, "points", points,
		"failed_commits", g.appendErrors.Load())
}

// Run starts the stages and blocks until ctx is cancelled or a stage fails
// fatally. Shutdown runs from source to sink: the collector stops first (its
// last batches are committed by the time it returns), then the uplink gets
// its bounded drain (it waits up to 5 s for PUBACKs of what is in flight;
// nothing unacknowledged is deleted), and the buffer is closed last.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The uplink outlives the collector by design, so it gets its own context.
	upCtx, upCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer upCancel()

	var wg sync.WaitGroup
	var collErr, upErr, apiErr error
	if g.api != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			apiErr = g.api.Run(upCtx) // up as long as the uplink, to watch it drain
		}()
	}
	wg.Add(4)
	go func() {
		defer wg.Done()
		_ = g.writes.Run(upCtx) // commands arrive while the uplink is up
	}()
	go func() {
		defer wg.Done()
		g.auditDrops(upCtx, g.dropInterval()) // last check after the collector's final commits
	}()
	go func() {
		defer wg.Done()
		collErr = g.coll.Run(ctx)
		upCancel()
	}()
	go func() {
		defer wg.Done()
		upErr = g.up.Run(upCtx)
		if upErr != nil {
			cancel() // a fatal uplink error stops the collector too
		}
	}()
	g.log.Info("gateway running", "gateway", g.cfg.Gateway.ID, "devices", len(g.cfg.Devices),
		"buffer", g.cfg.Buffer.Path, "mqtt", g.cfg.MQTT.URL)
	wg.Wait()
	closeErr := g.queue.Close()
	if err := g.audit.Close(); err != nil {
		g.log.Error("closing the audit log failed", "path", g.audit.Path(), "err", err)
	}
	if collErr != nil {
		collErr = fmt.Errorf("collector: %w", collErr)
	}
	if upErr != nil {
		upErr = fmt.Errorf("uplink: %w", upErr)
	}
	if closeErr != nil {
		closeErr = fmt.Errorf("close buffer: %w", closeErr)
	}
	return errors.Join(collErr, upErr, apiErr, closeErr)
}

// Status is a snapshot of the gateway's health.
type Status struct {
	Devices             []collector.DeviceStatus
	Buffer              buffer.Stats
	BufferDropsByDevice map[string]buffer.Drops // readings the buffer's bounds dropped, per device
	Uplink              uplink.Stats
	AppendErrors        uint64
}

// Status returns a snapshot of every stage's health; safe for concurrent use.
func (g *Gateway) Status() Status {
	return Status{
		Devices:             g.coll.Status(),
		Buffer:              g.queue.Stats(),
		BufferDropsByDevice: g.queue.DroppedByDevice(),
		Uplink:              g.up.Stats(),
		AppendErrors:        g.appendErrors.Load(),
	}
}
