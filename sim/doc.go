// Package sim holds in-process device simulators for tests, benchmarks and
// `fieldgate demo`. ModbusServer is a Modbus TCP server written from the
// specification (MBAP framing, function codes 1–6, 15 and 16, exceptions
// 01–03), independent of the client library the gateway uses.
package sim
