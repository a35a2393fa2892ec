package main

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
	fgopcua "github.com/fieldgate/fieldgate/collector/opcua"
	"github.com/fieldgate/fieldgate/config"
	"github.com/fieldgate/fieldgate/telemetry"
)

const readUsage = `Usage:
  fieldgate read -c FILE DEVICE[/TAG]     read a configured device (or one tag) once (Modbus or OPC UA)
  fieldgate read --url URL [--unit N] --address N [--type T] [--order O] [--count N] ...
                                          read registers with no config at all

Prints each request with the raw answer, and each tag with its raw registers
beside the decoded value, unit and quality. For an OPC UA device: each tag's
node, value, quality and source timestamp, all read with one Read request
(subscribed tags too).

Flags:
`

func cmdRead(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fieldgate read", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, readUsage); fs.PrintDefaults() }
	path := fs.String("c", "", "config file")
	rawURL := fs.String("url", "", "device URL (tcp://host:502, rtuovertcp://host:port, rtu:///dev/ttyUSB0?baud=9600&parity=E)")
	unit := fs.Uint("unit", 1, "unit (slave) id")
	address := fs.Uint("address", 0, "Modicon address (40001 = first holding register)")
	table := fs.String("table", "", "table for --offset: coil, discrete, input or holding")
	offset := fs.Int("offset", -1, "zero-based offset in --table")
	typ := fs.String("type", "uint16", "type: "+strings.Join(modbus.TypeNames, ", "))
	order := fs.String("order", "ABCD", "byte order: "+strings.Join(modbus.OrderNames, ", "))
	length := fs.Uint("length", 0, "registers, for type string")
	bit := fs.Int("bit", -1, "bit 0..15 of a register, for type bool")
	scale := fs.Float64("scale", 0, "multiply the raw value (0: none)")
	count := fs.Int("count", 1, "read this many consecutive values of --type")
	timeout := fs.Duration("timeout", time.Second, "per request")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	var (
		name string
		cfg  modbus.Config
		only string
	)
	switch {
	case *path != "" && *rawURL != "":
		fmt.Fprintln(stderr, "fieldgate read: use either -c FILE DEVICE[/TAG] or --url, not both")
		return exitConfig
	case *path != "":
		if fs.NArg() != 1 {
			fmt.Fprintln(stderr, "fieldgate read: name the device to read: fieldgate read -c FILE DEVICE[/TAG]")
			return exitConfig
		}
		c, err := config.Load(*path)
		if err != nil {
			fmt.Fprintf(stderr, "%s\n", err)
			return exitConfig
		}
		name, only, _ = strings.Cut(fs.Arg(0), "/")
		var names []string
		for _, d := range c.Devices {
			names = append(names, d.Name)
			if d.Name == name && d.Modbus != nil {
				cfg = *d.Modbus
			}
			if d.Name == name && d.OPCUA != nil {
				return readOPCUA(ctx, name, *d.OPCUA, only, stdout, stderr)
			}
		}
		if cfg.URL == "" {
			fmt.Fprintf(stderr, "fieldgate read: %s has no device %q; it has %s\n", *path, name, strings.Join(names, ", "))
			return exitConfig
		}
		if only != "" {
			var keep []modbus.Tag
			for _, t := range cfg.Tags {
				if t.Name == only {
					keep = append(keep, t)
				}
			}
			if keep == nil {
				fmt.Fprintf(stderr, "fieldgate read: device %q has no tag %q\n", name, only)
				return exitConfig
			}
			cfg.Tags = keep
		}
	case *rawURL != "":
		var err error
		cfg, err = adHocConfig(*rawURL, *unit, *address, *table, *offset, *typ, *order, *length, *bit, *scale, *count, *timeout)
		if err != nil {
			fmt.Fprintln(stderr, "fieldgate read:", err)
			return exitConfig
		}
		name = "ad hoc"
	default:
		fs.Usage()
		return exitConfig
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	drv, err := modbus.New(name, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate read: %v\n", err)
		return exitConfig
	}
	defer drv.Close()
	ins, err := drv.Inspect(ctx)
	printInspections(stdout, name, cfg, ins)
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate read: %s: %v\n", cfg.URL, err)
		return exitFail
	}
	for _, in := range ins {
		if in.Err != nil {
			return exitFail
		}
	}
	return exitOK
}

