package config

import (
	"cmp"
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fieldgate/fieldgate/collector/modbus"
	"github.com/fieldgate/fieldgate/collector/opcua"
)

// source is what Parse knows about the file behind a Config: its name and
// the YAML node of every field that was present, by field path
// (devices[0].tags[3].type). Validation uses it for positions and to tell
// an absent key from an explicit zero.
type source struct {
	file  string
	root  *yaml.Node
	nodes map[string]*yaml.Node
	// skip holds the paths of devices whose protocol is not supported,
	// so that validation does not pile more errors on them.
	skip map[string]bool
	// bad holds the paths that already have a decoding problem; validation
	// says nothing more about them or what lies under them.
	bad map[string]bool
	// csv marks a tags_csv file: its paths are tags[i].column, and errors
	// name only the column (the line already names the row).
	csv bool
	// devices holds, by device path, what a device's profile and tags_csv
	// added (main file only).
	devices map[string]*expansion
}

func newSource(file string) *source {
	return &source{file: file, nodes: map[string]*yaml.Node{}, skip: map[string]bool{}, bad: map[string]bool{}}
}

// covered reports whether path is, or lies under, a path in bad.
func (s *source) covered(path string) bool {
	if s == nil {
		return false
	}
	for p := path; ; {
		if s.bad[p] {
			return true
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

// has reports whether the key at path was present and not null.
func (s *source) has(path string) bool {
	if s == nil {
		return false
	}
	_, ok := s.nodes[path]
	return ok
}

// node returns the node of path, or of its nearest present ancestor.
func (s *source) node(path string) *yaml.Node {
	if s == nil {
		return nil
	}
	for {
		if n, ok := s.nodes[path]; ok {
			return n
		}
		if path == "" {
			return s.root
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			path = ""
		} else {
			path = path[:i]
		}
	}
}

// errorAt returns an *Error for path, positioned at n (or at path's node
// when n is nil).
func (s *source) errorAt(n *yaml.Node, path string, cause error, format string, args ...any) *Error {
	e := &Error{Path: path, Msg: fmt.Sprintf(format, args...), Err: cause}
	if s == nil {
		return e
	}
	e.File = s.file
	if n == nil {
		n = s.node(path)
	}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	if s.csv {
		e.Path = csvColumn(path)
	}
	return e
}

// csvColumn turns tags[3].scale into scale, and tags[3] into "".
func csvColumn(path string) string {
	if i := strings.IndexByte(path, '.'); i >= 0 {
		return path[i+1:]
	}
	return ""
}

// decoder fills a Go value from a YAML node tree, checking every key
// against the yaml tags of the target struct. Unlike yaml's own decoder it
// keeps going after a problem, so that all problems are reported at once.
type decoder struct {
	src  *source
	errs []*Error
	// active holds the anchors being decoded, to catch an alias that
	// refers to the node it is in.
	active map[*yaml.Node]bool
	// budget is how many more values may be decoded; aliases can make a
	// small file expand into a huge config (a "billion laughs").
	budget int
	// opcua holds, by device path, whether the device is an OPC UA one,
	// so that its tags: are decoded as OPC UA tags.
	opcua map[string]bool
}

// errTooBig stops decoding a document that expands too much.
var errTooBig = errors.New("the document expands to too many values through aliases")

// follow returns the node an alias refers to, or nil after reporting an
// alias that contains itself. Call done(n) when finished with the result.
func (d *decoder) follow(path string, n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.AliasNode {
		return n
	}
	if n.Alias == nil || d.active[n.Alias] {
		d.errorf(n, path, "alias *%s refers to itself", n.Value)
		return nil
	}
	d.active[n.Alias] = true
	return n.Alias
}

func (d *decoder) done(n *yaml.Node) { delete(d.active, n) }

func (d *decoder) errorf(n *yaml.Node, path string, format string, args ...any) {
	d.src.bad[path] = true
	d.errs = append(d.errs, d.src.errorAt(n, path, nil, format, args...))
}

func (d *decoder) unsupported(n *yaml.Node, path, what string) {
	d.errs = append(d.errs, d.src.errorAt(n, path, ErrNotSupported, "%s %v", what, ErrNotSupported))
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	deviceType   = reflect.TypeFor[Device]()
	mqttType     = reflect.TypeFor[MQTT]()
	tagType      = reflect.TypeFor[modbus.Tag]()
	opcuaTagType = reflect.TypeFor[opcua.Tag]()
	textType     = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// reserved lists keys that fieldgate's design names but this version does
// not implement, by the struct they belong in, with what to call them
// ("writes are"); they are reported as not supported (ErrNotSupported)
// rather than unknown. None are reserved at present.
var reserved = map[reflect.Type]map[string]string{}

// foreign lists, by tag struct, the keys that belong to the other
// protocol's tags, with what to say instead of "unknown key".
var foreign = foreignKeys()

func foreignKeys() map[reflect.Type]map[string]string {
	var own []string
	for _, f := range fieldsOf(opcuaTagType) {
		own = append(own, f.key)
	}
	ua := map[string]string{
		"address": "OPC UA tags have node, not address",
		"table":   "OPC UA tags have node, not table",
		"offset":  "OPC UA tags have node, not offset",
		"type":    "OPC UA tags have no type: the server says what each value is",
	}
	for _, f := range fieldsOf(tagType) {
		if _, ok := ua[f.key]; !ok && !slices.Contains(own, f.key) && reserved[opcuaTagType][f.key] == "" {
			ua[f.key] = fmt.Sprintf("%s is a Modbus tag key; OPC UA tags have %s and %s", f.key, strings.Join(own[:len(own)-1], ", "), own[len(own)-1])
		}
	}
	return map[reflect.Type]map[string]string{
		tagType: {
			"node": "Modbus tags have address (or table and offset), not node; node is for devices with opcua:",
			"mode": "Modbus tags are always polled; mode (poll or subscribe) is for tags of devices with opcua:",
		},
		opcuaTagType: ua,
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	}
	return strconv.Quote(n.Value)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func join(path, key string) string {
	if !nameRE.MatchString(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// decode stores n into v, which is addressable.
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) {
	if d.budget--; d.budget < 0 {
		if d.budget == -1 {
			d.errs = append(d.errs, d.src.errorAt(n, path, errTooBig, "%v", errTooBig))
		}
		return
	}
	if n = d.follow(path, n); n == nil {
		return
	}
	defer d.done(n)
	if isNull(n) {
		return
	}
	d.src.nodes[path] = n
	t := v.Type()
	if t == durationType {
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a duration such as 500ms, 1s or 2m, got %s", kindName(n))
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.errorf(n, path, "%q is not a duration; use a number with a unit: ms, s, m or h (e.g. 500ms, 1s, 2m)", n.Value)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	if reflect.PointerTo(t).Implements(textType) {
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a single value, got %s", kindName(n))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.errorf(n, path, "%v", err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		d.decode(path, n, p.Elem())
		v.Set(p)
	case reflect.Struct:
		d.mapping(path, n, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := parseInt(n)
		if err != nil {
			d.errorf(n, path, "%v", err)
			return
		}
		if v.OverflowInt(i) {
			d.errorf(n, path, "%d is out of range %d..%d", i, -1<<(t.Bits()-1), 1<<(t.Bits()-1)-1)
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		i, err := parseInt(n)
		if err != nil {
			d.errorf(n, path, "%v", err)
			return
		}
		if i < 0 || v.OverflowUint(uint64(i)) {
			d.errorf(n, path, "%d is out of range 0..%d", i, uint64(1)<<t.Bits()-1)
			return
		}
		v.SetUint(uint64(i))
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want a number, got %s", kindName(n))
			return
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.errorf(n, path, "%q is not a number", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.errorf(n, path, "want true or false, got %s", kindName(n))
			return
		}
		v.SetBool(b)
	default:
		panic("config: cannot decode into " + t.String()) // a schema bug, caught by the tests
	}
}

// parseInt parses a YAML integer. Leading zeros are decimal, not octal, so
// that six-digit Modicon addresses such as 065536 mean what they say.
func parseInt(n *yaml.Node) (int64, error) {
	s := strings.ReplaceAll(n.Value, "_", "")
	if n.Kind != yaml.ScalarNode || s == "" {
		return 0, fmt.Errorf("want an integer, got %s", kindName(n))
	}
	body := strings.TrimLeft(s, "+-")
	base := 10
	if len(body) > 1 && body[0] == '0' && strings.ContainsAny(body[1:2], "xXoObB") {
		base = 0
	}
	i, err := strconv.ParseInt(s, base, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("%s is out of range", n.Value)
		}
		return 0, fmt.Errorf("%q is not an integer", n.Value)
	}
	return i, nil
}

// field is one settable struct field and its yaml key.
type field struct {
	key   string
	index int
}

var fieldCache sync.Map // reflect.Type → []field

func fieldsOf(t reflect.Type) []field {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]field)
	}
	var fs []field
	for i := range t.NumField() {
		sf := t.Field(i)
		key, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || key == "-" || key == "" {
			continue
		}
		fs = append(fs, field{key, i})
	}
	fieldCache.Store(t, fs)
	return fs
}

// mapping decodes a mapping node into the struct v, key by key.
func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping of keys to values, got %s", kindName(n))
		return
	}
	t := v.Type()
	fields := fieldsOf(t)
	if t == deviceType && d.deviceKind(path, n, v) {
		return
	}
	// Merge keys (<<: *anchor) first, so that the mapping's own keys win.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			d.merge(path, n.Content[i+1], v)
		}
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be plain names, got %s", kindName(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			continue
		}
		key := k.Value
		if strings.HasPrefix(key, "x-") {
			continue // an extension key, to hold YAML anchors; ignored
		}
		kpath := join(path, key)
		if first, ok := seen[key]; ok {
			d.errorf(k, kpath, "duplicate key; first set at line %d", first.Line)
			continue
		}
		seen[key] = k
		idx := slices.IndexFunc(fields, func(f field) bool { return f.key == key })
		if idx < 0 {
			if msg, ok := foreign[t][key]; ok {
				d.errorf(k, kpath, "%s", msg)
				continue
			}
			if what, ok := reserved[t][key]; ok {
				d.unsupported(k, kpath, what)
				continue
			}
			d.unknownKey(k, kpath, key, fields)
			continue
		}
		fv := v.Field(fields[idx].index)
		if t == deviceType && key == "tags" && d.opcua[path] {
			fv = v.FieldByName("OPCUATags")
		}
		d.decode(kpath, val, fv)
	}
}

