package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/tlsrecord"
	"github.com/mqgate/mqgate/vars"
)

// This file is the entry for MQTT over WebSocket: a listener with
// websocket set tells an HTTP request from an MQTT CONNECT by the first
// byte. An upgrade to MQTT over WebSocket on the listener's path is
// answered right there on the connection's own goroutine, without net/http
// (mqttws.UpgradeConn: gobwas/ws reading the request in place), and the
// WebSocket, a net.Conn of MQTT bytes, goes on through the same stages as a
// TCP client from reading the CONNECT on (connPath.mqtt). Every other HTTP
// request (HTTP routes, refusals with their reasons) is handed, bytes read
// so far and all, to one net/http server.

// Why a WebSocket connection ended, beyond the pipe's own reasons.
const (
	EndWebSocketText  pipe.End = "websocket_text_frame" // a text frame [MQTT-6.0.0-1]
	EndWebSocketFrame pipe.End = "websocket_frame"      // a WebSocket protocol violation
)

// webResults are the outcomes of upgrade requests, counted in this order.
var webResults = [...]string{"upgraded", "not_websocket", "origin", "subprotocol", "handshake"}

// webStats count the WebSocket entry's outcomes.
type webStats struct {
	results [len(webResults)]atomic.Uint64
}

func (w *webStats) count(result string) {
	for i, r := range webResults {
		if r == result {
			w.results[i].Add(1)
			return
		}
	}
}

func (w *webStats) snapshot() map[string]uint64 {
	out := make(map[string]uint64, len(webResults))
	for i, r := range webResults {
		out[r] = w.results[i].Load()
	}
	return out
}

// isHTTP reports whether a connection's first byte starts an HTTP request
// line (GET, POST, ..., all upper-case letters) rather than an MQTT CONNECT
// (0x10) or anything else, which the CONNECT reader refuses.
func isHTTP(first byte) bool { return first >= 'A' && first <= 'Z' }

// sniffSize is what sniff reads at once: most of an upgrade request or a
// CONNECT in one system call, and within what preread takes as read
// already (prereadBufSize).
const sniffSize = 1024

var sniffPool = sync.Pool{New: func() any { b := make([]byte, sniffSize); return &b }}

// sniff tells MQTT from HTTP on a listener that takes both, by the first
// byte (read within connect_timeout, with what came with it): MQTT goes on
// to the CONNECT with those bytes kept, an MQTT WebSocket upgrade is
// answered here, other HTTP is handed to the web server.
func (p *connPath) sniff() bool {
	lcfg := p.snap.listenerConfig(p.l.cfg.Addr, p.l.cfg)
	if lcfg.WebSocket == nil && !lcfg.HTTP {
		return true
	}
	_ = p.conn.SetReadDeadline(time.Now().Add(p.snap.cfg.StreamProxy.ConnectTimeout))
	bp := sniffPool.Get().(*[]byte)
	defer sniffPool.Put(bp)
	n, err := p.conn.Read(*bp)
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		p.s.failPreread(p.conn, p.rec, err)
		return false
	}
	// An error that came with bytes comes again on the next read.
	first := (*bp)[:n]
	if !isHTTP(first[0]) && !lcfg.HTTPOnly {
		p.have = append([]byte(nil), first...)
		return true
	}
	if lcfg.WebSocket != nil {
		u := mqttws.Upgrader{AllowOrigin: lcfg.WebSocket.AllowsOrigin, Timeout: p.snap.cfg.StreamProxy.ConnectTimeout}
		under, pc := p.conn, p.park
		if pc == nil && p.conn == net.Conn(p.tcp) && p.snap.cfg.StreamProxy.DataPath == config.DataPathEpoll {
			// A plain WebSocket waits without goroutines as a TLS client
			// does (pipe.Park): built on a ParkConn from its upgrade on.
			pc = pipe.NewParkConn(p.tcp)
			under = pc
		}
		c, fwd, replay, err := u.UpgradeConn(under, first, lcfg.WebSocket.Path)
		switch {
		case err != nil:
			p.s.failPreread(p.conn, p.rec, err)
			return false
		case c != nil:
			p.s.web.stats.count("upgraded")
			if pc != nil {
				// The pair starts busy, ws or wss: a browser's SUBSCRIBEs
				// (or a short session's DISCONNECT) follow the CONNACK at
				// once, so its first packets are not worth two notifier
				// registrations and a notifier wake-up.
				pc.StartBusy()
			}
			p.conn, p.park = c, pc
			p.rec.websocket = true
			addr, ok := fwd.Addr()
			p.rec.trustForwarded(addr, ok, lcfg, &p.vars)
			return true
		}
		first = replay // not an upgrade this path takes: net/http answers it
	} else {
		first = append([]byte(nil), first...)
	}
	wc := &webConn{Conn: p.conn, tcp: p.tcp, first: first, request: first, listener: lcfg, remote: p.rec.remote, id: p.rec.id.clone(), vars: p.vars, srv: p.s}
	p.handed = p.s.handOver(wc)
	return false
}

