package config

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/collector/modbus"
)

// csvTags are the tags read from one tags_csv file.
type csvTags struct {
	src    *source
	tags   []modbus.Tag
	failed bool // some rows could not be read at all
}

// csvColumns returns the columns a tags_csv header may name: the tag keys
// that hold a single value (clamp, a mapping, is YAML-only).
func csvColumns() []string {
	var cols []string
	for _, f := range fieldsOf(tagType) {
		if f.key != "clamp" {
			cols = append(cols, f.key)
		}
	}
	return cols
}

// csv reads the tags_csv file name, relative to the config file's folder,
// for the device key at path. It returns nil after reporting a file that
// cannot be read.
func (x *extras) csv(src *source, at, name string) *csvTags {
	file := name
	if !filepath.IsAbs(file) {
		file = filepath.Join(x.dir, file)
	}
	if ct, ok := x.csvs[file]; ok {
		return ct
	}
	data, err := os.ReadFile(file)
	if err != nil {
		x.errorf(src, at, "cannot read tags: %v", err)
		return nil
	}
	ct := x.parseCSV(file, data)
	x.csvs[file] = ct
	return ct
}

// parseCSV turns each row of a tags CSV file into a tag, exactly as if it
// were written in YAML with the header's names as keys; an empty cell is a
// key left out. Problems read "file.csv:ROW: column: message", ROW being
// the line number in the file (the header is line 1).
func (x *extras) parseCSV(file string, data []byte) *csvTags {
	x.files = append(x.files, file)
	csrc := newSource(file)
	csrc.csv = true
	ct := &csvTags{src: csrc}
	fail := func(line int, column, format string, args ...any) {
		x.errs = append(x.errs, &Error{File: file, Line: line, Path: column, Msg: fmt.Sprintf(format, args...)})
		ct.failed = true
	}

	data = bytes.TrimPrefix(data, []byte("\ufeff")) // the byte order mark that spreadsheets write
	r := csv.NewReader(bytes.NewReader(data))
	r.Comma = delimiter(data)
	r.Comment = '#'
	r.FieldsPerRecord = -1 // checked below, with a better message
	readErr := func(err error) {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			fail(pe.Line, "", "%v", pe.Err)
		} else {
			fail(0, "", "%v", err)
		}
	}

	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		fail(1, "", "empty file; the first row names the columns, e.g. name,address,type,order,scale,unit,description")
		return ct
	} else if err != nil {
		readErr(err)
		return ct
	}
	hline, _ := r.FieldPos(0)
	allowed := csvColumns()
	cols := make([]string, len(header))
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		cols[i] = h
		switch {
		case h == "":
			fail(hline, "", "column %d has no name; the first row names the columns", i+1)
		case slices.Contains(cols[:i], h):
			fail(hline, h, "column named twice")
		case foreign[tagType][h] != "":
			fail(hline, h, "%s; tags_csv is for Modbus devices only", foreign[tagType][h])
		case reserved[tagType][h] != "": // a key named by the design but not implemented yet
			x.errs = append(x.errs, &Error{File: file, Line: hline, Path: h, Err: ErrNotSupported,
				Msg: fmt.Sprintf("%s %v", reserved[tagType][h], ErrNotSupported)})
			ct.failed = true
		case !slices.Contains(allowed, h):
			hint := ""
			if s := suggest(h, allowed); s != "" {
				hint = "did you mean " + s + "? "
			}
			fail(hline, h, "unknown column; %sthe columns are %s", hint, strings.Join(allowed, ", "))
		}
	}
	has := func(c string) bool { return slices.Contains(cols, c) }
	var missing []string
	for _, c := range []string{"name", "type"} {
		if !has(c) {
			missing = append(missing, c)
		}
	}
	if !has("address") && !(has("table") && has("offset")) {
		missing = append(missing, "address (or table and offset)")
	}
	if len(missing) > 0 {
		fail(hline, "", "the header must name the column %s", strings.Join(missing, " and "))
	}
	if ct.failed {
		return ct // every row would repeat the header's problem
	}

	d := &decoder{src: csrc, active: map[*yaml.Node]bool{}, budget: 100000 + 10*len(data)}
	rows := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: hline}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			readErr(err) // the rest of the file cannot be trusted
			break
		}
		line, _ := r.FieldPos(0)
		if !slices.ContainsFunc(rec, func(c string) bool { return strings.TrimSpace(c) != "" }) {
			continue // a blank row, as spreadsheets leave
		}
		if len(rec) != len(cols) {
			fail(line, "", "%d cells, but the header names %d columns (a cell holding %q must be quoted)", len(rec), len(cols), string(r.Comma))
			continue
		}
		row := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
		for i, cell := range rec {
			if cell = strings.TrimSpace(cell); cell != "" {
				l, _ := r.FieldPos(i)
				tag := "!!str"
				if strings.EqualFold(cell, "true") || strings.EqualFold(cell, "false") {
					tag = "!!bool" // writable, verify; a string column takes the text as it is
				}
				row.Content = append(row.Content,
					&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: cols[i], Line: l},
					&yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: cell, Line: l})
			}
		}
		rows.Content = append(rows.Content, row)
	}
	d.decode("tags", rows, reflect.ValueOf(&ct.tags).Elem())
	x.errs = append(x.errs, d.errs...)
	if len(ct.tags) == 0 && !ct.failed {
		fail(hline, "", "no tags: the file has a header but no rows")
	}
	return ct
}

// delimiter guesses the separator from the header line: ';' (what
// spreadsheets write where the decimal separator is a comma) or tab when
// the line has one of them and no comma; ',' otherwise.
func delimiter(data []byte) rune {
	rest := data
	for {
		line, after, found := bytes.Cut(rest, []byte("\n"))
		if t := bytes.TrimSpace(line); found && (len(t) == 0 || t[0] == '#') {
			rest = after // a blank or comment line before the header
			continue
		}
		if bytes.IndexByte(line, ',') < 0 {
			if bytes.IndexByte(line, ';') >= 0 {
				return ';'
			}
			if bytes.IndexByte(line, '\t') >= 0 {
				return '\t'
			}
		}
		return ','
	}
}
