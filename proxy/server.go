// Package proxy is mqgate's data plane: it accepts MQTT client connections,
// reads each one's CONNECT, routes it, picks a broker and pipes bytes both
// ways, logging one access record per connection.
//
//	cfg, err := config.Load("mqgate.yaml")
//	if err != nil { ... }
//	srv, err := proxy.New(cfg, proxy.Options{Log: slog.Default()})
//	if err != nil { ... }
//	if err := srv.Listen(); err != nil { ... }
//	<-ctx.Done()
//	srv.Shutdown(drainCtx) // stop accepting, let live connections finish
//
// The path of one connection is serveConn in conn.go: its stages in the
// order they run, one method each. The PROXY header and the TLS handshake
// are in identity.go, the upstream's one dialer (client connections and
// health probes) in dial.go, the stream plugins in plugins.go (their
// modules are in plugin/), the live-connection index in connindex.go.
// Configuration is an immutable snapshot swapped atomically by Apply; live
// connections keep the snapshot they started with.
package proxy

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/admission"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/keyed"
	"github.com/mqgate/mqgate/limit"
	"github.com/mqgate/mqgate/pipe/epoll"
	"github.com/mqgate/mqgate/tlsconf"
	"github.com/mqgate/mqgate/tlsrecord"
)

// Options are the parts of a Server that do not come from the configuration.
type Options struct {
	Log       *slog.Logger      // process log; slog.Default() when nil
	AccessLog *accesslog.Writer // one record per connection, in log.access_log_format or JSON; nil disables it

	// CertCheckInterval is how often certificate files are checked for
	// changes; 0 means DefaultCertCheckInterval.
	CertCheckInterval time.Duration
}

// DefaultCertCheckInterval is how often certificate files are checked for
// changes unless Options say otherwise.
const DefaultCertCheckInterval = 5 * time.Second

// Server is a running set of listeners and the connections they accepted.
type Server struct {
	log    *slog.Logger
	access *accesslog.Writer
	// epoch is when the server was made: records keep their start as the
	// time since (monotonic nanoseconds, 8 bytes where a time.Time is 24).
	epoch time.Time

	snap     atomic.Pointer[snapshot]
	nodes    nodeRegistry
	routes   routeRegistry
	stats    Stats
	health   *health.Checker
	plugins  *plugins        // stream plugin modules and their compiled instances
	admitted limit.Slots     // connections past the plugins, for max_connections
	conns    *connIndex      // live connections, by shard, client id; claims of client ids
	gate     *admission.Gate // connections before their CONNECT: caps, shedding
	// pastConnect counts connections whose CONNECT was read, each holding
	// (or about to hold) two descriptors, for the gate's reserve.
	pastConnect atomic.Int64

	certs      *tlsconf.Store    // certificates, shared by snapshots, following their files
	tlsServer  *tls.Config       // for TLS listeners: picks the certificate from certs
	keyLog     *tlsrecord.KeyLog // the traffic secrets of TLS handshakes under way, for tlsrecord
	certCheck  time.Duration
	watchCerts sync.Once
	tlsCounts  keyed.Map[string, *tlsCounts]      // handshakes by configured listener address
	lnCounts   keyed.Map[string, *listenerCounts] // connections by configured listener address

	ctx    context.Context // cancelled when Shutdown gives up on draining
	cancel context.CancelFunc

	// mu serializes Listen, Apply and Shutdown over the listeners. No
	// connection takes it: accept and close take one shard of conns.
	mu        sync.Mutex
	listeners map[string]*listener // by configured address
	closing   bool
	handlers  sync.WaitGroup
	loops     eventLoops
	web       web // HTTP connections of websocket listeners (websocket.go)

	rebalancing rebalancer // the paced rebalance (rebalance.go)
	ended       endWaits   // keep_newest waiting for an older connection to end (sessions.go)
}

