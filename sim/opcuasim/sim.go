// Package opcuasim is an in-process OPC UA server for tests, benchmarks
// and `fieldgate demo`, built on the server package of gopcua v0.8.0.
//
// Its variables live in one namespace (Namespace, by default
// urn:fieldgate:sim) as string node ids: ns=<index>;s=<name>. Options.Pad
// registers empty namespaces before it, so a test can make the index
// differ between two starts. The gopcua server reports a monitored item's
// value when Set changes it (not by sampling), ignores deadband filters
// and queue sizes, accepts any user name and password, and does not check
// the client's certificate against a trust list.
//
// Clients may write every variable but those in Options.ReadOnly (a write
// to those fails with BadUserAccessDenied). The gopcua server does not
// check a written value's type, and a written value replaces the
// variable's value inside the server: Set does not show through it any
// more until Restart.
package opcuasim

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
)

// DefaultNamespace is the namespace URI of the simulator's variables.
const DefaultNamespace = "urn:fieldgate:sim"

// Security is one endpoint's security policy ("None", "Basic256Sha256",
// "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss") and mode.
type Security struct {
	Policy string
	Mode   ua.MessageSecurityMode
}

// Options configure a Server. The zero Options serve the default variables
// on 127.0.0.1 with security None and anonymous access.
type Options struct {
	Host      string // 127.0.0.1 when empty
	Port      int    // 0: a free port, kept across Restart
	Namespace string // DefaultNamespace when empty
	Pad       int    // empty namespaces registered before Namespace
	// Security lists the endpoints; empty means None only. Any other policy
	// makes the server generate its certificate.
	Security []Security
	// UserAuth also accepts user-name and certificate identities (on the
	// secure endpoints only, as the gopcua server requires).
	UserAuth bool
	// ReadOnly names the variables clients may not write.
	ReadOnly []string
	Log      *slog.Logger // nil discards the server's own logging
}

// Server is a running simulator. Its methods are safe for concurrent use.
type Server struct {
	opts    Options
	certDER []byte
	key     *rsa.PrivateKey

	mu     sync.Mutex
	srv    *server.Server
	ns     *server.NodeNameSpace
	port   int
	values map[string]*ua.DataValue
	order  []string
}

// New returns a server holding the default variables (see Defaults); it
// does not listen until Start.
func New(opts Options) *Server {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, port: opts.Port, values: map[string]*ua.DataValue{}}
	for _, v := range Defaults() {
		s.Add(v.Name, v.Value)
	}
	return s
}

// Var is a variable's name and initial value.
type Var struct {
	Name  string
	Value any
}

// Defaults are the variables every simulator starts with, one per common
// type.
func Defaults() []Var {
	return []Var{
		{"Temperature", float64(21.5)},
		{"Pressure", float32(1.25)},
		{"Counter", uint32(0)},
		{"Running", true},
		{"Mode", "auto"},
		{"Level", int16(-3)},
		{"Total", int64(1 << 40)},
	}
}

// Add adds a variable (or replaces its value); added before Start it is in
// the address space, added later only after Restart.
func (s *Server) Add(name string, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.values[name]; !ok {
		s.order = append(s.order, name)
	}
	s.values[name] = dataValue(v, ua.StatusOK)
}

func dataValue(v any, code ua.StatusCode) *ua.DataValue {
	now := time.Now()
	dv := &ua.DataValue{EncodingMask: ua.DataValueSourceTimestamp | ua.DataValueServerTimestamp, SourceTimestamp: now, ServerTimestamp: now}
	if v != nil {
		dv.EncodingMask |= ua.DataValueValue
		switch x := v.(type) {
		case *ua.Variant:
			dv.Value = x
		default:
			dv.Value = ua.MustVariant(v)
		}
	}
	if code != ua.StatusOK {
		dv.EncodingMask |= ua.DataValueStatusCode
		dv.Status = code
	}
	return dv
}

