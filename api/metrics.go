package api

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// MetricType is a Prometheus metric type.
type MetricType string

// The metric types the gateway exports.
const (
	Counter MetricType = "counter"
	Gauge   MetricType = "gauge"
)

// Metrics writes the Prometheus text exposition format (version 0.0.4).
// Declare each family once with Family, then add its samples; families are
// written in the order declared. A Metrics is not safe for concurrent use.
type Metrics struct {
	fams []*family
}

type family struct {
	name, help string
	typ        MetricType
	samples    []sample
}

type sample struct {
	labels []string // name, value, name, value, ...
	value  float64
}

// Family declares a metric family and returns a function that adds one
// sample to it with the given label pairs (name, value, name, value, ...).
func (m *Metrics) Family(name, help string, typ MetricType) func(v float64, labels ...string) {
	f := &family{name: name, help: help, typ: typ}
	m.fams = append(m.fams, f)
	return func(v float64, labels ...string) {
		f.samples = append(f.samples, sample{labels: labels, value: v})
	}
}

// Names returns the declared family names, for tests.
func (m *Metrics) Names() []string {
	out := make([]string, len(m.fams))
	for i, f := range m.fams {
		out[i] = f.name
	}
	return out
}

// WriteTo writes every family with at least one sample.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	for _, f := range m.fams {
		if len(f.samples) == 0 {
			continue
		}
		b.WriteString("# HELP " + f.name + " " + escapeHelp(f.help) + "\n")
		b.WriteString("# TYPE " + f.name + " " + string(f.typ) + "\n")
		for _, s := range f.samples {
			b.WriteString(f.name)
			if len(s.labels) > 0 {
				b.WriteByte('{')
				for i := 0; i+1 < len(s.labels); i += 2 {
					if i > 0 {
						b.WriteByte(',')
					}
					b.WriteString(s.labels[i] + `="` + escapeLabel(s.labels[i+1]) + `"`)
				}
				b.WriteByte('}')
			}
			b.WriteByte(' ')
			b.WriteString(formatValue(s.value))
			b.WriteByte('\n')
		}
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(s)
}

// lintName reports what is wrong with a metric name by the Prometheus
// naming conventions the gateway follows, or "" when nothing is.
func lintName(name string, typ MetricType) string {
	if !strings.HasPrefix(name, "fieldgate_") {
		return "does not start with fieldgate_"
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return "is not snake_case ASCII"
		}
	}
	total := strings.HasSuffix(name, "_total")
	switch {
	case typ == Counter && !total:
		return "is a counter without the _total suffix"
	case typ != Counter && total:
		return "has the _total suffix but is not a counter"
	}
	for _, bad := range []string{"_ms", "_milliseconds", "_kb", "_mb", "_percent"} {
		if strings.HasSuffix(strings.TrimSuffix(name, "_total"), bad) {
			return "uses a non-base unit (" + bad + "); use seconds, bytes or ratios"
		}
	}
	return ""
}

// LintNames checks every declared family against the naming conventions
// (fieldgate_ prefix, snake_case, _total exactly on counters, base units)
// and returns one error per offending family.
func LintNames(m *Metrics) []error {
	var errs []error
	for _, f := range m.fams {
		if msg := lintName(f.name, f.typ); msg != "" {
			errs = append(errs, fmt.Errorf("metric %s %s", f.name, msg))
		}
	}
	return errs
}
