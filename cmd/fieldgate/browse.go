package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	fgopcua "github.com/fieldgate/fieldgate/collector/opcua"
	"github.com/fieldgate/fieldgate/telemetry"
)

// browseOptions are the flags of fieldgate browse.
type browseOptions struct {
	cfg   fgopcua.Config // url, security and auth, checked by its Validate
	node  string
	depth int
	emit  string
}

func cmdBrowse(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fieldgate browse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o browseOptions
	c := &o.cfg
	fs.StringVar(&c.URL, "url", "", "the server, opc.tcp://host:port (required)")
	fs.StringVar(&o.node, "node", "i=85", "the node to start from, in any node id form (i=85 is the Objects folder)")
	fs.IntVar(&o.depth, "depth", 3, "how many levels below --node to show")
	fs.StringVar(&o.emit, "emit", "", "yaml: print a tags: list of the variables found, for the config, instead of the tree")
	fs.StringVar(&c.SecurityPolicy, "security-policy", "None", "None, Basic256Sha256, Aes128_Sha256_RsaOaep or Aes256_Sha256_RsaPss")
	fs.StringVar(&c.SecurityMode, "security-mode", "", "None, Sign or SignAndEncrypt (default None with policy None, else SignAndEncrypt)")
	fs.StringVar(&c.CertFile, "cert-file", "", "the gateway's certificate for a secure policy (default: a temporary self-signed one)")
	fs.StringVar(&c.KeyFile, "key-file", "", "its RSA key")
	fs.StringVar(&c.TrustDir, "trust-dir", "", "for a secure policy: the folder whose trusted/ holds the server's certificate (default: the folder of --cert-file); a refused one is saved in its rejected/")
	fs.StringVar(&c.Auth.Username, "username", "", "log in with this user name (default anonymous)")
	fs.Func("password", "the user's password", func(s string) error { c.Auth.Password = fgopcua.Secret(s); return nil })
	fs.DurationVar(&c.Timeout, "timeout", 5*time.Second, "per request, and for connecting")
	if err := fs.Parse(args); err != nil {
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fieldgate browse: unexpected argument %q\n", fs.Arg(0))
		return exitConfig
	}
	if c.URL == "" {
		fmt.Fprintln(stderr, "fieldgate browse: --url is required, e.g. fieldgate browse --url opc.tcp://10.0.0.30:4840")
		return exitConfig
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(stderr, "fieldgate browse:", err)
		return exitConfig
	}
	if err := browse(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "fieldgate browse:", err)
		return exitFail
	}
	return exitOK
}

// check validates the flags through the driver's own config check, and
// names the flag of each problem.
func (o *browseOptions) check() error {
	c := &o.cfg
	if c.Auth.Username != "" || c.Auth.Password != "" {
		c.Auth.Mode = "username"
	}
	if c.SecurityMode == "" && !strings.EqualFold(c.SecurityPolicy, "None") {
		c.SecurityMode = "SignAndEncrypt"
	}
	// A secure channel needs a certificate; browse makes a temporary one.
	probe := *c
	if probe.CertFile == "" && probe.KeyFile == "" {
		probe.CertFile, probe.KeyFile = "-", "-"
	}
	probe.Tags = []fgopcua.Tag{{Name: "node", Node: o.node}}
	var errs []error
	if err := probe.Validate(); err != nil {
		ps := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			ps = j.Unwrap()
		}
		for _, e := range ps {
			var p fgopcua.Problem
			if !errors.As(e, &p) {
				errs = append(errs, e)
				continue
			}
			flag := "--" + strings.ReplaceAll(strings.TrimPrefix(p.Field, "auth."), "_", "-")
			if p.Tag >= 0 {
				flag = "--node"
			}
			errs = append(errs, fmt.Errorf("%s: %w", flag, p.Err))
		}
	}
	if mode := strings.ToLower(c.SecurityMode); mode != "" && mode != "none" && c.TrustDir == "" && c.CertFile == "" {
		errs = append(errs, errors.New("--trust-dir: a secure policy checks the server's certificate against the folder's trusted/; name the folder (or give --cert-file: its folder is used)"))
	}
	if o.depth < 0 {
		errs = append(errs, errors.New("--depth: must not be negative"))
	}
	if o.emit != "" && o.emit != "yaml" {
		errs = append(errs, fmt.Errorf("--emit: %q is not a format; use yaml", o.emit))
	}
	return errors.Join(errs...)
}

