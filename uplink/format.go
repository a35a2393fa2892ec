package uplink

import (
	"context"
	"strings"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Message is one MQTT message a Format publishes.
type Message struct {
	Topic    string
	QoS      byte // 0 or 1
	Retained bool
	Payload  []byte
}

// Token is the completion of one publish; paho's mqtt.Token satisfies it.
// Done is closed when a QoS 1 message's PUBACK arrived, or when a QoS 0
// message was written to the socket (nothing more is ever known about QoS
// 0); Error then says whether it failed.
type Token interface {
	Done() <-chan struct{}
	Error() error
}

// Publisher publishes on the current connection. Messages go on the wire in
// the order of the Publish calls that return; it is safe for concurrent
// use, so a Format that needs a strict order across goroutines (Sparkplug's
// seq) holds its own lock around Publish.
type Publisher interface {
	Publish(m Message) Token
}

// Format is what the uplink publishes around and for each record: the
// JSON encoder wrapped with the status topic, Sparkplug B, ThingsBoard.
// New takes an Encoder; one that also implements Format is used as the
// Format, a plain Encoder is published per record to Config.Topic with the
// retained JSON status topic as will (see the package doc). Adding a format
// is one package implementing this interface.
//
// Call order, per connection: Will (before CONNECT), then after CONNACK and
// after the Subscriptions are granted, Online once; then Publish for each
// record from the uplink's sender goroutine, while Command may be called at
// any time from paho's router goroutine, one message at a time in arrival
// order; on a clean stop Offline once before DISCONNECT. Methods of one
// connection are never called after the next connection's Will. An
// implementation must be safe for Command running concurrently with
// Publish, and Command must not block: it may publish but must not wait
// for a token (paho handles PUBACKs only after Command returns), and it
// hands writes to Config.Writes instead of carrying them out.
type Format interface {
	// Will returns the last will of the next connection (an empty Topic
	// for none). An error fails
	// the connection attempt (it is retried with backoff).
	Will() (Message, error)
	// Subscriptions returns the topic filters (subscribed with QoS 1)
	// whose messages go to Command; nil for none.
	Subscriptions() []string
	// Online publishes what precedes the data on a new connection (status,
	// births) and returns the token the uplink waits for before its clean
	// DISCONNECT (may be nil). It may block until ctx is done (waiting for
	// a primary host). An error ends the connection without DISCONNECT.
	Online(ctx context.Context, p Publisher) (Token, error)
	// Publish publishes record r (and whatever must precede it, such as a
	// DBIRTH) and returns the token of the record's own message and its
	// payload, built by appending to dst, which the uplink reuses once the
	// token is done. The uplink acknowledges r to the Source when the token
	// is done without error. An error means r can never be published: it
	// is acknowledged without sending and counted in Stats.EncodeErrors.
	Publish(p Publisher, dst []byte, r *telemetry.Record, historical bool) (Token, []byte, error)
	// Command handles a message on one of Subscriptions. A non-nil error
	// ends the connection without DISCONNECT (the broker sends the will).
	Command(p Publisher, topic string, payload []byte) error
	// Offline publishes the goodbye of a clean stop (may return nil).
	Offline(p Publisher) Token
}

// RetainedCommander is implemented by Formats that treat retained messages
// on their command topics apart: the uplink calls RetainedCommand instead
// of Command for them (same call rules). A retained write command would be
// delivered again at every reconnect and write again, so a Format whose
// commands write refuses them there.
type RetainedCommander interface {
	RetainedCommand(p Publisher, topic string, payload []byte) error
}

// encoderFormat is the Format of a plain Encoder: one message per record to
// Config.Topic, QoS Config.QoS, and the retained status topic (online on
// connect, offline as will and on a clean stop).
//
// With Config.Writes set it also takes JSON set commands (see
// ParseSetCommand) on {data topic}/set, subscribed as the data topic
// template with {device} replaced by the wildcard + (so {device} must fill
// whole topic levels; otherwise no command topic is subscribed), and
// answers each on {data topic}/set/result, QoS 1, not retained (see
// AppendSetResult).
type encoderFormat struct {
	u      *Uplink
	enc    Encoder
	topics map[string]string // device -> topic; used by the sender only
}

func (f *encoderFormat) Will() (Message, error) {
	return Message{Topic: f.u.statusTopic, QoS: 1, Retained: true, Payload: f.u.statusPayload("offline")}, nil
}

func (f *encoderFormat) Subscriptions() []string {
	if f.u.cfg.Writes == nil {
		return nil
	}
	filter, ok := f.commandFilter()
	if !ok {
		f.u.log.Warn("no set command topic: {device} is not a whole level of the topic template, so a command could not name its device", "topic", f.u.cfg.Topic)
		return nil
	}
	return []string{filter}
}

// commandSuffix ends the set command topic of a device's data topic; the
// result topic adds resultSuffix.
const (
	commandSuffix = "/set"
	resultSuffix  = "/result"
)

// commandFilter returns the subscription of the set commands: the data
// topic with each {device} level replaced by +, then /set. ok is false when
// the template has no {device}, or one that shares a level with other text.
func (f *encoderFormat) commandFilter() (string, bool) {
	t := f.u.topic
	if len(t.names) == 0 {
		return "", false
	}
	for i := range t.names {
		before, after := t.lits[i], t.lits[i+1]
		if before != "" && !strings.HasSuffix(before, "/") || after != "" && !strings.HasPrefix(after, "/") {
			return "", false
		}
	}
	return t.expand("+") + commandSuffix, true
}

// commandDevice returns the device a set command topic names, or "" when
// the topic does not match the filter (or names two devices).
func (f *encoderFormat) commandDevice(topic string) string {
	filter, ok := f.commandFilter()
	if !ok || !strings.HasSuffix(topic, commandSuffix) {
		return ""
	}
	want := strings.Split(filter, "/")
	got := strings.Split(topic, "/")
	if len(want) != len(got) {
		return ""
	}
	device := ""
	for i, w := range want {
		switch {
		case w != "+":
			if got[i] != w {
				return ""
			}
		case device == "":
			device = got[i]
		case got[i] != device:
			return ""
		}
	}
	return device
}

func (f *encoderFormat) Online(_ context.Context, p Publisher) (Token, error) {
	return p.Publish(Message{Topic: f.u.statusTopic, QoS: 1, Retained: true, Payload: f.u.statusPayload("online")}), nil
}

func (f *encoderFormat) Publish(p Publisher, dst []byte, r *telemetry.Record, historical bool) (Token, []byte, error) {
	payload, err := f.enc.Encode(dst, f.u.cfg.Gateway, r, historical)
	if err != nil {
		return nil, nil, err
	}
	return p.Publish(Message{Topic: f.topicFor(r.Batch.Device), QoS: f.u.cfg.QoS, Payload: payload}), payload, nil
}

// RetainedCommand refuses a retained set command (it would write again at
// every reconnect): it is answered bad_request, recorded, and not carried
// out.
func (f *encoderFormat) RetainedCommand(p Publisher, topic string, payload []byte) error {
	device := f.commandDevice(topic)
	if device == "" {
		return nil
	}
	cmd, _ := ParseSetCommand(payload)
	r := WriteResult{Code: RejectBadRequest, Reason: "retained set commands are not carried out (the broker would deliver them again at every reconnect); publish with retain off"}
	f.u.log.Warn("retained set command refused", "topic", topic)
	f.u.cfg.Writes.Reject(WriteRequest{ID: cmd.IDText(), Source: "json", Topic: topic, Device: device, Tag: cmd.Tag, Value: cmd.Value}, r)
	p.Publish(Message{Topic: topic + resultSuffix, QoS: 1, Payload: AppendSetResult(nil, cmd.ID, device, cmd.Tag, r)})
	return nil
}

// Command parses a set command and hands it to Config.Writes; the result
// is published when the write is done (at once for a payload that does not
// parse). It never ends the connection.
func (f *encoderFormat) Command(p Publisher, topic string, payload []byte) error {
	device := f.commandDevice(topic)
	if device == "" {
		return nil // not a topic of ours (a retained message on a wider filter)
	}
	result := topic + resultSuffix
	cmd, err := ParseSetCommand(payload)
	if err != nil {
		f.u.log.Warn("set command rejected", "topic", topic, "err", err)
		r := WriteResult{Code: RejectBadRequest, Reason: err.Error()}
		f.u.cfg.Writes.Reject(WriteRequest{ID: cmd.IDText(), Source: "json", Topic: topic, Device: device, Tag: cmd.Tag, Value: cmd.Value}, r)
		p.Publish(Message{Topic: result, QoS: 1, Payload: AppendSetResult(nil, cmd.ID, device, cmd.Tag, r)})
		return nil
	}
	req := WriteRequest{ID: cmd.IDText(), Source: "json", Topic: topic, Device: device, Tag: cmd.Tag, Value: cmd.Value}
	f.u.cfg.Writes.Submit(req, func(r WriteResult) {
		p.Publish(Message{Topic: result, QoS: 1, Payload: AppendSetResult(nil, cmd.ID, device, cmd.Tag, r)})
	})
	return nil
}

func (f *encoderFormat) Offline(p Publisher) Token {
	return p.Publish(Message{Topic: f.u.statusTopic, QoS: 1, Retained: true, Payload: f.u.statusPayload("offline")})
}

// topicFor returns the data topic of device, cached.
func (f *encoderFormat) topicFor(device string) string {
	if t, ok := f.topics[device]; ok {
		return t
	}
	clean := strings.Map(func(r rune) rune {
		if r == '+' || r == '#' || r == 0 {
			return '_'
		}
		return r
	}, device)
	if clean != device {
		f.u.log.Warn("device name has characters not allowed in a topic; replaced with _", "device", device)
	}
	if len(f.topics) >= maxTopicCache {
		clear(f.topics)
	}
	t := f.u.topic.expand(clean)
	f.topics[device] = t
	return t
}

// TopicLevel returns s with the characters a topic level may not hold (+,
// #, / and NUL) replaced by _.
func TopicLevel(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '+' || r == '#' || r == '/' || r == 0 {
			return '_'
		}
		return r
	}, s)
}