type listener struct {
	cfg    config.Listener
	ln     *net.TCPListener
	tls    *tlsCounts      // its handshakes, counted without a lookup
	counts *listenerCounts // its connections
	looped *epoll.Listener // the event loops accept on it (loopconn.go), or nil: acceptLoop does
}

// close stops accepting on l.
func (l *listener) close() {
	l.ln.Close()
	if l.looped != nil {
		l.looped.Close()
	}
}

// since is the time since the server's epoch, a record's start.
func (s *Server) since() int64 { return int64(time.Since(s.epoch)) }

// at is the time of a record's start.
func (s *Server) at(start int64) time.Time { return s.epoch.Add(time.Duration(start)) }

// New prepares a server for cfg without opening any socket.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{
		log:       opts.Log,
		access:    opts.AccessLog,
		epoch:     time.Now(),
		listeners: make(map[string]*listener),
		conns:     newConnIndex(),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.initWeb()
	s.plugins = newPlugins()
	s.stats.refusedBy = newRefusals(coreRefusals(), s.plugins.reasons())
	s.health = health.NewChecker(s.log, s.nodeChanged)
	s.certs = tlsconf.NewStore(opts.Log)
	s.keyLog = tlsrecord.NewKeyLog()
	s.certs.LogKeys(s.keyLog)
	if err := s.certs.Update(cfg); err != nil {
		return nil, err
	}
	snap, err := newSnapshot(cfg, &s.nodes, s.health, s.certs)
	if err != nil {
		return nil, err
	}
	snap.plugins = s.plugins.compile(cfg)
	snap.stats = s.routes.states(cfg)
	s.tlsServer = s.certs.ServerConfig()
	s.certCheck = cmp.Or(opts.CertCheckInterval, DefaultCertCheckInterval)
	s.gate = admission.New(admissionLimits(cfg.StreamProxy, admission.OpenFileLimit()))
	s.snap.Store(snap)
	if s.access != nil {
		s.access.SetFormat(accessFormat(cfg)) // log.access_log_format follows reloads
	}
	return s, nil
}

// Listen opens every configured listener and starts accepting. When one
// cannot be opened, none stays open.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	opened, _, err := s.openListeners(s.snap.Load().cfg)
	if err != nil {
		return err
	}
	for _, l := range opened {
		s.startListener(l)
	}
	s.watchCerts.Do(func() {
		go s.certs.Watch(s.ctx, s.certCheck)
		go s.gate.Run(s.ctx, s.log, shedLogInterval)
	})
	s.health.Update(s.snap.Load().targets) // probes run while the server does
	return nil
}

// openListeners opens the listeners of cfg that are not open yet, except
// those an open listener is bound to already: renamed maps each such
// address of cfg to the one that listener is open under (see boundAt).
// s.mu is held.
func (s *Server) openListeners(cfg *config.Config) (opened []*listener, renamed map[string]string, err error) {
	for _, lc := range cfg.StreamProxy.TCP {
		if _, ok := s.listeners[lc.Addr]; ok {
			continue
		}
		if from := s.boundAt(cfg, lc.Addr, renamed); from != "" {
			if renamed == nil {
				renamed = make(map[string]string)
			}
			renamed[lc.Addr] = from
			continue
		}
		ln, err := listenTCP(lc.Addr)
		if err != nil {
			for _, l := range opened {
				l.close()
			}
			return nil, nil, fmt.Errorf("listen %s (%s:%d): %w", lc.Addr, lc.File, lc.Line, err)
		}
		opened = append(opened, &listener{cfg: lc, ln: ln, tls: s.tlsCounts.Get(lc.Addr, newTLSCounts(lc.Addr)),
			counts: s.lnCounts.Get(lc.Addr, newListenerCounts(lc.Addr))})
	}
	return opened, renamed, nil
}

