package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/collector/modbus"
)

func cmdScan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fieldgate scan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "", "link to scan (tcp://host:502, rtuovertcp://host:port, rtu:///dev/ttyUSB0?baud=9600&parity=E)")
	units := fs.String("units", "1-247", "unit ids to try: a list and ranges, e.g. 1-10,100")
	address := fs.Uint("address", 40001, "Modicon address of the register (or bit) to probe")
	timeout := fs.Duration("timeout", 300*time.Millisecond, "wait this long for each unit")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if *rawURL == "" {
		fmt.Fprintln(stderr, "fieldgate scan: --url is required, e.g. fieldgate scan --url rtu:///dev/ttyUSB0?baud=9600&parity=E")
		return exitConfig
	}
	ids, err := parseUnits(*units)
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate scan: --units:", err)
		return exitConfig
	}
	tb, off, err := modbus.ParseModicon(uint32(*address))
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate scan: --address:", err)
		return exitConfig
	}
	fmt.Fprintf(stdout, "scanning %s: %d unit ids, %v each, probing %s\n", *rawURL, len(ids), *timeout, modiconName(tb, off))
	found, err := modbus.Scan(ctx, *rawURL, ids, *timeout, modbus.Request{Table: tb, Start: off, Count: 1})
	for _, r := range found {
		var ex *modbus.ExceptionError
		switch {
		case r.Err == nil:
			fmt.Fprintf(stdout, "unit %3d: answered: % x\n", r.Unit, r.Data)
		case errors.As(r.Err, &ex):
			fmt.Fprintf(stdout, "unit %3d: there, but refused the probe: %v (try another --address)\n", r.Unit, r.Err)
		default:
			fmt.Fprintf(stdout, "unit %3d: answered garbled: %v (check baud rate and parity)\n", r.Unit, r.Err)
		}
	}
	fmt.Fprintf(stdout, "%d of %d unit ids answered\n", len(found), len(ids))
	if err != nil {
		fmt.Fprintln(stderr, "fieldgate scan:", err)
		return exitFail
	}
	return exitOK
}

// parseUnits parses "1-10,100" into unit ids.
func parseUnits(s string) ([]uint8, error) {
	var out []uint8
	seen := map[int]bool{}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b > 255 || a > b {
			return nil, fmt.Errorf("%q is not a unit id or range (0..255, e.g. 1-10)", part)
		}
		for u := a; u <= b; u++ {
			if !seen[u] {
				seen[u] = true
				out = append(out, uint8(u))
			}
		}
	}
	return out, nil
}