// webConn is an HTTP connection handed to the web server: the client's
// connection (TLS already ended) with the byte sniffing took, and who the
// client is as the stages before found out.
type webConn struct {
	net.Conn
	tcp      *net.TCPConn // under TLS, if any
	first    []byte
	listener config.Listener // as configured when it was accepted
	remote   netip.AddrPort
	id       identity
	vars     vars.Set

	srv     *Server
	request []byte // what sniffing read: the first request's line, for a record net/http does not write
}

func (c *webConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Write sees net/http's own answers to requests it hands no handler (a
// header too large or malformed, say: 400, 431, 501), which it writes
// straight to the connection, in one write, with errorHeaders and no
// Date; every answer through a ResponseWriter has a Date.
func (c *webConn) Write(p []byte) (int, error) {
	if len(p) > len("HTTP/1.1 ") && p[0] == 'H' && bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
		if line, rest, ok := bytes.Cut(p, []byte("\r\n")); ok && bytes.HasPrefix(rest, []byte(netHTTPErrorHeaders)) {
			c.srv.netHTTPAnswer(c, line, int64(len(rest)-len(netHTTPErrorHeaders)))
		}
	}
	return c.Conn.Write(p)
}

// netHTTPErrorHeaders is what net/http's own error answers have after
// their status line (net/http's errorHeaders, without its first CRLF).
const netHTTPErrorHeaders = "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// netHTTPAnswer writes the access record of an answer net/http wrote
// itself (its status line, and down bytes of body) to a request no
// handler saw. The request line is the request's when it was the
// connection's first and sniffing read it whole; else the method is "-"
// and the URI and protocol are empty.
func (s *Server) netHTTPAnswer(wc *webConn, status []byte, down int64) {
	code, text, ok := statusLine(status)
	if !ok {
		return
	}
	r := &http.Request{Method: "-"} // an HTTP record, its request line unknown
	if line, _, found := bytes.Cut(wc.request, []byte("\r\n")); found {
		if method, rest, ok := strings.Cut(string(line), " "); ok {
			if uri, proto, ok := strings.Cut(rest, " "); ok && strings.HasPrefix(proto, "HTTP/") {
				r.Method, r.RequestURI, r.Proto = method, uri, proto
			}
		}
	}
	wc.request = nil
	s.logHTTP(r, wc, wc.remote, false, time.Now(), httpOutcome{status: code, down: down, detail: "answered by net/http: " + text})
}

// statusLine reads an HTTP/1.x status line's code and text.
func statusLine(line []byte) (code int, text string, ok bool) {
	rest, found := bytes.CutPrefix(line, []byte("HTTP/1."))
	if !found || len(rest) < 6 || rest[1] != ' ' {
		return 0, "", false
	}
	code, err := strconv.Atoi(string(rest[2:5]))
	if err != nil {
		return 0, "", false
	}
	return code, string(rest[2:]), true
}

type webConnKey struct{}

// web is the server's one net/http server for all listeners, fed the
// connections the listeners tell to be HTTP.
type web struct {
	once  sync.Once
	srv   *http.Server
	feed  chan net.Conn
	done  chan struct{}
	close sync.Once
	stats webStats
}

func (w *web) Accept() (net.Conn, error) {
	select {
	case c := <-w.feed:
		return c, nil
	case <-w.done:
		return nil, net.ErrClosed
	}
}
func (w *web) Close() error   { w.close.Do(func() { close(w.done) }); return nil }
func (w *web) Addr() net.Addr { return &net.TCPAddr{} }

func (s *Server) initWeb() {
	s.web.feed = make(chan net.Conn)
	s.web.done = make(chan struct{})
	s.web.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: config.DefaultConnectTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, webConnKey{}, c)
		},
	}
}

// handOver gives an HTTP connection to the web server. It reports false
// when the server is shutting down, and the connection is the caller's.
func (s *Server) handOver(wc *webConn) bool {
	s.web.once.Do(func() { go func() { _ = s.web.srv.Serve(&s.web) }() })
	select {
	case s.web.feed <- wc:
		return true
	case <-s.web.done:
		return false
	}
}

