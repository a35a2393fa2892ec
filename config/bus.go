package config

import (
	"fmt"
	"strconv"

	"github.com/fieldgate/fieldgate/collector/modbus"
)

// busDevice is a device on a shared link, as buses sees it.
type busDevice struct {
	path string // devices[i]
	name string
	ep   modbus.Endpoint
	unit uint8
}

// buses checks devices that share a link: one serial port has one set of
// line settings and one protocol, a host:port speaks one protocol, and on
// a bus (RTU, ASCII, or RTU through a serial server) each device has its
// own unit id.
func (v *validator) buses(c *Config) {
	byAddr := map[string]busDevice{}           // first device on each port or host:port
	byUnit := map[string]map[uint8]busDevice{} // link → unit → first device
	for i := range c.Devices {
		d := &c.Devices[i]
		p := fmt.Sprintf("devices[%d]", i)
		if d.Modbus == nil || (v.src != nil && v.src.skip[p]) || v.src.covered(p+".modbus.url") {
			continue
		}
		ep, err := modbus.ParseURL(d.Modbus.URL)
		if err != nil {
			continue // reported by modbus
		}
		bd := busDevice{path: p, name: d.Name, ep: ep, unit: d.Modbus.Unit}
		url := p + ".modbus.url"
		first, seen := byAddr[ep.Addr]
		switch {
		case !seen:
			byAddr[ep.Addr] = bd
		case first.ep.Transport != ep.Transport:
			v.errorf(url, "%s is on %s like device %s (%s), but speaks %s there and %s here; one port or address carries one protocol",
				d.Name, ep.Addr, first.name, v.line(first.path+".modbus.url"), first.ep.Transport, ep.Transport)
			continue
		case ep.Transport.IsSerial() && first.ep.Serial != ep.Serial:
			v.errorf(url, "%s is on the serial port %s like device %s (%s), but with %s here and %s there; all devices on one bus need the same baud, parity, stop and data bits",
				d.Name, ep.Addr, first.name, v.line(first.path+".modbus.url"), serialString(ep.Serial), serialString(first.ep.Serial))
		}
		if ep.Transport == modbus.TCP {
			continue // each TCP device answers on its own; unit ids may repeat
		}
		units := byUnit[ep.Link()]
		if units == nil {
			units = map[uint8]busDevice{}
			byUnit[ep.Link()] = units
		}
		if f, ok := units[bd.unit]; ok {
			v.errorf(p+".modbus.unit", "%s and %s (%s) both use unit %d on the bus %s; each device on one bus needs its own unit id",
				d.Name, f.name, v.line(f.path+".modbus.unit"), bd.unit, ep.Link())
			continue
		}
		units[bd.unit] = bd
	}
}

// line names where path is: "line 12", or the path itself without a file.
func (v *validator) line(path string) string {
	if n := v.src.node(path); n != nil {
		return "line " + strconv.Itoa(n.Line)
	}
	return path
}

// serialString writes line settings the usual way: 9600 baud 8E1.
func serialString(s modbus.Serial) string {
	return fmt.Sprintf("%d baud %d%s%d", s.Baud, s.DataBits, s.Parity, s.StopBits)
}