// adHocConfig builds a one-device config from read's flags.
func adHocConfig(rawURL string, unit, address uint, table string, offset int, typ, order string,
	length uint, bit int, scale float64, count int, timeout time.Duration) (modbus.Config, error) {
	if _, err := modbus.ParseURL(rawURL); err != nil {
		return modbus.Config{}, fmt.Errorf("--url: %w", err)
	}
	if unit > 255 {
		return modbus.Config{}, fmt.Errorf("--unit %d: use 0..247 (255 for some TCP devices)", unit)
	}
	var t modbus.Tag
	if err := t.Type.UnmarshalText([]byte(typ)); err != nil {
		return modbus.Config{}, fmt.Errorf("--type: %w", err)
	}
	if err := t.Order.UnmarshalText([]byte(order)); err != nil {
		return modbus.Config{}, fmt.Errorf("--order: %w", err)
	}
	var tb modbus.Table
	var off uint16
	switch {
	case address != 0 && offset < 0 && table == "":
		var err error
		if tb, off, err = modbus.ParseModicon(uint32(address)); err != nil {
			return modbus.Config{}, fmt.Errorf("--address: %w", err)
		}
	case address == 0 && offset >= 0 && offset <= 65535 && table != "":
		if err := tb.UnmarshalText([]byte(table)); err != nil {
			return modbus.Config{}, fmt.Errorf("--table: %w", err)
		}
		off = uint16(offset)
	default:
		return modbus.Config{}, errors.New("give --address N (Modicon, e.g. 40001), or --table and --offset")
	}
	if count < 1 || count > 125 {
		return modbus.Config{}, fmt.Errorf("--count %d: use 1..125", count)
	}
	t.Length = uint16(length)
	if bit >= 0 {
		b := uint8(bit)
		t.Bit = &b
	}
	if scale != 0 {
		t.Scale = &scale
	}
	step := t.Type.Registers()
	if t.Type == modbus.TypeString {
		step = t.Length
	}
	if tb.IsBit() || step == 0 {
		step = 1
	}
	cfg := modbus.Config{URL: rawURL, Unit: uint8(unit), Timeout: timeout, Poll: time.Second}
	for i := range count {
		tag := t
		o := uint16(int(off) + i*int(step))
		tag.Table, tag.Offset = tb, &o
		tag.Name = modiconName(tb, o)
		cfg.Tags = append(cfg.Tags, tag)
	}
	return cfg, nil
}

// modiconName is a tag's address in Modicon notation, or table:offset past 9999.
func modiconName(t modbus.Table, off uint16) string {
	base := map[modbus.Table]int{modbus.Coil: 1, modbus.DiscreteInput: 10001, modbus.InputRegister: 30001, modbus.HoldingRegister: 40001}[t]
	if int(off) <= 9998 {
		return strconv.Itoa(base + int(off))
	}
	return t.String() + ":" + strconv.Itoa(int(off))
}