// browse connects, walks the hierarchy below o.node and prints it, or the
// tags: list of its variables.
func browse(ctx context.Context, o browseOptions, w io.Writer) error {
	c, err := dial(ctx, o.cfg, o.node)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.cfg.Timeout)
		_ = c.Close(cctx)
		cancel()
	}()
	ns := c.Namespaces()
	start, err := fgopcua.ParseNode(o.node)
	if err != nil {
		return fmt.Errorf("--node: %w", err)
	}
	root, err := start.Resolve(ns)
	if err != nil {
		return fmt.Errorf("--node %s: %w", o.node, err)
	}
	b := &browser{c: c, ns: ns, timeout: o.cfg.Timeout, seen: map[string]bool{}}
	top, err := b.describe(ctx, root)
	if err != nil {
		return fmt.Errorf("node %s: %w", o.node, err)
	}
	if err := b.walk(ctx, top, nil, 0, o.depth); err != nil {
		return err
	}
	if o.emit == "yaml" {
		return emitYAML(w, o, root, b.found)
	}
	for _, e := range b.found {
		fmt.Fprintf(w, "%s%s  %s", strings.Repeat("  ", e.level), e.name, e.node)
		switch {
		case e.repeat:
			fmt.Fprint(w, "  (shown above)")
		case e.note != "":
			fmt.Fprint(w, "  "+e.note)
		case e.class == ua.NodeClassVariable:
			fmt.Fprintf(w, "  %s = %s", e.dataType, e.value)
		case e.class != ua.NodeClassObject:
			fmt.Fprintf(w, "  (%s)", strings.TrimPrefix(e.class.String(), "NodeClass"))
		}
		fmt.Fprintln(w)
	}
	if b.truncated {
		fmt.Fprintf(w, "(more below depth %d: browse a node further down with --node, or raise --depth)\n", o.depth)
	}
	return nil
}

// dial connects to cfg.URL through the OPC UA driver's own connection
// setup (endpoint, trust check of the server's certificate, identity),
// with a temporary certificate when a secure policy has none. node is
// the --node flag, which the driver's config check needs as a tag.
func dial(ctx context.Context, cfg fgopcua.Config, node string) (*opcua.Client, error) {
	_, mode, err := cfg.Security()
	if err != nil {
		return nil, err
	}
	if mode != ua.MessageSecurityModeNone && cfg.CertFile == "" {
		tmp, err := os.MkdirTemp("", "fieldgate-browse-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		cfg.CertFile, cfg.KeyFile = filepath.Join(tmp, "browse.crt"), filepath.Join(tmp, "browse.key")
	}
	cfg.Tags = []fgopcua.Tag{{Name: "node", Node: node}}
	cfg.Poll = time.Second
	d, err := fgopcua.New("browse", cfg, nil)
	if err != nil {
		return nil, err
	}
	return d.Dial(ctx, "fieldgate browse")
}

// entry is one node found by browse.
type entry struct {
	id       *ua.NodeID
	node     string   // id in the config's form (nsu= outside namespace 0)
	name     string   // browse name
	repeat   bool     // shown earlier in the tree; not walked again
	note     string   // said after the node's id
	path     []string // browse names from below the start node to this one
	level    int
	class    ua.NodeClass
	dataType string // variables only
	value    string // variables only: the current value, or why there is none
	scalar   bool   // variables only: the value maps onto a telemetry value
}

type browser struct {
	c         *opcua.Client
	ns        []string
	timeout   time.Duration
	seen      map[string]bool // node ids already shown, as a tree may loop
	found     []entry
	truncated bool
}

// describe reads a node's browse name and class (for the start node,
// which no reference describes).
func (b *browser) describe(ctx context.Context, nid *ua.NodeID) (*ua.ReferenceDescription, error) {
	rctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	res, err := b.c.Read(rctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{
		{NodeID: nid, AttributeID: ua.AttributeIDBrowseName},
		{NodeID: nid, AttributeID: ua.AttributeIDNodeClass},
	}})
	if err != nil {
		return nil, err
	}
	if len(res.Results) != 2 || res.Results[0].Status != ua.StatusOK {
		code := ua.StatusBadNodeIDUnknown
		if len(res.Results) > 0 {
			code = res.Results[0].Status
		}
		return nil, fmt.Errorf("%s (0x%08X)", code.Error(), uint32(code))
	}
	rd := &ua.ReferenceDescription{NodeID: ua.NewExpandedNodeID(nid, "", 0), BrowseName: &ua.QualifiedName{}}
	if qn, ok := res.Results[0].Value.Value().(*ua.QualifiedName); ok && qn != nil {
		rd.BrowseName = qn
	}
	if cl, ok := res.Results[1].Value.Value().(int32); ok {
		rd.NodeClass = ua.NodeClass(cl)
	}
	return rd, nil
}

