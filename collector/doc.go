// Package collector schedules device polls and turns what drivers read into
// telemetry batches. It runs one goroutine per device connection; a device
// that fails is retried with capped, jittered exponential backoff while its
// tags are reported with Bad quality, and never delays the other devices.
//
// Drivers live in sub-packages (collector/modbus); the gateway builds them
// from configuration and hands them to New.
package collector
