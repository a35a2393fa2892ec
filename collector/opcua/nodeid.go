package opcua

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// Node is a parsed NodeId from a config. A node written with a namespace
// URI (nsu=...) is only resolved to a namespace index against a server's
// NamespaceArray, by Resolve.
type Node struct {
	Text string // as written
	URI  string // the nsu= namespace URI, "" when the node gives an index
	id   *ua.NodeID
}

// ParseNode checks a NodeId in any standard string form: i=, s=, g=, b=
// identifiers, optionally after ns=<index>; or nsu=<uri>;. It does no I/O.
func ParseNode(s string) (Node, error) {
	n := Node{Text: s}
	if strings.TrimSpace(s) != s || s == "" {
		return n, fmt.Errorf("%q is not a node id; write for example ns=2;s=Line3.Temp, ns=3;i=1002 or nsu=urn:vendor;s=Spindle", s)
	}
	if rest, ok := strings.CutPrefix(s, "nsu="); ok {
		uri, _, ok := strings.Cut(rest, ";")
		if !ok || uri == "" {
			return n, fmt.Errorf("%q is not a node id: nsu=<namespace uri> must be followed by ;i=, ;s=, ;g= or ;b=", s)
		}
		n.URI = uri
		id, err := ua.ParseExpandedNodeID(s, []string{uri})
		if err != nil {
			return n, fmt.Errorf("%q is not a node id: %v", s, err)
		}
		_ = id
		return n, nil
	}
	if strings.HasPrefix(s, "svr=") {
		return n, fmt.Errorf("%q: node ids on other servers (svr=) are not supported", s)
	}
	id, err := ua.ParseNodeID(s)
	if err != nil {
		return n, fmt.Errorf("%q is not a node id: %v", s, err)
	}
	if !strings.Contains(s, "=") {
		return n, fmt.Errorf("%q is not a node id; write for example ns=2;s=%s", s, s)
	}
	n.id = id
	return n, nil
}

// Resolve returns the node's id on a server whose NamespaceArray is ns.
func (n Node) Resolve(ns []string) (*ua.NodeID, error) {
	if n.URI == "" {
		if n.id == nil {
			return nil, errors.New("node id not parsed")
		}
		return n.id, nil
	}
	id, err := ua.ParseExpandedNodeID(n.Text, ns)
	if err != nil {
		return nil, fmt.Errorf("namespace %q is not on the server (its namespaces: %s)", n.URI, strings.Join(ns, ", "))
	}
	return id.NodeID, nil
}