// walk records rd and, down to depth levels, the nodes below it through
// hierarchical references.
func (b *browser) walk(ctx context.Context, rd *ua.ReferenceDescription, path []string, level, depth int) error {
	nid := rd.NodeID.NodeID
	key := nid.String()
	name := rd.BrowseName.Name
	if level > 0 {
		path = append(path[:len(path):len(path)], name)
	}
	e := entry{id: nid, node: b.nodeID(nid), name: name, path: path, level: level, class: rd.NodeClass}
	if b.seen[key] {
		e.repeat = true
		b.found = append(b.found, e)
		return nil
	}
	b.seen[key] = true
	if rd.NodeClass == ua.NodeClassVariable {
		b.variable(ctx, &e)
	}
	b.found = append(b.found, e)
	if level >= depth {
		if b.hasChildren(ctx, nid) {
			b.truncated = true
		}
		return nil
	}
	if level > 0 && nid.Namespace() == 0 && nid.Type() <= ua.NodeIDTypeNumeric && nid.IntID() == id.Server {
		// The server's own diagnostics: long, and rarely what is wanted.
		b.found[len(b.found)-1].note = "(the server's own nodes: list them with --node i=2253)"
		return nil
	}
	refs, err := b.children(ctx, nid)
	if err != nil {
		return fmt.Errorf("browse %s: %w", b.nodeID(nid), err)
	}
	siblings := map[string]bool{} // a server may list a child under several references
	for _, r := range refs {
		if r.NodeID == nil || r.NodeID.NodeID == nil || r.BrowseName == nil || r.NodeID.ServerIndex != 0 {
			continue
		}
		if k := r.NodeID.NodeID.String(); siblings[k] {
			continue
		} else {
			siblings[k] = true
		}
		if err := b.walk(ctx, r, path, level+1, depth); err != nil {
			return err
		}
	}
	return nil
}

func (b *browser) children(ctx context.Context, nid *ua.NodeID) ([]*ua.ReferenceDescription, error) {
	rctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.c.Node(nid).References(rctx, id.HierarchicalReferences, ua.BrowseDirectionForward,
		ua.NodeClassObject|ua.NodeClassVariable|ua.NodeClassMethod, true)
}

func (b *browser) hasChildren(ctx context.Context, nid *ua.NodeID) bool {
	refs, err := b.children(ctx, nid)
	return err == nil && len(refs) > 0
}

