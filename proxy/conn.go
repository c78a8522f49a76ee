package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mqgate/mqgate/accesslog"
	"github.com/mqgate/mqgate/admission"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/pipe/epoll"
	"github.com/mqgate/mqgate/plugin"
	"github.com/mqgate/mqgate/route"
	"github.com/mqgate/mqgate/vars"
)

// Why a connection ended, beyond the pipe's own reasons (pipe.End).
const (
	EndRefused        pipe.End = "refused"         // a well-formed CONNECT answered with a refusing CONNACK
	EndBadConnect     pipe.End = "bad_connect"     // not MQTT, malformed or oversized: closed without reply
	EndConnectTimeout pipe.End = "connect_timeout" // no complete CONNECT within connect_timeout
	EndShutdown       pipe.End = "shutdown"        // closed by a drain that ran out of time
)

// halfCloseTimeout bounds how long one direction may go on after the other
// side sent FIN: MQTT has no use for half-open connections, but a peer that
// closes cleanly should see its last bytes delivered.
const halfCloseTimeout = 30 * time.Second

// refuseLinger bounds how long a refused client gets to read its CONNACK
// before the socket is closed.
const refuseLinger = 2 * time.Second

// prereadBufSize fits nearly every CONNECT in one pooled buffer; larger ones
// get a buffer of their own, up to max_connect_size.
const prereadBufSize = 2048

var prereadPool = sync.Pool{New: func() any { b := make([]byte, prereadBufSize); return &b }}

// liveConn is one connection from accept to its access record, as Shutdown
// and operators see it. It is all a connection in an event loop keeps in
// the Go heap besides the loop's own state, so it is one allocation.
type liveConn struct {
	srv      *Server
	links    [numLinks]link // its places in its shard's, node's and route's lists (connindex.go)
	sameID   *liveConn      // the next piping connection in its client id's bucket (connindex.go)
	mu       sync.Mutex
	home     uint8 // its shard of srv.conns
	admitted bool  // holds one of stream_proxy.max_connections
	read     bool  // its CONNECT was read: counted in Server.pastConnect
	// forwardedDown is the broker's CONNACK and what followed it, sent to
	// the client before the pipe (at most 64 KiB): here, where it fills
	// padding, as liveConn is the cost of every idle connection.
	forwardedDown int32
	looped        *epoll.Conn // the pair in an event loop, or nil
	gp            *goPair     // the pair on goroutines, or nil once (or while) in an event loop
	reason        pipe.End    // set by close, overrides the pipe's own End
	node          *nodeState  // the node it is proxied to, once dialled
	release       func()      // gives back the places the stages took (limit plugins, client id)
	entry         connEntry   // the connection table's row, see connections.go
	rec           record
}

// goPair is what a close from outside acts on while the connection is on
// goroutines: one pointer in liveConn, as a connection in an event loop
// has none of it.
type goPair struct {
	client net.Conn
	broker net.Conn      // nil until dialled
	ctl    *pipe.Control // the pair's pipe (pipe.Start), or nil
}

// end closes the books on a connection that ended before its pipe:
// limits, node and server counters, tracking, the access record. A close
// from outside (a drain, a kick, on_marked_down) names the end.
func (lc *liveConn) end() { lc.closeBooks(true) }

// pipeEnded is called by the event loop, or the pipe's goroutines, when
// the pair has ended. The pipe's End is the connection's: both pipes keep
// the first reason decided, their own (0x95, 0x8D, a side that closed) or
// a close from outside, so a kick or a drain that reached a connection
// already closing (lingering after its goodbye) changes nothing, and its
// reason, recorded in lc.reason all the same, is not the connection's.
func (lc *liveConn) pipeEnded(res pipe.Result) {
	lc.rec.piped(res)
	lc.closeBooks(false)
}

