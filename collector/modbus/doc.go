// Package modbus is the collector's Modbus TCP driver. New resolves a
// device's tags and computes its read plan (no I/O); the Driver then
// connects, reads each poll group with as few requests as the plan allows,
// and decodes registers and bits into telemetry points without allocating.
//
// Config and Tag are the device's configuration types; the config package
// decodes the gateway's YAML into them and validates them. README.md
// describes the driver for users.
package modbus