func (d *decoder) merge(path string, n *yaml.Node, v reflect.Value) {
	if n = d.follow(path, n); n == nil {
		return
	}
	defer d.done(n)
	switch {
	case n == nil:
	case n.Kind == yaml.MappingNode:
		d.mapping(path, n, v)
	case n.Kind == yaml.SequenceNode:
		// Earlier mappings in the list win, so apply them last.
		for _, m := range slices.Backward(n.Content) {
			d.merge(path, m, v)
		}
	default:
		d.errorf(n, path, "<< must merge a mapping or a list of mappings, got %s", kindName(n))
	}
}

// deviceKind decides, once per device (before its merge keys are
// decoded), whether the device at path is an OPC UA one, looking through
// merge keys. A device with both modbus and opcua is reported, keeps only
// its name (so that duplicate names are still found), and is left alone
// by validation; deviceKind then returns true.
func (d *decoder) deviceKind(path string, n *yaml.Node, v reflect.Value) bool {
	if d.opcua == nil {
		d.opcua = map[string]bool{}
	}
	if _, done := d.opcua[path]; done {
		return false // a merged mapping of a device already looked at
	}
	keys := map[string]*yaml.Node{}
	mergedKeys(n, keys, 0)
	mb, ua := keys["modbus"], keys["opcua"]
	d.opcua[path] = ua != nil && mb == nil
	if mb == nil || ua == nil {
		return false
	}
	second := ua
	if mb.Line > ua.Line || mb.Line == ua.Line && mb.Column > ua.Column {
		second = mb
	}
	d.errorf(second, join(path, second.Value), "a device has one connection: set modbus or opcua, not both")
	d.src.skip[path] = true
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" {
			d.decode(join(path, "name"), n.Content[i+1], v.FieldByName("Name"))
		}
	}
	return true
}