// closeBooks is end; byReason says a close from outside names the end.
func (lc *liveConn) closeBooks(byReason bool) {
	s := lc.srv
	lc.releaseAll()
	if lc.node != nil {
		lc.node.active.Add(-1)
	}
	if lc.rec.source != nil {
		lc.rec.source.active.Add(-1)
	}
	s.untrack(lc)
	s.ended.signal(lc)
	s.stats.Active.Add(-1)
	if lc.read {
		s.pastConnect.Add(-1)
	}
	if l := lc.rec.listener; l != nil {
		l.active.Add(-1)
		if lc.rec.end == EndRefused {
			l.refused.Add(1)
		}
	}
	if r := lc.closedBy(); r != "" && byReason {
		lc.rec.end = r
	}
	s.logRecord(&lc.rec, lc.node)
	s.handlers.Done()
}

// took records a release function of a stage; nil is nothing to give back.
// Several chain into one function, last first: one word in liveConn.
func (lc *liveConn) took(release func()) {
	switch prev := lc.release; {
	case release == nil:
	case prev == nil:
		lc.release = release
	default:
		lc.release = func() { release(); prev() }
	}
}

// releaseAll gives back what the stages took, last first, once. Only the
// connection's own goroutine, or its event loop after the handover, calls it.
func (lc *liveConn) releaseAll() {
	if lc.release != nil {
		lc.release()
		lc.release = nil
	}
	if lc.admitted {
		lc.admitted = false
		lc.srv.admitted.Release()
	}
}

// handedOver closes the books on a connection that another part of the
// server took over (an HTTP connection, now the web server's): no access
// record, as it is not an MQTT connection; an upgrade to WebSocket makes
// one of its own.
func (lc *liveConn) handedOver() {
	lc.srv.untrack(lc)
	lc.srv.stats.Active.Add(-1)
	if l := lc.rec.listener; l != nil {
		l.active.Add(-1)
	}
	lc.srv.handlers.Done()
}

// bytesSoFar is what the connection has carried, CONNECT included: what
// was forwarded before the pipe, and the meter its pipe (or event loop)
// keeps.
func (lc *liveConn) bytesSoFar() (up, down int64) {
	e := &lc.entry
	return int64(e.forwarded) + e.meter.Up.Load(), int64(lc.forwardedDown) + e.meter.Down.Load()
}

// close ends the connection from outside, recording why. A piping
// connection ends at a packet boundary of the stream to the client, after
// a 5.0 DISCONNECT saying why (goodbye); one still reading its CONNECT or
// dialling is closed at once.
func (lc *liveConn) close(reason pipe.End) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.reason == "" {
		lc.reason = reason
	}
	switch {
	case lc.looped != nil:
		lc.looped.CloseAtBoundary(reason, lc.srv.goodbye(reason, lc.rec.level))
		return
	case lc.gp.ctl != nil:
		lc.gp.ctl.CloseAtBoundary(reason, lc.srv.goodbye(reason, lc.rec.level))
		return
	}
	lc.gp.client.Close()
	if lc.gp.broker != nil {
		lc.gp.broker.Close()
	}
}

// closeThen is close for a connection in an event loop, calling then on
// its loop once its client was told why. It reports false, and does
// nothing, when the connection is not in a loop or is closing already.
func (lc *liveConn) closeThen(reason pipe.End, then func()) bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.looped == nil || lc.reason != "" {
		return false
	}
	lc.reason = reason
	return lc.looped.CloseAtBoundaryThen(reason, lc.srv.goodbye(reason, lc.rec.level), then)
}

// control gives the connection the handle a close from outside uses from
// the CONNACK on; pipe.Run (or, until it starts, nobody) acts on it. A
// close asked for before reaches the connections directly.

func (lc *liveConn) control() *pipe.Control {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.gp.ctl = new(pipe.Control)
	return lc.gp.ctl
}

func (lc *liveConn) setBroker(c net.Conn) bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.reason != "" {
		return false
	}
	lc.gp.broker = c
	return true
}

func (lc *liveConn) closedBy() pipe.End {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.reason
}

