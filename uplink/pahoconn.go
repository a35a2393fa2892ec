package uplink

import (
	"bufio"
	"net"
)

// readBufferSize is the read buffer of the connection paho reads from:
// room for about a thousand PUBACKs.
const readBufferSize = 4 << 10

// bufferedConn is the connection handed to paho: its reads go through a
// buffer. paho v1.5.1 reads each packet straight from the connection a few
// bytes at a time (a 4-byte PUBACK takes three reads: type, length, packet
// id), so at thousands of PUBACKs a second the unbuffered reads were
// thousands of system calls; one read now takes every PUBACK that has
// arrived. paho reads from one goroutine at a time (CONNACK, then its
// incoming loop), which is all bufio.Reader allows.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func newBufferedConn(c net.Conn) *bufferedConn {
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