// variable reads a variable's data type and current value into e. The
// type shown is the value's built-in type (what fieldgate converts), or
// the DataType attribute when there is no value.
func (b *browser) variable(ctx context.Context, e *entry) {
	rctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	res, err := b.c.Read(rctx, &ua.ReadRequest{NodesToRead: []*ua.ReadValueID{
		{NodeID: e.id, AttributeID: ua.AttributeIDValue},
		{NodeID: e.id, AttributeID: ua.AttributeIDDataType},
	}})
	if err != nil || len(res.Results) != 2 {
		e.dataType, e.value = "?", fmt.Sprintf("(not read: %v)", err)
		return
	}
	dv := res.Results[0]
	e.dataType = "?"
	switch dt := res.Results[1].Value.Value().(type) {
	case *ua.NodeID:
		e.dataType = b.typeName(dt)
	case *ua.ExpandedNodeID:
		if dt != nil && dt.NodeID != nil {
			e.dataType = b.typeName(dt.NodeID)
		}
	}
	if dv.Value != nil && dv.Value.Type() != ua.TypeIDNull {
		e.dataType = strings.TrimPrefix(dv.Value.Type().String(), "TypeID")
	}
	if dv.Status != ua.StatusOK && fgopcua.Quality(dv.Status).Class() == telemetry.Bad {
		e.value = "(" + statusName(dv.Status) + ")"
		return
	}
	v, why, ok := fgopcua.Value(dv.Value)
	if !ok {
		e.value = "(" + why + ")"
		return
	}
	e.scalar = true
	e.value = v.String()
	if v.Kind() == telemetry.KindString {
		e.value = strconv.Quote(e.value)
	}
}

// statusName writes a status code as its name, e.g. BadNodeIdUnknown.
func statusName(c ua.StatusCode) string {
	if d, ok := ua.StatusCodes[c]; ok {
		return strings.TrimPrefix(d.Name, "Status")
	}
	return fmt.Sprintf("0x%08X", uint32(c))
}

// typeName names a standard data type (Double, Int32, ...), or gives a
// vendor type's node id.
func (b *browser) typeName(dt *ua.NodeID) string {
	if dt.Namespace() == 0 && dt.Type() <= ua.NodeIDTypeNumeric {
		if n := id.Name(dt.IntID()); n != "" {
			return n
		}
	}
	return b.nodeID(dt)
}

// nodeID writes a node id for the config: nsu=<uri>;... outside
// namespace 0, because indexes may change when the server restarts.
func (b *browser) nodeID(n *ua.NodeID) string {
	s := n.String()
	idx := int(n.Namespace())
	if idx == 0 || idx >= len(b.ns) {
		return s
	}
	_, rest, ok := strings.Cut(s, ";")
	if !ok {
		return s
	}
	return "nsu=" + b.ns[idx] + ";" + rest
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// emitYAML prints the variables found as a tags: list. Variables of
// namespace 0 (the server's own) are left out unless the walk started in
// namespace 0 below the Objects folder; values that fieldgate cannot
// collect (arrays, structures) are listed as comments.
func emitYAML(w io.Writer, o browseOptions, root *ua.NodeID, found []entry) error {
	std := root.Namespace() == 0 && root.Type() <= ua.NodeIDTypeNumeric && (root.IntID() == id.ObjectsFolder || root.IntID() == id.RootFolder)
	// A tag is named after its browse name; where two variables share one,
	// after their browse paths below --node.
	last := map[string]int{}
	for _, e := range found {
		if e.class == ua.NodeClassVariable && !e.repeat {
			last[e.name]++
		}
	}
	names := map[string]int{}
	fmt.Fprintf(w, "# fieldgate browse --url %s --node %s --depth %d\n", o.cfg.URL, o.node, o.depth)
	fmt.Fprintln(w, "tags:")
	n := 0
	for _, e := range found {
		if e.class != ua.NodeClassVariable || e.repeat {
			continue
		}
		if std && e.id.Namespace() == 0 {
			continue
		}
		name := e.name
		if last[e.name] > 1 && len(e.path) > 0 {
			name = strings.Join(e.path, ".")
		}
		name = strings.Trim(unsafeName.ReplaceAllString(name, "_"), "_")
		if name == "" {
			name = "tag"
		}
		if k := names[name]; k > 0 {
			names[name] = k + 1
			name += "_" + strconv.Itoa(k+1)
		} else {
			names[name] = 1
		}
		node := e.node
		if !e.scalar {
			fmt.Fprintf(w, "  # - { name: %s, node: %s }  # skipped: %s %s\n", name, strconv.Quote(node), e.dataType, e.value)
			continue
		}
		fmt.Fprintf(w, "  - { name: %s, node: %s, mode: subscribe }  # %s = %s\n", name, strconv.Quote(node), e.dataType, e.value)
		n++
	}
	if n == 0 {
		fmt.Fprintln(w, "  # no variables found; try another --node or a larger --depth")
	}
	return nil
}