// record is the access-log record of one connection, filled in stage by stage.
type record struct {
	start    int64           // Server.since when accepted
	listener *listenerCounts // its counts, and its configured address
	remote   netip.AddrPort
	route    *routeState // once routed: its id and counts (status.go)
	clientID string
	username string
	level    byte
	// websocket: the client came over WebSocket (wss with TLS); forwarded:
	// a trusted proxy's X-Real-IP/X-Forwarded-For gave remote, and id.peer()
	// is that proxy. They and status sit in level's padding: liveConn stays
	// in its size class.
	websocket, forwarded bool
	status               uint16        // NGINX's $status of a refusal, set with it (accesslog.go)
	source               *sourceCounts // the source address it was dialled from, if the upstream has them
	hashKey              string        // the balancer key, for moving the client back when its node returns
	up, down             int64
	end                  pipe.End
	detail               string // refusal reason, parse error, dial error
	errorKind            string
	id                   identity // PROXY header, TLS session, variables (identity.go)
}

// serveConn is the path of one connection: the stages below, in the order
// they run, each one method of connPath. A stage that ends the connection
// (a refusal, a failed dial, a closed socket) records why in the access
// record and returns false; what the stages took is given back when the
// connection ends (liveConn.end).
func (s *Server) serveConn(l *listener, c *net.TCPConn) {
	p := &connPath{s: s, l: l, tcp: c, snap: s.snap.Load()}
	if !p.track() {
		return
	}
	defer p.finish()
	_ = p.admit() && // a place among the unfinished connections (admission.go)
		p.open() && // PROXY header in, TLS handshake (identity.go)
		p.sniff() && // MQTT, or HTTP for the web server and its WebSocket upgrade (websocket.go)
		p.mqtt()
}

// mqtt runs the stages from the CONNECT on, for a client over TCP, TLS or
// WebSocket alike.
func (p *connPath) mqtt() bool {
	return p.readConnect() && // the CONNECT, bounded in size and time
		p.policies() &&
		p.dial() && // balance, then the upstream's dialer, the next node on failure
		p.handOver() && // the CONNECT (as rewritten) and what followed it
		p.pipe() // both ways until either side ends, in an event loop or the pipe's goroutines
}

// policies are the stages between the CONNECT and the dial, the same for
// a connection on a goroutine and one an event loop accepted (loopconn.go).
func (p *connPath) policies() bool {
	return p.route() && // server port, SNI, addresses, client id, username
		p.plugins(plugin.Check) && // mqtt-proxy, mqtt-rewrite, ip-restriction (plugin/registry)
		p.maxConnections() && // stream_proxy.max_connections
		p.plugins(plugin.Limit) && // limit-req, limit-conn
		p.uniqueClientID() // stream_proxy.on_duplicate_client_id
}

// connPath is one connection on its way through serveConn's stages.
type connPath struct {
	s     *Server
	l     *listener
	tcp   *net.TCPConn
	snap  *snapshot
	lc    *liveConn
	rec   *record
	local netip.AddrPort // the address the client connected to
	ec    *epoll.Conn    // the client, when an event loop accepted it (loopconn.go); tcp is nil then
	vars  vars.Set       // the connection's variables, for the stages up to the dial

	ticket    *admission.Ticket // its place until the CONNECT is read
	conn      net.Conn          // the client: tcp, TLS over it, or a WebSocket over either
	park      *pipe.ParkConn    // under a TLS conn that may wait without goroutines, or nil
	have      []byte            // what sniff read of the CONNECT
	buf       *[]byte           // what preread read: the CONNECT and what followed it
	n, size   int               // bytes in buf; the CONNECT's size
	connect   *mqtt.Connect     // as the client sent it
	ri        int               // the route's index in the snapshot
	pc        plugin.Conn       // the CONNECT as the plugins (and then the broker) see it
	up        *upstream
	broker    net.Conn
	ack       []byte // the broker's CONNACK and what followed it, for the client
	ctl       *pipe.Control
	keepAlive uint16    // the client's, for the idle limit
	looped    bool      // the pair is in an event loop or the pipe's goroutines, which end the connection
	refusal   []byte    // the refusing CONNACK for an event loop to send (ec)
	takenOver *liveConn // the older connection of the client id, to close before the dial (ec)
	handed    bool      // an HTTP connection, the web server's now
}