// shutdownWeb stops the web server: no more connections, idle keep-alive
// ones closed, requests in flight given until ctx is done. Upgraded
// WebSocket connections are the server's own and drain with the others.
func (s *Server) shutdownWeb(ctx context.Context) {
	s.web.Close()
	if err := s.web.srv.Shutdown(ctx); err != nil {
		_ = s.web.srv.Close()
	}
}

// serveHTTP is every HTTP request on a listener: the WebSocket path of a
// websocket listener upgrades; other requests get 404.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	wc, _ := r.Context().Value(webConnKey{}).(*webConn)
	if wc != nil {
		wc.request = nil // a later request's line is not in it
	}
	if wc == nil {
		http.Error(w, "no listener", http.StatusInternalServerError)
		return
	}
	snap := s.snap.Load()
	lcfg := snap.listenerConfig(wc.listener.Addr, wc.listener)
	if ws := lcfg.WebSocket; ws != nil && r.URL.Path == ws.Path {
		s.upgrade(w, r, wc, lcfg, snap)
		return
	}
	if lcfg.HTTP {
		start := time.Now()
		client := netip.AddrPortFrom(wc.remote.Addr().Unmap(), wc.remote.Port())
		a, forwarded := forwardedFor(r.Header)
		if forwarded = forwarded && allowed(lcfg.RealIPFrom, wc.remote.Addr()); forwarded {
			client = netip.AddrPortFrom(a.Unmap(), 0)
		}
		scheme := "http"
		if wc.id.tls != nil {
			scheme = "https"
		}
		if hr := matchHTTP(snap.http, r, client.Addr(), scheme); hr != nil {
			s.proxyHTTP(w, r, hr, wc, client, forwarded)
			return
		}
		text := "404 no route matches " + r.Method + " " + r.Host + r.URL.Path
		http.Error(w, text, http.StatusNotFound)
		s.logHTTP(r, wc, client, forwarded, start, httpOutcome{status: http.StatusNotFound, down: int64(len(text)) + 1, detail: "no route matches"})
		return
	}
	text := "404 page not found"
	if lcfg.WebSocket != nil {
		text = "not found: MQTT over WebSocket is at " + lcfg.WebSocket.Path
	}
	http.Error(w, text, http.StatusNotFound)
	s.logHTTP(r, wc, wc.remote, false, time.Now(), httpOutcome{status: http.StatusNotFound, down: int64(len(text)) + 1, detail: text})
}

// upgrade answers the WebSocket handshake and sends the connection on
// through the MQTT stages, on a goroutine of its own so that net/http's
// one for the request ends with its buffers.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, wc *webConn, lcfg config.Listener, snap *snapshot) {
	u := mqttws.Upgrader{AllowOrigin: lcfg.WebSocket.AllowsOrigin, Timeout: snap.cfg.StreamProxy.ConnectTimeout}
	start := time.Now()
	conn, err := u.Upgrade(w, r)
	if err != nil {
		out := httpOutcome{status: http.StatusBadRequest, detail: err.Error(), errorKind: "handshake"}
		var ref *mqttws.Refusal
		if errors.As(err, &ref) {
			s.web.stats.count(ref.Kind)
			out.status, out.errorKind = ref.Status, ref.Kind
			if ref.Kind != "handshake" { // the others answer with the reason as the body
				out.down = int64(len(ref.Reason)) + 1
			}
		}
		// The client as the access log's HTTP records name it: a proxy in
		// front is trusted for it as for an upgraded connection.
		client := wc.remote
		a, forwarded := forwardedFor(r.Header)
		if forwarded = forwarded && allowed(lcfg.RealIPFrom, wc.remote.Addr()); forwarded {
			client = netip.AddrPortFrom(a.Unmap(), 0)
		}
		s.logHTTP(r, wc, client, forwarded, start, out)
		s.log.Debug("WebSocket upgrade refused", "listener", lcfg.Addr, "client", wc.remote, "err", err)
		return
	}
	s.web.stats.count("upgraded")
	// Counted on its listener, where it was accepted as the HTTP connection.
	lc := &liveConn{srv: s, gp: &goPair{client: conn}, rec: record{start: s.since(), listener: s.lnCounts.Get(lcfg.Addr, newListenerCounts(lcfg.Addr)), remote: wc.remote, id: wc.id.clone()}}
	rec := &lc.rec
	rec.websocket = true
	a, ok := forwardedFor(r.Header)
	vs := wc.vars
	rec.trustForwarded(a, ok, lcfg, &vs)
	if !s.trackUpgraded(lc) {
		conn.Close()
		return
	}
	s.stats.Active.Add(1)
	lc.rec.listener.active.Add(1)
	p := &connPath{s: s, tcp: wc.tcp, snap: snap, lc: lc, rec: rec, conn: conn, local: addrPort(wc.tcp.LocalAddr()), vars: vs}
	go func() {
		defer p.finish()
		p.mqtt()
	}()
}

