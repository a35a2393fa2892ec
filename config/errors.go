package config

import (
	"errors"
	"strconv"
	"strings"
)

// ErrNotSupported is wrapped by the *Error for a key or value that the
// configuration schema reserves but this version of fieldgate does not
// implement yet (writes, ...). Test for it
// with errors.Is.
var ErrNotSupported = errors.New("not supported yet")

// Error is one problem in a configuration file. Load and Parse return all
// problems of a file joined with errors.Join; use errors.As on each to
// reach the position.
type Error struct {
	File   string // the file name given to Parse or Load; may be empty for Validate
	Line   int    // 1-based; 0 when unknown
	Column int    // 1-based; 0 when unknown
	Path   string // field path such as devices[0].tags[3].type; empty for syntax errors
	Msg    string // lowercase, without the position and path
	Err    error  // the cause, if any (e.g. ErrNotSupported, an *fs.PathError)
}

// Error returns "file:line:col: path: message", leaving out the parts that
// are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
			if e.Column > 0 {
				b.WriteString(":" + strconv.Itoa(e.Column))
			}
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }
