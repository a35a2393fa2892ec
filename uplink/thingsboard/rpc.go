package thingsboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/fieldgate/fieldgate/telemetry"
	"github.com/fieldgate/fieldgate/uplink"
	"github.com/fieldgate/fieldgate/uplink/jsonenc"
)

// RPC methods. A ThingsBoard dashboard widget or rule chain calls them on
// the device (not on the gateway device); ThingsBoard forwards the call to
// the gateway on TopicRPC.
const (
	// MethodSet writes params.value to params.tag:
	// {"method":"set","params":{"tag":"setpoint","value":42}}. params may
	// also be that object as a JSON string (what ThingsBoard's REST API
	// passes on when params was sent as a string).
	MethodSet = "set"
	// MethodSetPrefix + tag writes params to tag: {"method":"set_speed",
	// "params":1500}, or params {"value":1500}. Stock control widgets
	// (knob, switch, slider) send their value as params to a method name
	// set in the widget's settings: name it set_<tag>.
	MethodSetPrefix = "set_"
)

// rpcRequest is one parsed RPC request. device and id are set whenever a
// reply can be sent (id is the raw JSON of data.id); reason says why the
// request is not a write (a reply with RejectBadRequest).
type rpcRequest struct {
	device string
	id     json.RawMessage
	method string
	tag    string
	value  telemetry.Value
	reason string
}

// parseRPC reads a message on TopicRPC. ok is false when the message is
// not a request that can be answered: not JSON, no device or id, or a
// reply (the gateway's own, which the broker sends back to it because it
// subscribes the topic it answers on). It only reads b.
func parseRPC(b []byte) (r rpcRequest, ok bool) {
	var msg struct {
		Device *string `json:"device"`
		Data   *struct {
			ID     json.RawMessage `json:"id"`
			Method *string         `json:"method"`
			Params json.RawMessage `json:"params"`
		} `json:"data"`
	}
	if json.Unmarshal(b, &msg) != nil || msg.Device == nil || msg.Data == nil || msg.Data.Method == nil {
		return r, false
	}
	id := bytes.TrimSpace(msg.Data.ID)
	if len(id) == 0 || (id[0] != '"' && (id[0] < '0' || id[0] > '9')) {
		return r, false // no id to echo (null, object, ...)
	}
	r.device, r.id, r.method = *msg.Device, id, *msg.Data.Method
	params := bytes.TrimSpace(msg.Data.Params)
	switch {
	case r.method == MethodSet:
		if len(params) > 0 && params[0] == '"' {
			var s string
			if json.Unmarshal(params, &s) == nil {
				params = []byte(s)
			}
		}
		var p struct {
			Tag   *string         `json:"tag"`
			Value json.RawMessage `json:"value"`
		}
		if json.Unmarshal(params, &p) != nil || p.Tag == nil || *p.Tag == "" || len(p.Value) == 0 {
			r.reason = `method set needs params {"tag":NAME,"value":VALUE}`
			return r, true
		}
		r.tag = *p.Tag
		r.value, r.reason = jsonValue(p.Value)
	case strings.HasPrefix(r.method, MethodSetPrefix) && len(r.method) > len(MethodSetPrefix):
		r.tag = r.method[len(MethodSetPrefix):]
		if len(params) > 0 && params[0] == '{' {
			var p struct {
				Value json.RawMessage `json:"value"`
			}
			if json.Unmarshal(params, &p) != nil || len(p.Value) == 0 {
				r.reason = fmt.Sprintf(`method %s needs params VALUE or {"value":VALUE}`, r.method)
				return r, true
			}
			params = p.Value
		}
		r.value, r.reason = jsonValue(params)
	default:
		r.reason = fmt.Sprintf("unknown method %q; use set or set_<tag>", r.method)
	}
	return r, true
}

// jsonValue reads a JSON bool, number or string as a Value, as every
// format does (uplink.ParseJSONValue).
func jsonValue(raw json.RawMessage) (telemetry.Value, string) {
	v, err := uplink.ParseJSONValue(raw)
	if err != nil {
		return telemetry.Value{}, "value: " + err.Error()
	}
	return v, ""
}

// retainedRPC is the reason a retained RPC request is refused with.
const retainedRPC = "retained RPC requests are not carried out (the broker would deliver them again at every reconnect); publish with retain off"

// Command handles a message on TopicRPC: a write request is submitted to
// the Writes and answered on TopicRPC when its result is known. A message
// that cannot be answered is logged and dropped.
func (f *Format) Command(p uplink.Publisher, topic string, payload []byte) error {
	return f.rpc(p, topic, payload, false)
}

// RetainedCommand refuses a retained RPC request (uplink.RetainedCommander):
// the broker would deliver it again at every reconnect and write again. It
// is answered bad_request, recorded, and not carried out.
func (f *Format) RetainedCommand(p uplink.Publisher, topic string, payload []byte) error {
	return f.rpc(p, topic, payload, true)
}

func (f *Format) rpc(p uplink.Publisher, topic string, payload []byte, retained bool) error {
	if topic != TopicRPC {
		return nil
	}
	r, ok := parseRPC(payload)
	if !ok {
		if !isReply(payload) {
			f.log.Warn("RPC message ignored: not a request with device, data.id and data.method", "payload", truncate(payload))
		}
		return nil
	}
	if retained {
		r.reason = retainedRPC
	}
	reply := func(res uplink.WriteResult) {
		p.Publish(uplink.Message{Topic: TopicRPC, QoS: f.qos, Payload: appendReply(nil, r.device, r.id, res)})
	}
	req := uplink.WriteRequest{ID: string(r.id), Source: "thingsboard", Topic: topic, Device: r.device, Tag: r.tag, Value: r.value}
	if r.reason != "" {
		f.log.Warn("RPC rejected", "code", uplink.RejectBadRequest, "device", r.device, "method", r.method, "reason", r.reason)
		res := uplink.WriteResult{Code: uplink.RejectBadRequest, Reason: r.reason}
		f.writes.Reject(req, res) // the audit log records it too
		reply(res)
		return nil
	}
	f.writes.Submit(req, func(res uplink.WriteResult) {
		if res.OK() {
			f.log.Info("RPC write done", "device", req.Device, "tag", req.Tag, "value", req.Value, "id", req.ID)
		} else {
			f.log.Warn("RPC write rejected", "code", res.Code, "reason", res.Reason, "device", req.Device, "tag", req.Tag, "id", req.ID)
		}
		reply(res)
	})
	return nil
}

// isReply reports whether b looks like an RPC reply: {"device":..,"id":..}.
func isReply(b []byte) bool {
	var m struct {
		Device *string         `json:"device"`
		ID     json.RawMessage `json:"id"`
	}
	return json.Unmarshal(b, &m) == nil && m.Device != nil && len(m.ID) > 0
}

// appendReply appends {"device":NAME,"id":ID,"data":{"success":true}} or,
// for a write that was not done,
// {"device":NAME,"id":ID,"data":{"success":false,"code":C,"error":REASON}}.
func appendReply(dst []byte, device string, id json.RawMessage, res uplink.WriteResult) []byte {
	dst = append(dst, `{"device":`...)
	dst = jsonenc.AppendString(dst, device)
	dst = append(dst, `,"id":`...)
	dst = append(dst, id...)
	if res.OK() {
		return append(dst, `,"data":{"success":true}}`...)
	}
	dst = append(dst, `,"data":{"success":false,"code":`...)
	dst = jsonenc.AppendString(dst, res.Code)
	dst = append(dst, `,"error":`...)
	dst = jsonenc.AppendString(dst, res.Reason)
	return append(dst, "}}"...)
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