// boundAt finds the open listener, under an address cfg no longer names,
// that is bound to addr already (an IP address and a port other than 0):
// a reload from "127.0.0.1:0" to the port it got. That listener serves
// addr from now on, and nothing is bound again: a new socket beside it in
// the SO_REUSEPORT group would take part of the connections until the old
// one closed, and the old one's close resets the connections still in its
// accept queue (clients that connected and sent their CONNECT). It returns
// the address the listener is open under, or "". s.mu is held.
func (s *Server) boundAt(cfg *config.Config, addr string, renamed map[string]string) string {
	want, err := netip.ParseAddrPort(addr)
	if err != nil || want.Port() == 0 || want.Addr().IsUnspecified() {
		return ""
	}
	for name, l := range s.listeners {
		named := slices.ContainsFunc(cfg.StreamProxy.TCP, func(lc config.Listener) bool { return lc.Addr == name })
		for _, from := range renamed {
			named = named || from == name
		}
		if named {
			continue // it stays under its own address, or serves another already
		}
		if b, ok := l.ln.Addr().(*net.TCPAddr); ok && b.AddrPort().Port() == want.Port() && b.AddrPort().Addr().Unmap() == want.Addr().Unmap() {
			return name
		}
	}
	return ""
}

// rename moves the listeners openListeners found bound already to the
// addresses cfg names them by, their counts with them: the same counts,
// which its live connections hold, show under the new address from now
// (snapshot.renamed leads to its settings). s.mu is held.
func (s *Server) rename(renamed map[string]string) {
	for to, from := range renamed {
		l := s.listeners[from]
		delete(s.listeners, from)
		s.listeners[to] = l
		l.counts.addr.set(to)
		l.tls.addr.set(to)
		s.lnCounts.Update(to, func(*listenerCounts, bool) *listenerCounts { return l.counts })
		s.lnCounts.Prune(func(addr string, c *listenerCounts) bool { return addr != from || c != l.counts })
		s.tlsCounts.Update(to, func(*tlsCounts, bool) *tlsCounts { return l.tls })
		s.tlsCounts.Prune(func(addr string, c *tlsCounts) bool { return addr != from || c != l.tls })
		s.log.Info("listener kept under the address now configured", "addr", l.ln.Addr().String(), "configured", to, "was", from)
	}
}

func (s *Server) startListener(l *listener) {
	s.listeners[l.cfg.Addr] = l
	s.log.Info("listening", "addr", l.ln.Addr().String(), "configured", l.cfg.Addr)
	if loopListens(s.snap.Load(), l) {
		g, err := s.loops.get()
		if g != nil {
			if l.looped, err = g.Listen(l.ln, &loopAcceptor{s: s, l: l}); err == nil {
				return
			}
		}
		if err != nil {
			s.log.Warn("event loops cannot accept; accepting on a goroutine", "addr", l.cfg.Addr, "err", err)
		}
	}
	s.handlers.Add(1)
	go s.acceptLoop(l)
}

// listenTCP opens a listener with two socket options:
//   - SO_REUSEPORT, so that several mqgate processes can serve one address
//     (scaling out on one host, and a new binary taking over while the old
//     one drains);
//   - TCP_DEFER_ACCEPT, so that a connection is handed over only once the
//     client has sent data: MQTT clients speak first, and a connection that
//     never sends its CONNECT costs the proxy no wake-up.
func listenTCP(addr string) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: noTCPKeepAlive, Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// ListenerAddrs returns the bound address of each open listener by its
// configured address (useful when the configuration says port 0).
func (s *Server) ListenerAddrs() map[string]net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]net.Addr, len(s.listeners))
	for k, l := range s.listeners {
		out[k] = l.ln.Addr()
	}
	return out
}

func (s *Server) acceptLoop(l *listener) {
	defer s.handlers.Done()
	var backoff time.Duration
	for {
		// Shed connections still closing hold descriptors: give their
		// goroutines a moment before accepting more to shed.
		for i := 0; i < crowdedWaits && s.gate.Crowded(); i++ {
			time.Sleep(time.Millisecond)
		}
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors: the oldest unfinished connections
			// make room, and the accept is tried again at once.
			if outOfDescriptors(err) && s.gate.ShedOldest(emfileShed) > 0 {
				time.Sleep(time.Millisecond) // for the shed ones' readers to let go of their fds
				continue
			}
			// A similar passing trouble, or nothing to shed: back off
			// so the loop does not spin, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "addr", l.cfg.Addr, "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.stats.Accepted.Add(1)
		l.counts.accepted.Add(1)
		s.handlers.Add(1)
		go s.serveConn(l, c)
	}
}

