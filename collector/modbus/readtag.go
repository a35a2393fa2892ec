package modbus

import (
	"context"
	"fmt"
	"time"

	"github.com/fieldgate/fieldgate/telemetry"
)

// ReadTag reads one tag now, outside the poll schedule, with one request
// of just its registers or bit, and decodes it as Read does (scale,
// value_offset, clamp). It implements collector.TagReader, for a write's
// old value and read-back check.
//
// Like Write, ReadTag is safe to call while the collector polls the device
// (the request takes its turn on the link) and works whether or not the
// driver is connected. It honours ctx and the device's timeout. The error
// of a refused read wraps an *ExceptionError; a value that does not decode
// gives a Bad point and no error.
func (d *Driver) ReadTag(ctx context.Context, name string) (telemetry.Point, error) {
	i, ok := d.byName[name]
	if !ok {
		return telemetry.Point{}, fmt.Errorf("read %s: no tag %q on this device", name, name)
	}
	t := d.tags[i]
	g := group{tags: []tag{*t}}
	r := request{table: t.table, start: t.offset, count: t.count, tags: []int{0}}
	d.link.use()
	defer func() { _ = d.link.unuse() }()
	_, data, err := d.readRequest(ctx, &r)
	p := telemetry.Point{Tag: t.name, Unit: t.unit, Time: time.Now()}
	if err != nil {
		p.Quality = telemetry.Bad | reason(err)
		return p, err
	}
	pts := []telemetry.Point{p}
	decodeInto(&g, &r, data, pts, p.Time, nil)
	return pts[0], nil
}