// track registers the connection, or closes it when the server is
// shutting down.
func (p *connPath) track() bool {
	s := p.s
	p.local = addrPort(p.tcp.LocalAddr())
	p.lc = &liveConn{srv: s, gp: &goPair{client: p.tcp}, rec: record{start: s.since(), listener: p.l.counts, remote: addrPort(p.tcp.RemoteAddr())}}
	p.rec = &p.lc.rec
	if !s.track(p.lc) {
		p.tcp.Close()
		s.handlers.Done()
		return false
	}
	s.stats.Active.Add(1)
	p.l.counts.active.Add(1)
	return true
}

// finish closes what the stages left open, unless an event loop has the
// pair now.
func (p *connPath) finish() {
	putPrereadBuf(p.buf)
	if p.handed {
		// The web server has it now, with its own timeouts: it leaves
		// admission, which must not shed a live HTTP or WebSocket client.
		p.ticket.Done()
		p.lc.handedOver()
		return
	}
	if p.looped {
		return
	}
	if p.broker != nil {
		p.broker.Close()
	}
	p.tcp.Close()
	p.ticket.Done() // after Close: a shed connection's descriptor is free now
	p.lc.end()
}

// open runs the PROXY header and TLS stages (identity.go).
func (p *connPath) open() bool {
	conn, pc, ok := p.s.open(p.l, p.tcp, p.snap, p.rec, &p.vars)
	p.conn, p.park = conn, pc
	// Counted under the PROXY header's client from now on, when there was one.
	return ok && p.ticket.Move(p.rec.remote.Addr())
}

// readConnect reads and parses the CONNECT, bounded in size and time.
func (p *connPath) readConnect() bool {
	buf, n, size, err := p.s.preread(p.conn, p.snap, p.have)
	p.buf, p.n, p.size = buf, n, size
	return p.connectRead(err)
}

// connectRead parses the CONNECT that p.buf holds, or ends the connection
// for err, the reading's failure.
func (p *connPath) connectRead(err error) bool {
	if err != nil {
		p.answer(p.s.prereadFailed(p.rec, err))
		return false
	}
	connect, err := mqtt.ParseConnect((*p.buf)[:p.size])
	if err != nil {
		p.answer(p.s.prereadFailed(p.rec, err))
		return false
	}
	p.ticket.Done() // its CONNECT is in: no longer to be shed
	p.lc.read = true
	p.s.pastConnect.Add(1)
	p.connect, p.keepAlive = connect, connect.KeepAlive
	rec := p.rec
	rec.clientID, rec.username, rec.level = connect.ClientID, connect.Username, connect.Level
	p.vars.MQTTClientID, p.vars.MQTTUsername = connect.ClientID, connect.Username
	return true
}

// route picks the stream route, on the connection and the CONNECT.
func (p *connPath) route() bool {
	ri, ok := p.snap.routes.Match(route.Input{
		Local:    p.local,
		Remote:   p.rec.remote.Addr(),
		ClientID: p.connect.ClientID,
		Username: p.connect.Username,
		SNI:      p.vars.SSLServerName,
	})
	if !ok {
		return p.refuse(mqtt.ServerUnavailable, refuseNoRoute, "no route for this client")
	}
	p.ri, p.up = ri, p.snap.upstreams[ri]
	p.rec.route = p.snap.stats[ri]
	p.pc = plugin.Conn{
		Connect: p.connect,
		Remote:  p.rec.remote.Addr().Unmap(),
		Route:   p.rec.route.id,
		Log:     p.s.log,
	}
	return true
}

// plugins runs the route's stream plugins of one phase, in order. The
// places they take are given back when the connection ends, or at once on
// a refusal.
func (p *connPath) plugins(phase plugin.Phase) bool {
	list := p.snap.plugins[p.ri].checks
	if phase == plugin.Limit {
		list = p.snap.plugins[p.ri].limits
	}
	if len(list) == 0 {
		return true
	}
	// The plugins get a copy, and one of the variables, so that only a
	// route with plugins pays for what escapes to them; connPath stays on
	// the stack.
	c, vs := p.pc, p.vars
	c.Vars = &vs
	for _, inst := range list {
		release, refused := inst.Admit(&c)
		if refused != nil {
			return p.refuse(refused.Code, refused.Reason, refused.Text)
		}
		p.lc.took(release)
	}
	c.Vars = nil
	p.pc, p.vars = c, vs
	if p.pc.Connect.ClientID != p.connect.ClientID {
		p.rec.id.extra().upstream = p.pc.Connect.ClientID
	}
	return true
}

