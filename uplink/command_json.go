package uplink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/fieldgate/fieldgate/telemetry"
)

// Bounds of a JSON set command.
const (
	MaxCommandBytes = 64 << 10 // the largest payload parsed; larger ones are rejected unread
	MaxTagName      = 256      // bytes of a tag name
	MaxCommandID    = 256      // bytes of an id (a string's, or a number's digits)
)

// SetCommand is a parsed JSON set command:
//
//	{"id":"abc","tag":"setpoint","value":42.5}
//
// id is optional, a string or a number; tag is a tag name; value is a
// bool, a number or a string.
type SetCommand struct {
	// ID is the id as written in the payload: a JSON string (quotes and
	// escapes included) or number, to echo in the result exactly; nil
	// when absent.
	ID  json.RawMessage
	Tag string
	// Value: see ParseJSONValue.
	Value telemetry.Value
}

// IDText returns the id as text, for logs and the audit log: a string's
// content, a number's digits, or "".
func (c *SetCommand) IDText() string { return idText(c.ID) }

func idText(raw json.RawMessage) string {
	var s string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// ParseSetCommand parses a JSON set command strictly: one object with no
// other keys than id, tag and value, each at most once, and nothing after
// it. On error the returned command holds the id if it could be read
// before the problem, so that the rejection can carry it.
func ParseSetCommand(payload []byte) (SetCommand, error) {
	var c SetCommand
	if len(payload) > MaxCommandBytes {
		return c, fmt.Errorf("payload of %d bytes is over the limit of %d", len(payload), MaxCommandBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return c, errors.New(`want a JSON object such as {"id":"1","tag":"setpoint","value":42.5}`)
	}
	var seen [3]bool
	idx := map[string]int{"id": 0, "tag": 1, "value": 2}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return c, jsonError(err)
		}
		key, _ := tok.(string)
		i, ok := idx[key]
		if !ok {
			return c, fmt.Errorf("unknown key %q; a set command has id, tag and value", cut(key))
		}
		if seen[i] {
			return c, fmt.Errorf("key %q given twice", key)
		}
		seen[i] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return c, fmt.Errorf("%s: %w", key, jsonError(err))
		}
		switch key {
		case "id":
			if err := checkID(raw); err != nil {
				return c, err
			}
			c.ID = raw
		case "tag":
			if err := json.Unmarshal(raw, &c.Tag); err != nil || raw[0] != '"' {
				return c, errors.New("tag: want a string")
			}
			if err := CheckTagName(c.Tag); err != nil {
				return c, fmt.Errorf("tag: %w", err)
			}
		case "value":
			if c.Value, err = ParseJSONValue(raw); err != nil {
				return c, fmt.Errorf("value: %w", err)
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return c, jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return c, errors.New("data after the JSON object")
	}
	switch {
	case !seen[1]:
		return c, errors.New("tag: required")
	case !seen[2]:
		return c, errors.New("value: required")
	}
	return c, nil
}

// jsonError words a decoding error for the result's reason.
func jsonError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("not valid JSON: it ends early")
	}
	return fmt.Errorf("not valid JSON: %v", err)
}

// checkID accepts a JSON string or number of bounded length.
func checkID(raw json.RawMessage) error {
	switch {
	case len(raw) == 0:
	case raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			break
		}
		if len(s) > MaxCommandID {
			return fmt.Errorf("id: longer than %d bytes", MaxCommandID)
		}
		return nil
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		if len(raw) > MaxCommandID {
			return fmt.Errorf("id: longer than %d bytes", MaxCommandID)
		}
		return nil
	}
	return errors.New("id: want a string or a number")
}

// CheckTagName reports whether s can name a tag: 1..MaxTagName bytes of
// letters, digits, '_', '.' and '-' (the names the config accepts).
func CheckTagName(s string) error {
	if s == "" || len(s) > MaxTagName {
		return fmt.Errorf("a tag name has 1 to %d characters", MaxTagName)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return fmt.Errorf("%q is not a tag name (letters, digits, '_', '.' and '-')", cut(s))
		}
	}
	return nil
}

// ParseJSONValue turns one JSON value into the Value of a write request:
// true or false → bool; a number without fraction or exponent → int (uint
// above the int64 range); any other number → float (12.0 stays a float:
// the write path accepts a whole float for an integer tag); a string →
// string. null, objects and arrays are errors, and so are numbers beyond
// the float64 range. Formats whose commands carry JSON values (ThingsBoard
// RPC params) use it too.
func ParseJSONValue(raw []byte) (telemetry.Value, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return telemetry.Value{}, errors.New("missing")
	}
	switch raw[0] {
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return telemetry.Value{}, errors.New("want a bool, a number or a string")
		}
		return telemetry.Bool(b), nil
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return telemetry.Value{}, errors.New("not a valid JSON string")
		}
		return telemetry.String(s), nil
	case 'n':
		return telemetry.Value{}, errors.New("null is not a value to write")
	case '{', '[':
		return telemetry.Value{}, errors.New("want a bool, a number or a string, not an object or a list")
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return telemetry.Value{}, errors.New("want a bool, a number or a string")
	}
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return telemetry.Int(i), nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return telemetry.Uint(u), nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return telemetry.Value{}, fmt.Errorf("%s is beyond the range of a number", cut(s))
	}
	return telemetry.Float(f), nil
}

// cut shortens s for an error message.
func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// AppendSetResult appends the JSON result of a set command:
//
//	{"id":"abc","device":"press-1","tag":"setpoint","ok":true}
//	{"id":"abc","device":"press-1","tag":"setpoint","ok":false,"code":"out_of_range","reason":"42.5 is above max 40"}
//
// id is echoed as given (a raw JSON string or number) and left out when
// nil, as is tag when empty.
func AppendSetResult(dst []byte, id json.RawMessage, device, tag string, r WriteResult) []byte {
	dst = append(dst, '{')
	if len(id) > 0 {
		dst = append(dst, `"id":`...)
		dst = append(dst, id...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"device":`...)
	dst = appendJSONString(dst, device)
	if tag != "" {
		dst = append(dst, `,"tag":`...)
		dst = appendJSONString(dst, tag)
	}
	if r.OK() {
		return append(dst, `,"ok":true}`...)
	}
	dst = append(dst, `,"ok":false,"code":`...)
	dst = appendJSONString(dst, r.Code)
	if r.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = appendJSONString(dst, r.Reason)
	}
	return append(dst, '}')
}

func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}
