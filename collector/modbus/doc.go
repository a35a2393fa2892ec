// Package modbus is the collector's Modbus driver: Modbus TCP, RTU on a
// serial line, RTU through a TCP serial server, and ASCII. New resolves a
// device's tags and computes its read plan (no I/O); the Driver then
// connects, reads each poll group with as few requests as the plan allows,
// and decodes registers and bits into telemetry points without allocating
// per tag. Devices on one serial port, one serial server or one Modbus TCP
// gateway share one connection through Links and take turns on it. Write
// sets a tag; Inspect and Scan serve commissioning.
//
// Config and Tag are the device's configuration types; the config package
// decodes the gateway's YAML into them and validates them. README.md
// describes the driver for users.
//
// Lock order: Links.mu is never held while taking another lock. A link's
// turn (its sem channel) is taken before its mu; no code holding mu waits
// for the turn.
package modbus
