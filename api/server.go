// Package api serves the gateway's management endpoints over HTTP:
// Prometheus metrics at /metrics, liveness at /healthz and readiness at
// /readyz. It listens on loopback by default; on any other address a
// bearer token is required.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Source is what the server reports on. Its methods are called from HTTP
// handlers and must be safe for concurrent use.
type Source interface {
	// Metrics declares and fills the gateway's metric families.
	Metrics(m *Metrics)
	// Ready returns nil when the gateway is doing its job (buffer writable,
	// at least one device up, broker connected), or what is wrong.
	Ready() error
}

// Config configures the server.
type Config struct {
	Listen string // host:port; port 0 picks a free one
	Token  string // bearer token; required unless Listen is a loopback address
}

// Server is the management HTTP server. Create it with New, run it once.
type Server struct {
	cfg Config
	src Source
	log *slog.Logger
	ln  net.Listener
}

// New opens the listener, so that Addr is known before Run. It refuses a
// non-loopback address without a token.
func New(cfg Config, src Source, log *slog.Logger) (*Server, error) {
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("api listen %q: %w", cfg.Listen, err)
	}
	if !isLoopback(host) && cfg.Token == "" {
		return nil, fmt.Errorf("api listen %q is not a loopback address: set api.token_file", cfg.Listen)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	return &Server{cfg: cfg, src: src, log: log, ln: ln}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		var m Metrics
		s.src.Metrics(&m)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = m.WriteTo(w)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.src.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if s.cfg.Token == "" {
		return mux
	}
	want := []byte("Bearer " + s.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fieldgate"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Run serves until ctx is cancelled, then shuts down within 2 s.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	s.log.Info("management API listening", "addr", "http://"+s.Addr(), "endpoints", "/metrics /healthz /readyz")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}