// mergedKeys adds the keys of mapping n, and of the mappings it merges,
// to keys; a key of n itself wins over a merged one.
func mergedKeys(n *yaml.Node, keys map[string]*yaml.Node, depth int) {
	if n == nil || depth > 16 {
		return
	}
	if n.Kind == yaml.AliasNode {
		mergedKeys(n.Alias, keys, depth+1)
		return
	}
	switch n.Kind {
	case yaml.SequenceNode:
		for _, m := range n.Content {
			mergedKeys(m, keys, depth+1)
		}
		return
	case yaml.MappingNode:
	default:
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			continue
		}
		keys[k.Value] = k
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			sub := map[string]*yaml.Node{}
			mergedKeys(n.Content[i+1], sub, depth+1)
			for key, kn := range sub {
				if _, ok := keys[key]; !ok {
					keys[key] = kn
				}
			}
		}
	}
}

func (d *decoder) unknownKey(k *yaml.Node, path, key string, fields []field) {
	keys := make([]string, len(fields))
	for i, f := range fields {
		keys[i] = f.key
	}
	if s := suggest(key, keys); s != "" {
		d.src.bad[path[:len(path)-len(key)]+s] = true // don't also say s is missing
		d.errorf(k, path, "unknown key; did you mean %s?", s)
		return
	}
	d.errorf(k, path, "unknown key; valid keys are %s", strings.Join(keys, ", "))
}

// suggest returns the candidate closest to key, or "" when none is close:
// the same letters ignoring case, '_' and '-' (maxGap, max-gap), or an edit
// distance (with transpositions) of 1, or 2 for keys of 5 letters or more.
func suggest(key string, candidates []string) string {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(s))
	}
	best, bestDist := "", math.MaxInt
	for _, c := range candidates {
		if norm(c) == norm(key) {
			return c
		}
		if dist := editDistance(strings.ToLower(key), c); dist < bestDist {
			best, bestDist = c, dist
		}
	}
	limit := 1
	if len(key) >= 5 {
		limit = 2
	}
	if bestDist <= limit {
		return best
	}
	return ""
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent letters.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// sortErrors orders problems by file, in the order of files (files not
// listed last), then by position, keeping the order of problems at the same
// position; it drops repeated problems (a profile or CSV file shared by
// several devices is checked once for each).
func sortErrors(errs []*Error, files []string) []*Error {
	rank := func(f string) int {
		if i := slices.Index(files, f); i >= 0 {
			return i
		}
		return len(files)
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(rank(a.File), rank(b.File)), cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	seen := map[string]bool{}
	return slices.DeleteFunc(errs, func(e *Error) bool {
		s := e.Error()
		if seen[s] {
			return true
		}
		seen[s] = true
		return false
	})
}