// Start listens and serves. Restarted, it listens on the same port.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return fmt.Errorf("opcuasim: already started")
	}
	if s.port == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(s.opts.Host, "0"))
		if err != nil {
			return err
		}
		s.port = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
	}
	opts := []server.Option{
		server.EndPoint(s.opts.Host, s.port),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.SetLogger(s.opts.Log),
		server.ServerName("fieldgate opcuasim"),
	}
	sec := s.opts.Security
	if len(sec) == 0 {
		sec = []Security{{"None", ua.MessageSecurityModeNone}}
	}
	secure := false
	for _, e := range sec {
		opts = append(opts, server.EnableSecurity(e.Policy, e.Mode))
		secure = secure || e.Mode != ua.MessageSecurityModeNone
	}
	if s.opts.UserAuth {
		opts = append(opts, server.EnableAuthMode(ua.UserTokenTypeUserName), server.EnableAuthMode(ua.UserTokenTypeCertificate))
	}
	if secure {
		if s.key == nil {
			var err error
			if s.certDER, s.key, err = newCert(s.opts.Host); err != nil {
				return err
			}
		}
		opts = append(opts, server.Certificate(s.certDER), server.PrivateKey(s.key))
	}
	srv := server.New(opts...)
	root, _ := srv.Namespace(0)
	objects := root.Objects()
	for i := range s.opts.Pad {
		srv.AddNamespace(server.NewNodeNameSpace(srv, fmt.Sprintf("urn:fieldgate:sim:pad%d", i)))
	}
	ns := server.NewNodeNameSpace(srv, s.opts.Namespace)
	nsObjects := ns.Objects()
	objects.AddRef(nsObjects, id.HasComponent, true)
	for _, name := range s.order {
		n := server.NewVariableNode(ua.NewStringNodeID(ns.ID(), name), name, server.ValueFunc(func() *ua.DataValue {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.values[name]
		}))
		if slices.Contains(s.opts.ReadOnly, name) {
			read := server.DataValueFromValue(uint8(ua.AccessLevelTypeCurrentRead))
			_ = n.SetAttribute(ua.AttributeIDAccessLevel, read)
			_ = n.SetAttribute(ua.AttributeIDUserAccessLevel, read)
		}
		ns.AddNode(n)
		nsObjects.AddRef(n, id.HasComponent, true)
	}
	if err := srv.Start(ctx); err != nil {
		_ = srv.Close()
		return err
	}
	s.srv, s.ns = srv, ns
	return nil
}

// URL is the server's endpoint, opc.tcp://host:port.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "opc.tcp://" + net.JoinHostPort(s.opts.Host, strconv.Itoa(s.port))
}

// Namespace returns the variables' namespace URI.
func (s *Server) Namespace() string { return s.opts.Namespace }

// NamespaceIndex returns the variables' namespace index (0 before Start).
func (s *Server) NamespaceIndex() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns == nil {
		return 0
	}
	return s.ns.ID()
}

// NodeID returns a variable's node id with its namespace URI:
// nsu=<namespace>;s=<name>.
func (s *Server) NodeID(name string) string { return "nsu=" + s.opts.Namespace + ";s=" + name }

// Set changes a variable's value (Good, source timestamp now) and notifies
// the monitored items on it.
func (s *Server) Set(name string, v any) { s.SetStatus(name, v, ua.StatusOK) }

// SetStatus changes a variable's value and status code; v may be nil for
// a Bad status without a value.
func (s *Server) SetStatus(name string, v any, code ua.StatusCode) {
	s.mu.Lock()
	if _, ok := s.values[name]; !ok {
		s.mu.Unlock()
		panic("opcuasim: no variable " + name)
	}
	s.values[name] = dataValue(v, code)
	srv, ns := s.srv, s.ns
	s.mu.Unlock()
	if srv != nil {
		srv.ChangeNotification(ua.NewStringNodeID(ns.ID(), name))
	}
}

// Value returns what a client reading the variable's Value attribute gets:
// the last value a client wrote, else the last Set. Before Start it is the
// last Set; nil for a name the server does not hold. A client's write shows
// here once the client has the server's response.
func (s *Server) Value(name string) *ua.DataValue {
	s.mu.Lock()
	ns, dv := s.ns, s.values[name]
	s.mu.Unlock()
	if ns == nil {
		return dv
	}
	n := ns.Node(ua.NewStringNodeID(ns.ID(), name))
	if n == nil {
		return nil
	}
	return n.Value() // the node's value function takes s.mu
}

// Close stops the server and drops every connection. It keeps the values
// and the port for Start.
func (s *Server) Close() error {
	s.mu.Lock()
	srv := s.srv
	s.srv, s.ns = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Close()
}

// Restart closes the server and starts it again on the same port, with new
// sessions and no subscriptions.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Close(); err != nil {
		return err
	}
	return s.Start(ctx)
}

// Animate changes Temperature, Pressure, Counter and Running every period
// until ctx is done.
func (s *Server) Animate(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.Set("Temperature", 21.5+float64(i%20)/4)
		s.Set("Pressure", float32(1.25+float64(i%10)/100))
		s.Set("Counter", uint32(i))
		if i%10 == 0 {
			s.Set("Running", i%20 != 0)
		}
	}
}

func newCert(host string) ([]byte, *rsa.PrivateKey, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	u, _ := url.Parse("urn:fieldgate:opcuasim")
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "fieldgate opcuasim"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP(host)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	return der, key, err
}
