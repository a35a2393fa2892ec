// Package telemetry is the normalised data model shared by every stage of
// fieldgate: a Point is one reading of one tag (typed Value, Quality, time,
// unit), and a Batch is one device's readings from one poll.
//
// The package also holds the compact binary codec used by the buffer
// (AppendBatch / DecodeBatch). Values are a tagged union, so the hot path
// never boxes a reading in an interface.
package telemetry