// maxConnections takes one of stream_proxy.max_connections.
func (p *connPath) maxConnections() bool {
	if !p.s.admitted.Acquire(p.snap.cfg.StreamProxy.MaxConnections) {
		return p.refuse(mqtt.QuotaExceeded, refuseMaxConnections, "max_connections reached")
	}
	p.lc.admitted = true // a flag rather than a release function: no allocation
	return true
}

// uniqueClientID applies stream_proxy.on_duplicate_client_id to the client
// id the broker will see.
func (p *connPath) uniqueClientID() bool {
	s, id := p.s, p.pc.Connect.ClientID
	mode := p.snap.cfg.StreamProxy.OnDuplicateClientID
	if id == "" || mode == "" || mode == config.DuplicateAllow {
		return true
	}
	k := clientKey{p.up.cfg.ID, id}
	older, ok := s.conns.claim(k, p.lc, mode)
	if !ok {
		return p.refuse(mqtt.ClientIdentifierNotValid, refuseDuplicateClientID, "client id already connected")
	}
	if older != nil {
		s.log.Info("closing older connection of a client id that connected again",
			"client_id", id, "upstream", k.upstream, "client", p.rec.remote)
		if p.ec != nil {
			p.takenOver = older // told before the dial, an event of the loop (loopPath.FirstPacket)
		} else {
			s.takeOver(older)
		}
	}
	lc := p.lc
	lc.took(func() { s.conns.release(k, lc) })
	return true
}

// dial orders the upstream's nodes and tries them until one accepts the
// CONNECT (connack.go): each gets the CONNECT as read or rewritten, and the
// next one the same CONNECT when a broker closes, stays silent for
// timeout.connack, or answers "server unavailable" or "busy".
func (p *connPath) dial() bool {
	return p.dialled(p.s.dial(p.up, p.rec.hashKey, p.connectToSend(), p.lc, &p.vars))
}

// connectToSend is the CONNECT for the broker, as read or rewritten, and
// sets the balancer's key.
func (p *connPath) connectToSend() []byte {
	rec := p.rec
	rec.hashKey = p.up.hashKey(&p.vars, rec.remote.Addr())
	if p.pc.Packet != nil {
		return p.pc.Packet
	}
	return (*p.buf)[:p.size]
}

// dialled takes the outcome of dial: a refusal when no node accepted.
func (p *connPath) dialled(try nodeTry) bool {
	rec := p.rec
	// The access record's detail names the nodes that failed, and why.
	tried := strings.Join(try.tried, "; ")
	switch {
	case try.closed:
		return false // closed from outside meanwhile
	case try.node == nil && try.answered:
		p.refuse(mqtt.ServerUnavailable, refuseNoBroker, "no broker accepted the CONNECT")
		rec.detail += " (tried " + tried + ")"
		return false
	case try.node == nil:
		p.refuse(mqtt.ServerUnavailable, refuseNoBroker, "no broker reachable")
		rec.detail += " (tried " + tried + ")"
		return false
	}
	if tried != "" {
		rec.detail = "tried " + tried
	}
	p.broker, p.ack = try.broker, try.ack
	node := try.node
	p.lc.node = node
	node.active.Add(1)
	node.total.Add(1)
	return true
}

// handOver gives the client the broker's CONNACK (and what the broker sent
// after it), and the broker what the client sent after its CONNECT.
func (p *connPath) handOver() bool {
	buf, rec := *p.buf, p.rec
	p.ctl = p.lc.control()
	p.connacked()
	_ = p.conn.SetWriteDeadline(time.Now().Add(p.up.cfg.Timeout.Connect))
	if _, err := p.conn.Write(p.ack); err != nil {
		rec.end, rec.detail = pipe.ClientError, err.Error()
		return false
	}
	_ = p.conn.SetWriteDeadline(time.Time{})
	if rest := buf[p.size:p.n]; len(rest) > 0 {
		_ = p.broker.SetWriteDeadline(time.Now().Add(p.up.cfg.Timeout.Connect))
		if _, err := p.broker.Write(rest); err != nil {
			rec.end, rec.detail = pipe.BrokerError, err.Error()
			return false
		}
		_ = p.broker.SetWriteDeadline(time.Time{})
	}
	_ = p.conn.SetReadDeadline(time.Time{})
	p.ack = nil
	p.dropConnect()
	return true
}

