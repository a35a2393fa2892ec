package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/config"
)

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fieldgate validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (required)")
	plan := fs.Bool("plan", false, "print each device's read plan: which registers each request covers")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if *path == "" {
		fmt.Fprintln(stderr, "fieldgate validate: -c FILE is required")
		return exitConfig
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "%s\n", err)
		return exitConfig
	}
	tags := 0
	for _, d := range cfg.Devices {
		tags += len(d.Tags) + len(d.OPCUATags)
	}
	// Build every driver as the gateway would (no I/O): that checks what
	// only a driver can, such as devices sharing a bus.
	quiet := slog.New(slog.DiscardHandler)
	links := modbus.NewLinks(quiet)
	failed := false
	for _, d := range cfg.Devices {
		if d.Modbus == nil {
			continue
		}
		drv, err := modbus.New(d.Name, *d.Modbus, quiet, modbus.WithLinks(links))
		if err != nil {
			fmt.Fprintf(stderr, "%s: device %q: %v\n", *path, d.Name, err)
			failed = true
			continue
		}
		if *plan {
			if err := drv.Plan().Format(stdout); err != nil {
				fmt.Fprintln(stderr, "fieldgate validate:", err)
				return exitFail
			}
		}
		_ = drv.Close()
	}
	if failed {
		return exitConfig
	}
	fmt.Fprintf(stdout, "config OK: %s: gateway %q, %d devices, %d tags\n", *path, cfg.Gateway.ID, len(cfg.Devices), tags)
	return exitOK
}