// Apply validates nothing (config.Load has) but builds a snapshot from cfg,
// opens listeners cfg adds and closes those it drops, then makes it current
// for new connections. Established connections are untouched, including
// those accepted on a listener that is closed now. On error the running
// configuration stays.
func (s *Server) Apply(cfg *config.Config) error {
	snap, err := newSnapshot(cfg, &s.nodes, s.health, s.certs)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errors.New("server is shutting down")
	}
	opened, renamed, err := s.openListeners(cfg)
	if err != nil {
		return err
	}
	if err := s.certs.Update(cfg); err != nil {
		for _, l := range opened {
			l.close()
		}
		return err
	}
	s.rename(renamed)
	for name, l := range s.listeners {
		if name != l.cfg.Addr {
			if snap.renamed == nil {
				snap.renamed = make(map[string]string)
			}
			snap.renamed[l.cfg.Addr] = name
		}
	}
	snap.plugins = s.plugins.compile(cfg)
	snap.stats = s.routes.states(cfg)
	old := s.snap.Swap(snap)
	s.gate.SetLimits(admissionLimits(cfg.StreamProxy, admission.OpenFileLimit()))
	if s.access != nil {
		s.access.SetFormat(accessFormat(cfg)) // log.access_log_format follows reloads
	}
	s.health.Update(snap.targets)
	s.rebalanceAdded(old, snap) // a node added to a chash upstream takes its clients, paced
	for _, l := range opened {
		s.startListener(l)
	}
	keep := make(map[string]bool)
	for _, lc := range cfg.StreamProxy.TCP {
		keep[lc.Addr] = true
	}
	for addr, l := range s.listeners {
		if !keep[addr] {
			l.close()
			delete(s.listeners, addr)
			s.log.Info("listener closed", "addr", addr)
		}
	}
	s.nodes.prune(snap)
	s.routes.prune(snap)
	s.tlsCounts.Prune(func(addr string, _ *tlsCounts) bool { return keep[addr] })
	s.lnCounts.Prune(func(addr string, c *listenerCounts) bool { return keep[addr] || c.active.Load() > 0 })
	return nil
}

// Shutdown stops accepting, waits for live connections to end until ctx is
// done, then closes those left and waits for their handlers to return.
func (s *Server) Shutdown(ctx context.Context) error {
	s.health.Close()
	defer s.loops.close() // runs once every handler, looped or not, is done
	s.mu.Lock()
	s.closing = true
	s.conns.closing.Store(true)
	for addr, l := range s.listeners {
		l.close()
		delete(s.listeners, addr)
	}
	s.mu.Unlock()
	n := s.conns.count()
	if n > 0 {
		s.log.Info("draining connections", "count", n)
	}
	webDone := make(chan struct{})
	go func() { s.shutdownWeb(ctx); close(webDone) }()
	defer func() { <-webDone }()

	done := make(chan struct{})
	go func() { s.handlers.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	var left []*liveConn
	s.conns.each(func(lc *liveConn) { left = append(left, lc) })
	for _, lc := range left {
		lc.close(EndShutdown)
	}
	s.log.Warn("drain timeout: closed remaining connections", "count", len(left))
	<-done
	return ctx.Err()
}

// track registers a live connection so Shutdown and operators can close it.
// It reports false when the server is shutting down.
func (s *Server) track(lc *liveConn) bool { return s.conns.track(lc) }

func (s *Server) untrack(lc *liveConn) {
	lc.settle()
	s.conns.untrack(lc)
}
