package modbus

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Transport is how a device's requests travel.
type Transport uint8

// The transports.
const (
	TCP        Transport = iota + 1 // Modbus TCP (MBAP header), tcp://host:port
	RTU                             // RTU frames on a serial line, rtu:///dev/ttyUSB0?baud=9600&parity=E&stop=1
	RTUOverTCP                      // RTU frames through a TCP serial server, rtuovertcp://host:port
	ASCII                           // ASCII frames on a serial line, ascii:///dev/ttyUSB0?baud=9600
)

var transportNames = [...]string{"", "tcp", "rtu", "rtuovertcp", "ascii"}

func (t Transport) String() string {
	if int(t) < len(transportNames) {
		return transportNames[t]
	}
	return fmt.Sprintf("transport(%d)", uint8(t))
}

// IsSerial reports whether t runs on a local serial port.
func (t Transport) IsSerial() bool { return t == RTU || t == ASCII }

// Serial are the line settings of a serial port.
type Serial struct {
	Baud     int    // bits per second, default 9600
	DataBits int    // 7 or 8, default 8
	Parity   string // "N", "E" or "O", default "E" (the Modbus default)
	StopBits int    // 1 or 2, default 1
}

// Endpoint is a parsed device URL: the transport and where it goes.
// Devices whose endpoints have the same Link share one connection (a serial
// bus, or a TCP-to-RTU bridge) and their requests are serialised on it.
type Endpoint struct {
	Transport Transport
	Addr      string // host:port for TCP and RTUOverTCP, the device path for RTU and ASCII
	Serial    Serial // RTU and ASCII only
}

// Link identifies the physical link: transport and address.
func (e Endpoint) Link() string { return e.Transport.String() + "://" + e.Addr }

// DefaultSerial are the serial settings used when a URL names none.
var DefaultSerial = Serial{Baud: 9600, DataBits: 8, Parity: "E", StopBits: 1}

// ParseURL parses a device URL:
//
//	tcp://host[:port]                                port 502 by default
//	rtuovertcp://host:port                           RTU frames through a serial server
//	rtu:///dev/ttyUSB0?baud=9600&parity=E&stop=1     also data=7|8
//	ascii:///dev/ttyUSB0?baud=9600&parity=E&stop=1&data=7
//
// Its errors say what is allowed.
func ParseURL(raw string) (Endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	var e Endpoint
	switch strings.ToLower(u.Scheme) {
	case "tcp":
		e.Transport = TCP
	case "rtuovertcp", "rtu+tcp":
		e.Transport = RTUOverTCP
	case "rtu":
		e.Transport = RTU
	case "ascii":
		e.Transport = ASCII
	default:
		return Endpoint{}, fmt.Errorf("%q: scheme %q is not a Modbus transport; use tcp://host:port, rtuovertcp://host:port, rtu:///dev/ttyUSB0?baud=9600&parity=E&stop=1 or ascii:///dev/...", raw, u.Scheme)
	}
	if !e.Transport.IsSerial() {
		if u.Hostname() == "" {
			return Endpoint{}, fmt.Errorf("%q: no host; write %s://host:port", raw, u.Scheme)
		}
		if h := u.Hostname(); strings.ContainsAny(h, "[]") || strings.Contains(h, ":") && !strings.HasPrefix(u.Host, "[") {
			// url.Parse takes only the last ":" as the port's, and lets
			// stray brackets through: a doubled port (h:502:502), a bare
			// IPv6 address or a "]" would make an address no dial finds.
			return Endpoint{}, fmt.Errorf("%q: host %q; write one port, and an IPv6 address in brackets: %s://[::1]:502", raw, h, u.Scheme)
		}
		port := u.Port()
		if port == "" {
			if e.Transport == RTUOverTCP {
				return Endpoint{}, fmt.Errorf("%q: no port; serial servers have no standard port, write rtuovertcp://host:port", raw)
			}
			port = DefaultPort
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Endpoint{}, fmt.Errorf("%q: port %q is not 1..65535", raw, port)
		}
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
			return Endpoint{}, fmt.Errorf("%q: a %s URL has only host and port", raw, e.Transport)
		}
		e.Addr = net.JoinHostPort(u.Hostname(), port)
		return e, nil
	}
	if u.Host != "" {
		return Endpoint{}, fmt.Errorf("%q: a serial URL has a path and no host; write %s:///dev/ttyUSB0 (three slashes)", raw, e.Transport)
	}
	if u.Path == "" {
		return Endpoint{}, fmt.Errorf("%q: no serial device; write %s:///dev/ttyUSB0", raw, e.Transport)
	}
	e.Addr = u.Path
	e.Serial = DefaultSerial
	if e.Transport == ASCII {
		e.Serial.DataBits = 7
	}
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		switch strings.ToLower(k) {
		case "baud":
			n, err := strconv.Atoi(v)
			if err != nil || n < 300 || n > 921600 {
				return Endpoint{}, fmt.Errorf("%q: baud %q is not a rate from 300 to 921600", raw, v)
			}
			e.Serial.Baud = n
		case "parity":
			p := strings.ToUpper(v)
			if p != "N" && p != "E" && p != "O" {
				return Endpoint{}, fmt.Errorf("%q: parity %q; use N, E or O", raw, v)
			}
			e.Serial.Parity = p
		case "stop":
			if v != "1" && v != "2" {
				return Endpoint{}, fmt.Errorf("%q: stop %q; use 1 or 2", raw, v)
			}
			e.Serial.StopBits = int(v[0] - '0')
		case "data":
			if v != "7" && v != "8" {
				return Endpoint{}, fmt.Errorf("%q: data %q; use 7 or 8", raw, v)
			}
			e.Serial.DataBits = int(v[0] - '0')
		default:
			return Endpoint{}, fmt.Errorf("%q: unknown setting %q; use baud, parity, stop or data", raw, k)
		}
	}
	return e, nil
}