// trustForwarded takes the client address a proxy in front says the client
// has (ok: the request had one), when that proxy, the connection's peer, is
// in the listener's real_ip_from. Behind a PROXY header as well, the access
// log keeps the header's sender.
func (rec *record) trustForwarded(a netip.Addr, ok bool, lcfg config.Listener, vs *vars.Set) {
	if !ok || !allowed(lcfg.RealIPFrom, rec.remote.Addr()) {
		return
	}
	if !rec.id.peer().IsValid() {
		rec.id.extra().peer, rec.forwarded = rec.remote, true
	}
	rec.remote = netip.AddrPortFrom(a, 0)
	vs.RemoteAddr = a.Unmap().String()
}

// forwardedFor is the client address a proxy in front of mqgate gives:
// X-Real-IP, else the last X-Forwarded-For entry (the one that proxy
// added), as NGINX's realip module reads them.
func forwardedFor(h http.Header) (netip.Addr, bool) {
	if v := strings.TrimSpace(h.Get("X-Real-IP")); v != "" {
		if a, err := netip.ParseAddr(v); err == nil {
			return a.Unmap(), true
		}
	}
	vals := h.Values("X-Forwarded-For")
	if len(vals) == 0 {
		return netip.Addr{}, false
	}
	last := vals[len(vals)-1]
	if i := strings.LastIndexByte(last, ','); i >= 0 {
		last = last[i+1:]
	}
	a, err := netip.ParseAddr(strings.TrimSpace(last))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// trackUpgraded is track for a connection that starts in a web handler
// rather than the accept loop: it also counts the handler, under the lock
// that Shutdown takes, so Shutdown waits for it.
func (s *Server) trackUpgraded(lc *liveConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.handlers.Add(1)
	if !s.conns.track(lc) {
		s.handlers.Done()
		return false
	}
	return true
}

// webEnd classifies a WebSocket error of the client's: the end of its
// record, or "" for errors that are not the WebSocket's.
func webEnd(err error) pipe.End {
	var fe *mqttws.FrameError
	switch {
	case errors.Is(err, mqttws.ErrTextFrame):
		return EndWebSocketText
	case errors.As(err, &fe):
		return EndWebSocketFrame
	}
	return ""
}

// countParked counts a plain ws pair that parks rather than enter a loop:
// for its broker side when that is not plain TCP (an upstream with scheme
// ws, wss or tls, which no loop takes), else for its handover.
func (p *connPath) countParked() {
	if _, tcp := p.broker.(*net.TCPConn); !tcp {
		p.s.stats.WebSocketUpstreamParked.Add(1)
		return
	}
	p.s.stats.WebSocketParked.Add(1)
}

// loopClient is the client's side for an event loop: the connection
// itself, or for a plain WebSocket (ws on data_path epoll, parked from its
// upgrade) the TCP connection under it, with ws set, when the loop can
// take its frames from here (mqttws.Conn.Detachable); else the WebSocket,
// which the loops do not take, and it parks as before. A wss WebSocket
// over a tlsrecord.Conn is both: the TCP connection, ws set and the
// records' Conn (loopPair detaches them, epoll.Group.AddWSS).
func (p *connPath) loopClient() (client net.Conn, ws bool, tc *tlsrecord.Conn) {
	if rc, ok := p.conn.(*tlsrecord.Conn); ok {
		// A TLS client whose records tlsrecord carries: the loop carries
		// them on from the TCP connection under it (loopPair detaches
		// them), as a ws client's frames.
		if p.park == nil || p.tcp == nil || p.ec != nil || rc.Conn != net.Conn(p.park) {
			return p.conn, false, nil
		}
		return p.tcp, false, rc
	}
	wc, ok := p.conn.(*mqttws.Conn)
	if !ok || p.park == nil || p.tcp == nil || p.ec != nil {
		return p.conn, false, nil
	}
	under, ok := wc.Detachable()
	if rc, wss := wc.Conn.(*tlsrecord.Conn); wss && rc.Conn == net.Conn(p.park) {
		// wss whose records tlsrecord carries: the loop opens the
		// records and takes the frames inside apart (pipe/epoll).
		if ok && under == net.Conn(rc) {
			return p.tcp, true, rc
		}
		p.countParked() // its frames were not at a boundary: a ws pair parked
		return p.conn, false, nil
	}
	if ok && under == net.Conn(p.park) {
		return p.tcp, true, nil
	}
	if wc.Conn == net.Conn(p.park) { // a ws pair the loop could have had: counted
		p.countParked()
	}
	return p.conn, false, nil
}