// printInspections writes one block per request: the request, its raw
// answer, and a table of its tags with their raw registers and values.
func printInspections(w io.Writer, device string, cfg modbus.Config, ins []modbus.Inspection) {
	tags := map[string]modbus.Tag{}
	for _, t := range cfg.Tags {
		tags[t.Name] = t
	}
	if device == "ad hoc" {
		fmt.Fprintf(w, "%s, unit %d\n", cfg.URL, cfg.Unit)
	} else {
		fmt.Fprintf(w, "device %s at %s, unit %d\n", device, cfg.URL, cfg.Unit)
	}
	for _, in := range ins {
		r := in.Request
		fmt.Fprintf(w, "\nfc%d %s %d..%d (%s..%s), %d %s\n", r.Function(), r.Table, r.Start, int(r.Start)+int(r.Count)-1,
			modiconName(r.Table, r.Start), modiconName(r.Table, r.Start+r.Count-1), r.Count, unitWord(r.Table, r.Count))
		if in.Frame != nil {
			fmt.Fprintf(w, "  answer: % x\n", in.Frame)
		}
		if in.Err != nil {
			fmt.Fprintf(w, "  error:  %v\n", in.Err)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  tag\taddress\ttype\traw\tvalue\tquality")
		for _, p := range in.Points {
			t := tags[p.Tag]
			tb, off := tagAddress(t)
			raw := rawOf(in, tb, off, t)
			val := p.Value.String()
			if p.Unit != "" && !p.Value.IsNone() {
				val += " " + p.Unit
			}
			typ := t.Type.String()
			if t.Type.Registers() > 1 || t.Type == modbus.TypeString {
				typ += " " + orderOrDefault(t.Order)
			}
			if t.Bit != nil {
				typ += " bit " + strconv.Itoa(int(*t.Bit))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", p.Tag, modiconName(tb, off), typ, raw, val, p.Quality)
		}
		_ = tw.Flush()
	}
}

func unitWord(t modbus.Table, n uint16) string {
	switch {
	case t.IsBit() && n == 1:
		return "bit"
	case t.IsBit():
		return "bits"
	case n == 1:
		return "register"
	}
	return "registers"
}

func orderOrDefault(o modbus.Order) string {
	if o == modbus.OrderNone {
		return modbus.ABCD.String()
	}
	return o.String()
}

// tagAddress resolves a configured tag's table and offset.
func tagAddress(t modbus.Tag) (modbus.Table, uint16) {
	if t.Offset != nil {
		return t.Table, *t.Offset
	}
	tb, off, _ := modbus.ParseModicon(t.Address)
	return tb, off
}

// rawOf returns the tag's registers (hex, a space between registers) or its
// bit (0/1) from the inspection's data.
func rawOf(in modbus.Inspection, tb modbus.Table, off uint16, t modbus.Tag) string {
	if in.Data == nil || off < in.Request.Start {
		return "-"
	}
	rel := int(off - in.Request.Start)
	if tb.IsBit() {
		if rel/8 >= len(in.Data) {
			return "-"
		}
		return strconv.Itoa(int(in.Data[rel/8] >> (rel % 8) & 1))
	}
	n := int(t.Type.Registers())
	if t.Type == modbus.TypeString {
		n = int(t.Length)
	}
	if n == 0 {
		n = 1 // bool from a register bit
	}
	if 2*(rel+n) > len(in.Data) {
		return "-"
	}
	regs := make([]string, n)
	for i := range n {
		regs[i] = hex.EncodeToString(in.Data[2*(rel+i) : 2*(rel+i)+2])
	}
	return strings.Join(regs, " ")
}

// readOPCUA reads an OPC UA device's tags (or one) once, every tag by one
// Read request whatever its mode, and prints them.
func readOPCUA(ctx context.Context, name string, cfg fgopcua.Config, only string, stdout, stderr io.Writer) int {
	var tags []fgopcua.Tag
	for _, t := range cfg.Tags {
		if only == "" || t.Name == only {
			t.Mode, t.QueueSize = fgopcua.ModePoll, 0
			t.Poll = 0
			tags = append(tags, t)
		}
	}
	if len(tags) == 0 {
		fmt.Fprintf(stderr, "fieldgate read: device %q has no tag %q\n", name, only)
		return exitConfig
	}
	cfg.Tags = tags
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	drv, err := fgopcua.New(name, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(stderr, "fieldgate read: %v\n", err)
		return exitConfig
	}
	defer drv.Close()
	policy, mode := cfg.SecurityPolicy, cfg.SecurityMode
	fmt.Fprintf(stdout, "device %s at %s, security %s/%s\n", name, cfg.URL, cmp.Or(policy, "None"), cmp.Or(mode, "None"))
	cctx, cancel := context.WithTimeout(ctx, drv.Timeout())
	defer cancel()
	if err := drv.Connect(cctx); err != nil {
		fmt.Fprintf(stderr, "fieldgate read: %v\n", err)
		return exitFail
	}
	nodes := map[string]string{}
	for _, t := range tags {
		nodes[t.Name] = t.Node
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  tag\tnode\tvalue\tquality\ttime")
	code := exitOK
	for g := range drv.Groups() {
		pts, err := drv.Read(cctx, g, nil)
		if err != nil {
			_ = tw.Flush()
			fmt.Fprintf(stderr, "fieldgate read: %v\n", err)
			return exitFail
		}
		for _, p := range pts {
			val := p.Value.String()
			if p.Unit != "" && !p.Value.IsNone() {
				val += " " + p.Unit
			}
			if p.Quality.Class() == telemetry.Bad {
				code = exitFail
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", p.Tag, nodes[p.Tag], val, p.Quality, p.Time.UTC().Format(time.RFC3339Nano))
		}
	}
	_ = tw.Flush()
	return code
}
