package gateway

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/fieldgate/fieldgate/api"
	"github.com/fieldgate/fieldgate/telemetry"
)

// qualityCounts counts the non-good readings each device produced, by
// quality (class and reason). Safe for concurrent use.
type qualityCounts struct {
	mu      sync.Mutex
	devices map[string]*[256]atomic.Uint64
}

// add counts the batch's non-good points. Good points cost one comparison.
func (c *qualityCounts) add(b *telemetry.Batch) {
	var row *[256]atomic.Uint64
	for i := range b.Points {
		q := b.Points[i].Quality
		if q.IsGood() {
			continue
		}
		if row == nil {
			row = c.row(b.Device)
		}
		row[q].Add(1)
	}
}

func (c *qualityCounts) row(device string) *[256]atomic.Uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.devices == nil {
		c.devices = map[string]*[256]atomic.Uint64{}
	}
	r := c.devices[device]
	if r == nil {
		r = new([256]atomic.Uint64)
		c.devices[device] = r
	}
	return r
}

func (c *qualityCounts) each(fn func(device string, q telemetry.Quality, n uint64)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for dev, row := range c.devices {
		for q := range row {
			if n := row[q].Load(); n > 0 {
				fn(dev, telemetry.Quality(q), n)
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Metrics fills m with the gateway's metrics; it implements api.Source.
func (g *Gateway) Metrics(m *api.Metrics) {
	st := g.Status()

	up := m.Family("fieldgate_device_up", "1 when the device is connected and its last read succeeded.", api.Gauge)
	polls := m.Family("fieldgate_polls_total", "Reads made of the device.", api.Counter)
	pollErrs := m.Family("fieldgate_poll_errors_total", "Failed reads and connects of the device.", api.Counter)
	skipped := m.Family("fieldgate_poll_skipped_total", "Poll ticks dropped because the previous read was still running.", api.Counter)
	lastPoll := m.Family("fieldgate_device_last_poll_timestamp_seconds", "End of the device's last successful read, Unix time.", api.Gauge)
	for _, d := range st.Devices {
		up(b2f(d.Up), "device", d.Name)
		polls(float64(d.Polls), "device", d.Name)
		pollErrs(float64(d.PollErrors), "device", d.Name)
		skipped(float64(d.SkippedTicks), "device", d.Name)
		if !d.LastPoll.IsZero() {
			lastPoll(float64(d.LastPoll.UnixNano())/1e9, "device", d.Name)
		}
	}
	bad := m.Family("fieldgate_points_not_good_total", "Readings committed with a quality other than good, by device, quality and reason.", api.Counter)
	g.quality.each(func(dev string, q telemetry.Quality, n uint64) {
		bad(float64(n), "device", dev, "quality", q.ClassString(), "reason", q.ReasonString())
	})

	b := st.Buffer
	m.Family("fieldgate_buffer_bytes", "Bytes of readings held in the buffer.", api.Gauge)(float64(b.Bytes))
	m.Family("fieldgate_buffer_records", "Batches held in the buffer.", api.Gauge)(float64(b.Records))
	m.Family("fieldgate_buffer_points", "Readings held in the buffer.", api.Gauge)(float64(b.Points))
	m.Family("fieldgate_buffer_appended_total", "Batches committed to the buffer.", api.Counter)(float64(b.Appended))
	m.Family("fieldgate_buffer_commits_total", "Buffer write transactions that stored batches.", api.Counter)(float64(b.Commits))
	m.Family("fieldgate_buffer_dropped_total", "Batches the buffer dropped (byte or age bound, corruption).", api.Counter)(float64(b.DroppedRecords))
	dropped := m.Family("fieldgate_buffer_dropped_points_total", "Readings the buffer dropped, by device.", api.Counter)
	for dev, d := range st.BufferDropsByDevice {
		dropped(float64(d.Points), "device", dev)
	}
	m.Family("fieldgate_buffer_aged_total", "Batches dropped because they were older than buffer.max_age.", api.Counter)(float64(b.AgedRecords))
	m.Family("fieldgate_buffer_write_errors_total", "Buffer write transactions that failed (disk full, I/O error).", api.Counter)(float64(b.WriteErrors))
	m.Family("fieldgate_buffer_lost_points_total", "Readings lost because their commit failed.", api.Counter)(float64(b.LostPoints))
	m.Family("fieldgate_buffer_failing", "1 while the last buffer write failed.", api.Gauge)(b2f(b.Failing))

	u := st.Uplink
	m.Family("fieldgate_uplink_connected", "1 while connected to the MQTT broker.", api.Gauge)(b2f(u.Connected))
	m.Family("fieldgate_uplink_published_total", "Data messages published, re-sends included.", api.Counter)(float64(u.Published))
	m.Family("fieldgate_uplink_acked_total", "Data messages the broker acknowledged.", api.Counter)(float64(u.Acked))
	m.Family("fieldgate_uplink_reconnects_total", "Broker connections made after the first.", api.Counter)(float64(u.Reconnects))
	m.Family("fieldgate_uplink_in_flight", "Data messages sent and not yet acknowledged.", api.Gauge)(float64(u.InFlight))
	m.Family("fieldgate_uplink_settling", "Data messages the broker acknowledged whose deletion from the buffer is not yet durable.", api.Gauge)(float64(u.Settling))
	m.Family("fieldgate_uplink_backlog_records", "Batches still to replay after an outage.", api.Gauge)(float64(u.BacklogRecords))
	m.Family("fieldgate_uplink_replayed_total", "Backlog batches delivered (sent as historical).", api.Counter)(float64(u.ReplayedTotal))
	m.Family("fieldgate_uplink_live_total", "Live batches delivered.", api.Counter)(float64(u.LiveTotal))
	m.Family("fieldgate_uplink_encode_errors_total", "Batches the payload encoder refused.", api.Counter)(float64(u.EncodeErrors))
	m.Family("fieldgate_uplink_slow_acks_total", "Acknowledgements to the buffer still running after 10 s (publishing stops while 8 windows of messages wait for them).", api.Counter)(float64(u.SlowAcks))

	writes := m.Family("fieldgate_writes_total", "Cloud-to-device write attempts by device and result code (ok, out_of_range, ...); device is empty for names that are not configured.", api.Counter)
	g.wr.eachCount(func(dev, result string, n uint64) { writes(float64(n), "device", dev, "result", result) })
	m.Family("fieldgate_audit_write_errors_total", "Audit log entries that could not be written.", api.Counter)(float64(g.audit.Errors()))
}

// Ready reports whether the gateway is doing its job: the buffer takes
// writes, the broker is connected, and at least one device answers.
func (g *Gateway) Ready() error {
	st := g.Status()
	var errs []error
	if st.Buffer.Failing {
		errs = append(errs, fmt.Errorf("buffer writes failing: %s", st.Buffer.LastError))
	}
	if !st.Uplink.Connected {
		errs = append(errs, errors.New("not connected to the MQTT broker"))
	}
	anyUp := false
	for _, d := range st.Devices {
		anyUp = anyUp || d.Up
	}
	if !anyUp && len(st.Devices) > 0 {
		errs = append(errs, errors.New("no device answers"))
	}
	return errors.Join(errs...)
}
