package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/fieldgate/fieldgate/collector/opcua"
)

// opcua checks an OPC UA device at p: the tags' names, poll intervals and
// report settings here, then everything else through opcua.Config.Validate,
// whose problems are placed at devices[i].opcua.<field> or
// devices[i].tags[j].<field>. Its tags all come from the config file
// (profiles and tags_csv are Modbus-only).
func (v *validator) opcua(p string, d *Device) {
	c := d.OPCUA
	if len(c.Tags) == 0 && (v.src == nil || v.src.devices[p] == nil) {
		v.errorf(p+".tags", "at least one tag is required, e.g. tags: [{ name: temp, node: \"ns=2;s=Line3.Temp\" }]")
	}
	seen := map[string]string{} // tag name → path of its first use
	for j := range c.Tags {
		t := &c.Tags[j]
		tp := fmt.Sprintf("%s.tags[%d]", p, j)
		if v.name(tp+".name", t.Name, "the tag's name, e.g. spindle_speed") {
			v.unique(tp+".name", t.Name, "tag", seen)
		}
		poll := d.Poll
		if t.Poll != 0 || v.src.has(tp+".poll") {
			poll = t.Poll
			if t.Poll < MinPoll {
				v.errorf(tp+".poll", "must be at least %v, got %v", MinPoll, t.Poll)
			}
		}
		if n := utf8.RuneCountInString(t.Description); n > MaxDescription {
			v.errorf(tp+".description", "must be at most %d characters, got %d", MaxDescription, n)
		}
		onChange := t.Report == opcua.ReportChange || t.Report == opcua.ReportDefault && t.Deadband.Value > 0
		if t.MaxSilence != 0 || v.src.has(tp+".max_silence") {
			switch {
			case t.Report == opcua.ReportAlways:
				v.errorf(tp+".max_silence", "only with report: change; report: always sends every reading anyway")
			case !onChange:
				v.errorf(tp+".max_silence", "only with report: change or a deadband; without them every reading is sent anyway")
			case t.MaxSilence < poll:
				v.errorf(tp+".max_silence", "must be at least the tag's poll interval %v, got %v", poll, t.MaxSilence)
			}
		}
	}
	if strings.EqualFold(c.Auth.Mode, "username") && c.Auth.Username != "" && c.Auth.Password == "" && !v.src.has(p+".opcua.auth.password") {
		v.errorf(p+".opcua.auth.password", "required with auth.mode username; password: ${OPCUA_PASSWORD} takes it from the environment")
	}
	err := c.Validate()
	if err == nil {
		return
	}
	var probs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		probs = j.Unwrap()
	} else {
		probs = []error{err}
	}
	for _, e := range probs {
		var pr opcua.Problem
		if !errors.As(e, &pr) {
			v.errorf(p+".opcua", "%v", e)
			continue
		}
		path := p + ".opcua." + pr.Field
		if pr.Tag >= 0 {
			path = fmt.Sprintf("%s.tags[%d].%s", p, pr.Tag, pr.Field)
		}
		if v.reported(path) {
			continue // said here already, in fieldgate's own words
		}
		switch {
		case pr.Tag < 0 && pr.Field == "security_policy":
			v.errorf(path, "%q is not a security policy; %v", c.SecurityPolicy, pr.Err)
		case pr.Tag < 0 && pr.Field == "security_mode" && !slices.ContainsFunc(opcua.Modes, func(m string) bool { return strings.EqualFold(m, c.SecurityMode) }):
			v.errorf(path, "%q is not a security mode; %v", c.SecurityMode, pr.Err)
		case pr.Tag < 0 && pr.Field == "security_mode":
			v.errorf(path, "%s does not go with security_policy %s: %v", c.SecurityMode, c.SecurityPolicy, pr.Err)
		default:
			v.errorf(path, "%v", pr.Err)
		}
	}
}

// reported says whether a problem at path is already in v.errs.
func (v *validator) reported(path string) bool {
	for _, e := range v.errs {
		if e.Path == path {
			return true
		}
	}
	return false
}
