// Package broker runs an embedded MQTT broker (mochi-mqtt) on a loopback
// address. It is the broker behind `fieldgate demo` and the gateway's own
// tests; production deployments use the factory's or the cloud's broker.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Broker is an embedded MQTT 3.1.1/5 broker that allows every client.
// Its methods are safe for concurrent use.
type Broker struct {
	srv *mqtt.Server
	tcp *listeners.TCP
}

// Start listens on addr (host:port; port 0 picks a free one) and serves
// until Close. log receives the broker's warnings and errors.
func Start(addr string, log *slog.Logger) (*Broker, error) {
	srv := mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Logger:                 log,
		SysTopicResendInterval: 3600,
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("embedded broker: listen on %s: %w", addr, err)
	}
	if err := srv.Serve(); err != nil {
		_ = srv.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return &Broker{srv: srv, tcp: tcp}, nil
}

// Addr returns the host:port the broker listens on.
func (b *Broker) Addr() string { return b.tcp.Address() }

// URL returns the broker's address as a tcp:// URL.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Subscribe calls fn for every message published to a topic matching
// filter, from the broker's own goroutines; fn must not block for long.
// The payload is only valid during the call. id tells subscriptions apart.
func (b *Broker) Subscribe(filter string, id int, fn func(topic string, payload []byte, retained bool)) error {
	return b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		fn(pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
	})
}

// Close disconnects every client and stops the broker. mochi v2.7.9 can
// deadlock in Server.Close when a client disconnects at that moment
// (Clients.GetByListener takes its read lock twice while Delete waits for
// the write lock); Close gives up after closeTimeout and leaves that
// goroutine behind rather than hang its caller.
func (b *Broker) Close() error { return CloseServer(b.srv) }

const closeTimeout = 5 * time.Second

// ErrCloseTimeout is returned by CloseServer when mochi's Close did not
// return in time.
var ErrCloseTimeout = errors.New("embedded broker: close did not finish in 5 s (mochi lock-order bug); gave up")

// CloseServer closes a mochi server with the timeout described at Close.
func CloseServer(srv *mqtt.Server) error {
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(closeTimeout):
		return ErrCloseTimeout
	}
}