// connacked books the connection as proxied: from the CONNACK on the
// client may act on its connection (connect again, get kicked), so it is
// in the connection table from now, and a close from outside ends it at a
// packet boundary.
func (p *connPath) connacked() {
	rec := p.rec
	rec.up, rec.down = int64(p.n), int64(len(p.ack))
	p.s.stats.Proxied.Add(1)
	p.lc.piping(rec, rec.up)
}

// dropConnect lets go of the CONNECT: its fields that point into buf
// (Password, Properties, Will) are not read past the handover, as the
// parsed CONNECT goes no further than the stages, so buf goes back to the
// pool now rather than for the whole life of the connection.
func (p *connPath) dropConnect() {
	putPrereadBuf(p.buf)
	p.buf, p.connect, p.pc.Connect = nil, nil, nil
}

// pipe moves bytes both ways until either side ends: in an event loop for
// plain TCP, else on two goroutines of the pipe's own, so that this one and
// its stack, grown through the stages above, end now.
func (p *connPath) pipe() bool {
	s, lc := p.s, p.lc
	opts := p.pipeOptions()
	p.looped = true
	client, ws, rc := p.loopClient()
	// MQTT over TLS (rc, not ws) moves into a loop only once it has
	// stayed (tlsMove); the rest at once.
	if (rc == nil || ws) && s.loopPair(p.snap, lc, client, p.broker, opts, ws, rc) {
		return true
	}
	if ws {
		p.countParked()
	}
	var move func(*pipe.Handover) bool
	if rc != nil && !ws {
		move = s.tlsMove(p.snap, lc, client, p.broker, rc, opts) // parked until it has stayed
	}
	opts.Control = p.ctl
	broker, tcp := p.broker, p.tcp
	done := func(res pipe.Result) {
		broker.Close()
		tcp.Close()
		if move != nil {
			s.stats.TLSRecordParked.Add(1) // ended before a loop took it
			s.stats.TLSRecordWaiting.Add(-1)
		}
		lc.pipeEnded(res)
	}
	if p.park != nil && s.parkPipe(p.conn, p.park, broker, opts, done, move) {
		return true
	}
	pipe.Start(p.conn, broker, opts, done)
	return true
}

// pipeOptions are the pair's limits, either data path.
func (p *connPath) pipeOptions() pipe.Options {
	return pipe.Options{
		Idle:             idleLimit(p.up, p.keepAlive),
		WriteTimeout:     writeTimeout(p.up, p.keepAlive),
		HalfCloseTimeout: halfCloseTimeout,
		Meter:            &p.lc.entry.meter, // adding to the route's and node's totals
		Level:            p.rec.level,
		MaxPacketSize:    p.snap.cfg.StreamProxy.MaxPacketSize,
	}
}

// refuse answers the CONNECT with a CONNACK that says why, after giving
// back what earlier stages took, so that a client lingering over its
// CONNACK holds no limit.
func (p *connPath) refuse(code mqtt.ReasonCode, reason, text string) bool {
	p.lc.releaseAll()
	p.answer(p.s.refusal(p.rec, code, reason, text))
	return false
}

// answer sends a refusing CONNACK (nil: none) to the client, on its Go
// connection or through its event loop.
func (p *connPath) answer(pkt []byte) {
	switch {
	case pkt == nil:
	case p.ec != nil:
		p.refusal = pkt // sent when the stages are done with the record (loopPath.stop)
	default:
		writeRefusal(p.conn, pkt)
	}
}

