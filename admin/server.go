package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// listenerState is the Admin API's listener and HTTP server.
type listenerState struct {
	mu     sync.Mutex
	srv    *http.Server
	addr   net.Addr
	bound  chan struct{} // closed once the listener is bound
	cancel context.CancelFunc
}

// retryEvery is how often Start's background loop retries an address in use.
const retryEvery = 500 * time.Millisecond

// Start listens on admin.listen and serves until Close. When the address is
// in use, as it is while the old process of an upgrade still runs, it keeps
// trying in the background and, once bound, reloads the configuration and
// state file (the old process may have changed it). Other errors, a bad
// certificate for instance, are returned at once.
func (s *Server) Start(ctx context.Context) error {
	cfg := s.m.Config().Admin
	if cfg == nil {
		return ErrNoAdmin
	}
	var tlsCfg *tls.Config
	if cfg.TLS != nil {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return fmt.Errorf("admin.tls (%s:%d): %w", cfg.File, cfg.Line, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ctx, cancel := context.WithCancel(ctx)
	s.run.mu.Lock()
	s.run.bound = make(chan struct{})
	s.run.cancel = cancel
	s.run.srv = &http.Server{
		Handler:           s,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	s.run.mu.Unlock()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err == nil {
		s.serve(ln)
		return nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		cancel()
		return fmt.Errorf("admin.listen %s (%s:%d): %w", cfg.Listen, cfg.File, cfg.Line, err)
	}
	s.log.Warn("admin address in use, waiting for it (an old mqgate still draining?)", "addr", cfg.Listen)
	go func() {
		t := time.NewTicker(retryEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				continue
			}
			s.serve(ln)
			// The process that held the address may have changed the
			// state file since this one started.
			_ = s.m.Reload("admin_takeover")
			return
		}
	}()
	return nil
}

func (s *Server) serve(ln net.Listener) {
	s.run.mu.Lock()
	srv := s.run.srv
	s.run.addr = ln.Addr()
	close(s.run.bound)
	s.run.mu.Unlock()
	scheme := "http"
	if srv.TLSConfig != nil {
		scheme = "https"
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	s.log.Info("admin API listening", "addr", ln.Addr().String(), "scheme", scheme)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin API stopped", "err", err)
		}
	}()
}

// Addr is the bound address, or nil while Start still waits for it.
func (s *Server) Addr() net.Addr {
	s.run.mu.Lock()
	defer s.run.mu.Unlock()
	return s.run.addr
}

// Bound is closed once the listener is bound.
func (s *Server) Bound() <-chan struct{} {
	s.run.mu.Lock()
	defer s.run.mu.Unlock()
	return s.run.bound
}

// Close stops listening at once, so a new process can take the address,
// and ends the requests in flight.
func (s *Server) Close() error {
	s.run.mu.Lock()
	defer s.run.mu.Unlock()
	if s.run.cancel != nil {
		s.run.cancel()
	}
	if s.run.srv == nil {
		return nil
	}
	return s.run.srv.Close()
}
