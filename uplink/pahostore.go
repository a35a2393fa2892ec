package uplink

import (
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// noStore is the paho message store of every connection: it keeps
// nothing. paho's default MemoryStore copies each QoS 1 PUBLISH into a
// map under a formatted key until its PUBACK, so that paho can resend it
// when it reconnects by itself. The uplink never lets paho reconnect or
// resume a session (clean session, a new client per connection): what is
// not acknowledged stays in the buffer and is sent again from there, so a
// store only costs a lock, a map update and two allocations per PUBLISH
// and per PUBACK.
type noStore struct{}

func (noStore) Open()                             {}
func (noStore) Put(string, packets.ControlPacket) {}
func (noStore) Get(string) packets.ControlPacket  { return nil }
func (noStore) All() []string                     { return nil }
func (noStore) Del(string)                        {}
func (noStore) Close()                            {}
func (noStore) Reset()                            {}