// piped records what the pipe carried and why it ended.
func (r *record) piped(res pipe.Result) {
	r.up += res.Up
	r.down += res.Down
	r.end = res.End
	if res.End == pipe.ClientError && res.Err != nil {
		if e := webEnd(res.Err); e != "" { // its errors.As allocates: only when it may say something
			r.end = e
		}
	}
	if res.Err != nil && !errors.Is(res.Err, net.ErrClosed) && !errors.Is(res.Err, os.ErrDeadlineExceeded) {
		if r.detail != "" { // the nodes a failover passed over
			r.detail += "; then "
		}
		r.detail += res.Err.Error()
	}
}

// preread reads until buf holds one whole packet. It returns the buffer, how
// many bytes it holds, and the CONNECT's size.
func (s *Server) preread(c net.Conn, snap *snapshot, have []byte) (buf *[]byte, n, size int, err error) {
	limit := snap.cfg.StreamProxy.MaxConnectSize
	if err := c.SetReadDeadline(time.Now().Add(snap.cfg.StreamProxy.ConnectTimeout)); err != nil {
		return nil, 0, 0, err
	}
	buf = prereadPool.Get().(*[]byte)
	n = copy(*buf, have)
	for skip := n > 0; ; skip = false {
		var m int
		var rerr error
		if !skip { // first look at what was read already
			m, rerr = c.Read((*buf)[n:])
		}
		n += m
		if n > 0 {
			total, ferr := connectFrame((*buf)[:n], limit)
			switch {
			case ferr != nil:
				return buf, n, 0, ferr
			case total > 0 && n >= total:
				return buf, n, total, nil
			case total > len(*buf):
				bigger := make([]byte, total)
				copy(bigger, (*buf)[:n])
				putPrereadBuf(buf)
				buf = &bigger
			}
		}
		if rerr != nil {
			return buf, n, 0, cutShort(rerr, n)
		}
	}
}

// cutShort is the error of a CONNECT's read that failed with err after n
// bytes: a client that closes inside its CONNECT sent a malformed one.
func cutShort(err error, n int) error {
	if errors.Is(err, io.EOF) && n > 0 {
		return &mqtt.ProtocolError{Kind: mqtt.KindMalformed, Reason: "connection closed inside the CONNECT"}
	}
	return err
}

// connectFrame is the size of the CONNECT b starts with, once b holds
// enough to know it (0 until then), or why b is no CONNECT to read on.
func connectFrame(b []byte, limit int) (int, error) {
	if b[0] != 0x10 {
		// [MQTT-3.1.0-1] the first packet from a client must be a
		// CONNECT: no need to read on.
		return 0, &mqtt.ProtocolError{Kind: mqtt.KindNotMQTT, Rule: "MQTT-3.1.0-1", Reason: "first packet is not a CONNECT"}
	}
	total, err := mqtt.FrameLen(b)
	switch {
	case errors.Is(err, mqtt.ErrIncomplete):
		return 0, nil
	case err != nil:
		return 0, err
	case total > limit:
		return 0, errTooLarge{size: total, limit: limit}
	}
	return total, nil
}

// putPrereadBuf returns a preread buffer to the pool at its full length:
// the loop path holds its CONNECT as a slice of what was read, and a
// buffer pooled short made a later preread read into nothing, for ever.
// The caller no longer uses b.
func putPrereadBuf(b *[]byte) {
	if b != nil && cap(*b) == prereadBufSize {
		*b = (*b)[:prereadBufSize]
		prereadPool.Put(b)
	}
}

type errTooLarge struct{ size, limit int }

func (e errTooLarge) Error() string {
	return fmt.Sprintf("CONNECT of %d bytes exceeds max_connect_size %d", e.size, e.limit)
}

// failPreread ends a connection whose CONNECT could not be read or parsed:
// silently for anything that is not a well-formed CONNECT, with a CONNACK
// where the spec asks the server to answer.
func (s *Server) failPreread(c net.Conn, rec *record, err error) {
	if pkt := s.prereadFailed(rec, err); pkt != nil {
		writeRefusal(c, pkt)
	}
}

