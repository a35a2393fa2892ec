// Package audit keeps fieldgate's audit log: one JSON object per line for
// every cloud-to-device write attempt (accepted or not), for readings the
// buffer dropped, and for configuration reloads. The file is rotated by
// size (audit.log → audit.log.1 → … → audit.log.N, the oldest deleted), so
// the log never holds more than (Files+1) × MaxBytes bytes.
//
// Each line is written with one write(2) call and is in the operating
// system's hands when Write returns; it is not fsynced, so a power loss can
// lose the last lines.
//
// # Line format
//
//	{"time":"2025-01-02T03:04:05.678Z","event":"write","source":"json",
//	 "topic":"fieldgate/gw/press-1/set","id":"abc","device":"press-1",
//	 "tag":"setpoint","old":40,"new":42.5,"result":"ok","duration_ms":12.5}
//	{"time":"…","event":"buffer_drop","device":"press-1","records":4,"points":120}
//
// time is RFC 3339 UTC with milliseconds. Keys with no value are left out
// (old when it could not be read, reason when the result is ok). Values
// keep their JSON type: true, 42, 42.5, "text"; a string longer than
// MaxString bytes is cut there and ends in "…".
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Events.
const (
	EventWrite      = "write"       // a cloud-to-device write attempt
	EventBufferDrop = "buffer_drop" // readings the buffer dropped (bound reached, too old, damaged)
	// EventReload is a configuration reload. Reserved: this version of
	// fieldgate does not reload its configuration.
	EventReload = "reload"
)

// Bounds of the log.
const (
	MinBytes = 64 << 10 // the smallest MaxBytes accepted
	// MaxString is the longest text a field keeps (values, reasons,
	// topics, ids), in bytes; longer text is cut. It keeps every line far
	// below MinBytes.
	MaxString = 256
)

// Entry is one audit event. Fields that are zero are not written.
type Entry struct {
	Time  time.Time // when it happened; Write sets time.Now() when zero
	Event string    // EventWrite, EventBufferDrop or EventReload

	// Writes.
	Source   string // the format the command came in by: json, sparkplug, thingsboard
	Topic    string // the MQTT topic it arrived on
	ID       string // the requester's correlation id
	Device   string // also for buffer_drop
	Tag      string
	Old      telemetry.Value // the tag's value before the write; none when unknown
	New      telemetry.Value // the value asked for
	Result   string          // a result code: ok, out_of_range, ...
	Reason   string          // why, for people; empty when ok
	Duration time.Duration   // from the request's arrival at the writer to its result

	// Buffer drops.
	Records uint64
	Points  uint64
}

// Options bound a Log.
type Options struct {
	MaxBytes int64 // a file is rotated before a line would take it past this; at least MinBytes
	Files    int   // rotated files kept, at least 1
}

// Log is an append-only, size-rotated JSON lines file. It is safe for
// concurrent use.
type Log struct {
	path string
	opts Options
	log  *slog.Logger

	mu     sync.Mutex // guards everything below
	f      *os.File   // nil after a failed open or rotation; reopened by the next Write
	size   int64
	buf    []byte
	err    error // the last write's error, nil when it succeeded
	errs   uint64
	closed bool
}

// Open opens (or creates, mode 0640) the log at path for appending, and
// its folder if missing (mode 0750). log gets write failures; nil discards.
func Open(path string, opts Options, log *slog.Logger) (*Log, error) {
	if opts.MaxBytes < MinBytes {
		return nil, fmt.Errorf("audit: max bytes %d is below %d", opts.MaxBytes, MinBytes)
	}
	if opts.Files < 1 {
		return nil, fmt.Errorf("audit: files %d: keep at least one rotated file", opts.Files)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Log{path: path, opts: opts, log: log}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

// Path returns the file the log writes to.
func (l *Log) Path() string { return l.path }

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Write appends e as one line, rotating first when the line would take
// the file past MaxBytes. An error means the line is lost; it is also kept
// for Err and counted in Errors, and the next Write tries again (reopening
// the file if needed).
func (l *Log) Write(e Entry) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("audit: log closed")
	}
	l.buf = appendEntry(l.buf[:0], &e)
	err := l.writeLocked(l.buf)
	if err != nil {
		l.errs++
		if l.err == nil || l.err.Error() != err.Error() {
			l.log.Error("audit log write failed; entry lost", "path", l.path, "err", err, "event", e.Event, "device", e.Device, "tag", e.Tag)
		}
	} else if l.err != nil {
		l.log.Info("audit log writable again", "path", l.path)
	}
	l.err = err
	return err
}

func (l *Log) writeLocked(line []byte) error {
	if l.f == nil {
		if err := l.open(); err != nil {
			return err
		}
	}
	if l.size > 0 && l.size+int64(len(line)) > l.opts.MaxBytes {
		// A failed rotation leaves the file closed: the line is lost
		// rather than written past the bound.
		if err := l.rotateLocked(); err != nil {
			return err
		}
		if err := l.open(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// rotateLocked closes the file and shifts path.N-1 → path.N … path →
// path.1, deleting the oldest.
func (l *Log) rotateLocked() error {
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("audit: close for rotation: %w", err)
	}
	name := func(i int) string {
		if i == 0 {
			return l.path
		}
		return l.path + "." + strconv.Itoa(i)
	}
	if err := os.Remove(name(l.opts.Files)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	for i := l.opts.Files - 1; i >= 0; i-- {
		if err := os.Rename(name(i), name(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit: rotate: %w", err)
		}
	}
	return nil
}

// Err returns the error of the last Write, or nil when it succeeded.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Errors returns how many entries could not be written since Open.
func (l *Log) Errors() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs
}

// Close closes the file; later Writes fail. It is safe to call more than
// once.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// appendEntry appends e's JSON line, newline included.
func appendEntry(b []byte, e *Entry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, '"')
	str := func(key, s string) {
		if s != "" {
			b = append(b, `,"`...)
			b = append(b, key...)
			b = append(b, `":`...)
			b = appendString(b, s)
		}
	}
	str("event", e.Event)
	str("source", e.Source)
	str("topic", e.Topic)
	str("id", e.ID)
	str("device", e.Device)
	str("tag", e.Tag)
	if !e.Old.IsNone() {
		b = append(b, `,"old":`...)
		b = appendValue(b, e.Old)
	}
	if !e.New.IsNone() {
		b = append(b, `,"new":`...)
		b = appendValue(b, e.New)
	}
	str("result", e.Result)
	str("reason", e.Reason)
	if e.Duration > 0 {
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendFloat(b, math.Round(float64(e.Duration)/1e4)/100, 'f', -1, 64)
	}
	if e.Records > 0 {
		b = append(b, `,"records":`...)
		b = strconv.AppendUint(b, e.Records, 10)
	}
	if e.Points > 0 {
		b = append(b, `,"points":`...)
		b = strconv.AppendUint(b, e.Points, 10)
	}
	return append(b, "}\n"...)
}

// appendValue appends v as JSON; a NaN or infinite float as a string.
func appendValue(b []byte, v telemetry.Value) []byte {
	switch v.Kind() {
	case telemetry.KindString:
		return appendString(b, v.AsString())
	case telemetry.KindFloat:
		if f := v.AsFloat(); math.IsNaN(f) || math.IsInf(f, 0) {
			return appendString(b, v.String())
		}
	}
	return v.AppendText(b)
}

// appendString appends s as a JSON string, cut to MaxString bytes (at a
// rune boundary) with "…" after a cut.
func appendString(b []byte, s string) []byte {
	if len(s) > MaxString {
		cut := MaxString
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