// prereadFailed records why the CONNECT could not be read or parsed and
// returns the refusing CONNACK to send, if the spec asks for one.
func (s *Server) prereadFailed(rec *record, err error) []byte {
	var perr *mqtt.ProtocolError
	var tooLarge errTooLarge
	switch {
	case errors.As(err, &perr):
		rec.errorKind = string(perr.Kind)
		rec.level = perr.Level
		rec.detail = err.Error()
		s.stats.parseError(perr.Kind)
		if perr.Code != 0 {
			return s.refusal(rec, perr.Code, refuseBadConnect, perr.Reason)
		}
		rec.end = EndBadConnect
	case errors.As(err, &tooLarge):
		rec.errorKind, rec.detail, rec.end = "too_large", err.Error(), EndBadConnect
		s.stats.parseError("too_large")
	case errors.Is(err, os.ErrDeadlineExceeded):
		rec.errorKind, rec.end = "timeout", EndConnectTimeout
		s.stats.parseError("timeout")
	case errors.Is(err, io.EOF):
		rec.end = pipe.ClientClosed
	case webEnd(err) != "":
		rec.end, rec.detail = webEnd(err), err.Error()
	default:
		rec.end, rec.detail = pipe.ClientError, err.Error()
	}
	s.log.Debug("connection closed before CONNECT was read", "client", rec.remote, "end", rec.end, "err", err)
	return nil
}

// refusal records the refusal of a well-formed CONNECT and returns the
// CONNACK carrying code, so that the client and its logs say why instead
// of "connection reset".
func (s *Server) refusal(rec *record, code mqtt.ReasonCode, reason, text string) []byte {
	rec.end, rec.detail, rec.status = EndRefused, text, refusalStatus(reason)
	s.stats.refused(reason)
	// A client of an unknown level gets the 3.1.1 form [MQTT-3.1.2-2].
	level := rec.level
	if level != mqtt.Level5 {
		level = mqtt.Level311
	}
	return mqtt.AppendConnack(make([]byte, 0, 64), level, code, text)
}

// writeRefusal sends a refusing CONNACK on c, then closes its side.
func writeRefusal(c net.Conn, pkt []byte) {
	_ = c.SetDeadline(time.Now().Add(refuseLinger))
	if _, err := c.Write(pkt); err != nil {
		return
	}
	// Closing with unread input would reset the connection and could
	// destroy the CONNACK in flight; send FIN and let the client close.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite() // a TLS connection sends close_notify
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// idleLimit is the upstream's read timeout or, unset, 1.5 × the client's
// keepalive as brokers apply it [MQTT-3.1.2-24]; keepalive 0 means none.
func idleLimit(up *upstream, keepAlive uint16) time.Duration {
	if up.cfg.Timeout.Read > 0 {
		return up.cfg.Timeout.Read
	}
	return time.Duration(keepAlive) * 1500 * time.Millisecond
}

func writeTimeout(up *upstream, keepAlive uint16) time.Duration {
	if up.cfg.Timeout.Send > 0 {
		return up.cfg.Timeout.Send
	}
	return idleLimit(up, keepAlive)
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}

// logRecord writes r to the access log; node is the one it was proxied
// to, or nil.
func (s *Server) logRecord(r *record, node *nodeState) {
	if s.access == nil {
		return
	}
	// On the stack: Log copies it.
	ar := accesslog.Record{
		Listener:      r.listener.addr.get(),
		Client:        r.remote,
		ClientID:      r.clientID,
		Username:      r.username,
		ProtocolLevel: int(r.level),
		BytesUp:       r.up,
		BytesDown:     r.down,
		Duration:      time.Duration(s.since() - r.start),
		End:           string(r.end),
		Detail:        r.detail,
		ErrorKind:     r.errorKind,
		Server:        r.id.local,
		Upstream:      node.upstream(),
		Status:        nginxStatus(r, node),
	}
	if r.route != nil {
		ar.Route = r.route.id
	}
	if node != nil {
		ar.Node = node.addr
	}
	r.id.fill(&ar)
	if r.websocket {
		ar.Transport = "ws"
		if r.id.tls != nil {
			ar.Transport = "wss"
		}
	}
	if r.forwarded {
		ar.ForwardedBy, ar.ProxyProtocolPeer = r.id.peer(), netip.AddrPort{}
	}
	s.access.Log(&ar)
}
