package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/pipe/epoll"
)

// A plain TCP listener on the epoll data path is served by the event loops
// from the accept on (epoll.Group.Listen): accept4, the CONNECT's read, the
// stages (connPath.policies, the same methods as on a goroutine) and a
// non-blocking connect to the broker run on a loop's thread, and the pair
// stays in that loop, so such a connection never touches Go's network
// poller nor has a goroutine. What the loops do not serve leaves them for
// the goroutine path (connPath): a listener a reload made TLS, PROXY or
// WebSocket, or data_path goroutines (the whole connection), and an
// upstream whose nodes need TLS, a PROXY header, a source address or a
// host name looked up (from the dial on).
//
// A plain WebSocket listener (websocket set, no TLS, no PROXY header) is the
// loops' too: the loop reads the HTTP request head as the first packet
// (sniffFrame), checks the upgrade with UpgradeConn's code
// (mqttws.ParseUpgrade), writes the 101 and reads the CONNECT out of the
// client's frames (epoll.Conn.Upgrade), so a ws connect runs as a TCP one
// does. Any other request (the HTTP routes, the dashboard, health, a
// refused upgrade) leaves the loop for net/http with the bytes read
// (toWeb), as sniff hands it over on a goroutine.

// loopListens reports whether the loops accept on l: the epoll data path,
// and a listener with nothing before the CONNECT but, for a WebSocket
// listener, the upgrade.
func loopListens(snap *snapshot, l *listener) bool {
	lcfg := snap.listenerConfig(l.cfg.Addr, l.cfg)
	return snap.cfg.StreamProxy.DataPath == config.DataPathEpoll &&
		!lcfg.TLS && !lcfg.ProxyProtocol && (lcfg.WebSocket != nil || !lcfg.HTTP)
}

// loopAffinity is stream_proxy.loop_affinity as the loops take it; a
// reload applies it to the connections accepted from then on.
func loopAffinity(snap *snapshot) epoll.Affinity {
	if snap.cfg.StreamProxy.LoopAffinity == config.LoopAffinityConnection {
		return epoll.ByConnection
	}
	return epoll.ByBroker
}

// loopAcceptor takes the connections the loops accept on one listener.
type loopAcceptor struct {
	s *Server
	l *listener
	// paths are the loopPaths of connections piped (Dialled gives them
	// back): the largest allocation of a connect, 712 bytes, made once per
	// loop's worth of connects in flight rather than per connect.
	paths sync.Pool
}

// loopPath is a connection an event loop accepted, on its way through the
// stages. It lives until the pair is piped or the connection ends.
type loopPath struct {
	connPath
	pooled  *[]byte // the preread pool's buffer the loop reads the CONNECT into (connPath.buf, once read)
	walk    nodeWalk
	node    int    // the node being dialled
	connect []byte // the CONNECT for the broker
	acc     *loopAcceptor
	// sniffing: a WebSocket listener's connection whose first bytes are
	// still to tell MQTT from HTTP (sniffFrame); proto: the subprotocol
	// of a client the loop upgraded.
	sniffing bool
	httpOnly bool
	proto    string
}

func (a *loopAcceptor) Accept(c *epoll.Conn, remote, local netip.AddrPort) (epoll.Session, []byte, epoll.First) {
	s, l := a.s, a.l
	s.stats.Accepted.Add(1)
	l.counts.accepted.Add(1)
	s.handlers.Add(1)
	snap := s.snap.Load()
	if !loopListens(snap, l) {
		// A reload changed the listener or the data path: the goroutine
		// path serves it.
		tc, err := c.Detach()
		if err != nil {
			s.log.Warn("handing an accepted connection to the goroutine path failed", "err", err)
			s.handlers.Done()
			return nil, nil, epoll.First{}
		}
		go s.serveConn(l, tc)
		return nil, nil, epoll.First{}
	}
	lp, _ := a.paths.Get().(*loopPath)
	if lp == nil {
		lp = &loopPath{}
	}
	lp.acc = a
	p := &lp.connPath
	*p = connPath{s: s, l: l, snap: snap, local: local, ec: c}
	p.lc = &liveConn{srv: s, looped: c, rec: record{start: s.since(), listener: l.counts, remote: remote}}
	p.rec = &p.lc.rec
	if !s.track(p.lc) {
		s.handlers.Done()
		return nil, nil, epoll.First{}
	}
	s.stats.Active.Add(1)
	l.counts.active.Add(1)
	if !p.admit() {
		// Shed on arrival: nothing older made room.
		p.lc.rec.end = EndShed
		go p.endLooped()
		return nil, nil, epoll.First{}
	}
	// What open does for a plain listener.
	p.rec.id.local = local
	p.vars.RemoteAddr = remote.Addr().Unmap().String()
	lp.pooled = prereadPool.Get().(*[]byte)
	first := epoll.First{Frame: snap.connectFrame, Timeout: snap.cfg.StreamProxy.ConnectTimeout}
	if lcfg := snap.listenerConfig(l.cfg.Addr, l.cfg); lcfg.WebSocket != nil {
		lp.sniffing, lp.httpOnly = true, lcfg.HTTPOnly
		first.Frame = lp.sniffFrame
	}
	return lp, (*lp.pooled)[:0], first
}

// sniffFrame is the first packet of a WebSocket listener's connection, as
// sniff tells them apart by the first byte: a CONNECT, or an HTTP request
// head (up to mqttws.MaxHead: a longer one is all read and net/http's).
func (lp *loopPath) sniffFrame(b []byte) (int, error) {
	if !isHTTP(b[0]) {
		if !lp.httpOnly {
			return lp.snap.connectFrame(b)
		}
		return len(b), nil // no request line: net/http answers it at once, as after sniff
	}
	if n := mqttws.HeadSize(b); n > 0 {
		return n, nil
	}
	if len(b) >= mqttws.MaxHead {
		return len(b), nil
	}
	return 0, nil
}

// web takes the HTTP request head b[:size] (and what came after it): an
// MQTT WebSocket upgrade is answered by the loop, which reads the CONNECT
// from its frames next; anything else goes to net/http (toWeb).
func (lp *loopPath) web(c *epoll.Conn, b []byte, size int) {
	p := &lp.connPath
	lcfg := p.snap.listenerConfig(p.l.cfg.Addr, p.l.cfg)
	u, ok := mqttws.ParseUpgrade(b[:size], lcfg.WebSocket.Path, lcfg.WebSocket.AllowsOrigin)
	if !ok {
		lp.toWeb(b, lcfg)
		return
	}
	p.s.web.stats.count("upgraded")
	p.rec.websocket = true
	addr, fok := u.Fwd.Addr()
	p.rec.trustForwarded(addr, fok, lcfg, &p.vars)
	lp.proto = u.Protocol
	// Until the CONNECT is in, a failure is the client's (a 101 not written).
	p.rec.end = pipe.ClientError
	c.Upgrade(u.Answer, b, size, epoll.First{Frame: p.snap.connectFrame, Timeout: p.snap.cfg.StreamProxy.ConnectTimeout})
}

// toWeb hands an HTTP connection, b read of it, to the web server on a
// goroutine of its own, as sniff does.
func (lp *loopPath) toWeb(b []byte, lcfg config.Listener) {
	p := &lp.connPath
	*lp.pooled = b
	p.buf = lp.pooled
	first := append([]byte(nil), b...)
	tc, _, ok := lp.leaveLoop(false)
	if !ok {
		return
	}
	wc := &webConn{Conn: tc, tcp: tc, first: first, request: first, listener: lcfg, remote: p.rec.remote, id: p.rec.id.clone(), vars: p.vars, srv: p.s}
	go func() {
		p.handed = p.s.handOver(wc)
		p.finish()
	}()
}

// AcceptFailed sheds the oldest unfinished connections when the process is
// out of descriptors, as the goroutine path's accept loop does.
func (a *loopAcceptor) AcceptFailed(err error) time.Duration {
	if outOfDescriptors(err) && a.s.gate.ShedOldest(emfileShed) > 0 {
		return time.Millisecond
	}
	a.s.log.Warn("accept failed", "addr", a.l.cfg.Addr, "err", err, "retry_in", acceptRetry)
	return acceptRetry
}

// acceptRetry is how long a loop stops accepting after an accept failed
// with nothing to shed.
const acceptRetry = 50 * time.Millisecond

// FirstPacket runs the stages up to the dial on the CONNECT, then dials the
// first node.
func (lp *loopPath) FirstPacket(c *epoll.Conn, b []byte, size int) {
	p := &lp.connPath
	if lp.sniffing {
		lp.sniffing = false
		if isHTTP(b[0]) || lp.httpOnly {
			lp.web(c, b, size)
			return
		}
	}
	*lp.pooled = b
	p.buf, p.n, p.size = lp.pooled, len(b), size
	if !p.connectRead(nil) || !p.policies() {
		lp.stop()
		return
	}
	lp.connect = p.connectToSend()
	if p.up.loopAddrs == nil {
		lp.detach()
		return
	}
	lp.walk.start(p.s, p.up, p.rec.hashKey, p.lc)
	if older := p.takenOver; older != nil {
		// The broker sees this CONNECT only after the older connection
		// was told it is taken over, as on a goroutine (where the close
		// is quicker than the dial): else the broker may cut the older
		// one first, without a word to its client.
		p.takenOver = nil
		if older.closeThen(EndTakenOver, func() { c.Run(lp.dialNext) }) {
			return
		}
		older.close(EndTakenOver)
	}
	lp.dialNext()
}

// FirstFailed ends a connection whose CONNECT could not be read, as
// readConnect does.
func (lp *loopPath) FirstFailed(c *epoll.Conn, b []byte, err error) {
	p := &lp.connPath
	*lp.pooled = b
	p.buf, p.n = lp.pooled, len(b)
	if !lp.sniffing || len(b) == 0 || !isHTTP(b[0]) {
		err = cutShort(err, len(b)) // else an HTTP request cut short: sniff's end
	}
	p.connectRead(err)
	lp.stop()
}

// stop ends a connection a stage ended, with the refusal it was given,
// if any. From here on only Ended touches the record.
func (lp *loopPath) stop() {
	if pkt := lp.refusal; pkt != nil {
		lp.refusal = nil
		lp.ec.Refuse(pkt, refuseLinger)
		return
	}
	lp.ec.End(lp.rec.end, nil)
}

// leaveLoop takes the client's socket out of its loop for a goroutine
// (its WebSocket frames' state too, as resume, when ws), so that from now
// on the connection table's close reaches it there. When that fails the
// connection ends as a client error, and ok is false.
func (lp *loopPath) leaveLoop(ws bool) (tc *net.TCPConn, resume []byte, ok bool) {
	p := &lp.connPath
	lc := p.lc
	lc.mu.Lock()
	var err error
	if ws {
		tc, resume, err = p.ec.DetachWebSocket()
	} else {
		tc, err = p.ec.Detach()
	}
	if err == nil {
		lc.looped, lc.gp = nil, &goPair{client: tc}
	}
	lc.mu.Unlock()
	if err != nil {
		p.rec.end, p.rec.detail = pipe.ClientError, err.Error()
		go p.endLooped()
		return nil, nil, false
	}
	p.ec, p.tcp, p.conn = nil, tc, tc
	return tc, resume, true
}

// detach hands the connection, its CONNECT read and its stages passed, to
// a goroutine for the dial the loops cannot do.
func (lp *loopPath) detach() {
	p := &lp.connPath
	tc, resume, ok := lp.leaveLoop(lp.proto != "")
	if !ok {
		return
	}
	if lp.proto != "" {
		// The WebSocket goes on as sniff makes it: framed by mqttws.Conn
		// over a ParkConn, resumed where the loop's frames stopped.
		pc := pipe.NewParkConn(tc)
		pc.StartBusy()
		p.conn, p.park = mqttws.NewConn(pc, lp.proto, resume), pc
	}
	go func() {
		defer p.finish()
		_ = p.dial() && p.handOver() && p.pipe()
	}()
}

// dialNext dials the next node the walk offers, or refuses the client
// when none is left.
func (lp *loopPath) dialNext() {
	p := &lp.connPath
	i, ok := lp.walk.next()
	if !ok {
		p.dialled(lp.walk.exhausted()) // refuses, or the close from outside ends it
		lp.stop()
		return
	}
	lp.node = i
	up := p.up
	p.ec.Dial(epoll.Dial{
		Addr:          up.loopAddrs[i],
		Send:          lp.connect,
		Timeout:       up.cfg.Timeout.Connect,
		AnswerTimeout: up.cfg.Timeout.Connack,
		Frame:         connackFrame,
		Affinity:      loopAffinity(p.snap),
	})
}

// Dialled takes the broker's answer as dial takes awaitConnack's: the pair
// is piped, or the next node gets the CONNECT.
func (lp *loopPath) Dialled(c *epoll.Conn, ack []byte, connected time.Duration, err error) {
	p := &lp.connPath
	var ref string
	reached := true
	if err == nil {
		p.s.stats.observeDial(connected)
		ack, ref, err = judgeConnack(ack, p.rec.level)
	} else {
		var de *epoll.DialError
		errors.As(err, &de)
		switch de.Op {
		case "dial":
			err, reached = de.Err, false
		case "write":
			err = fmt.Errorf("sending the CONNECT: %w", de.Err)
		default:
			err = de.Err // connackFrame's own words
			var se *os.SyscallError
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &se) {
				err = connackReadError(p.up, err)
			}
		}
	}
	if err != nil {
		lp.walk.failed(lp.node, reached, ref, err)
		lp.dialNext()
		return
	}
	if !p.dialled(lp.walk.accepted(lp.node, nil, nil, ack)) {
		lp.stop()
		return
	}
	p.ack = ack
	p.connacked()
	rest := (*p.buf)[p.size:p.n]
	lc := p.lc
	p.looped = true
	if lp.proto != "" {
		p.s.stats.WebSocketLooped.Add(1)
	}
	c.Pipe(ack, rest, p.pipeOptions(), lc.pipeEnded)
	p.ack = nil
	// rest was written or copied into the pair's backlog.
	p.dropConnect()
	// The pair is the loop's and lc's now: nothing refers to lp (the
	// Conn let go of its Session in Pipe), which serves the next connect.
	a := lp.acc
	*lp = loopPath{}
	a.paths.Put(lp)
}

// Ended closes the books on a connection that ended before its pipe.
func (lp *loopPath) Ended(pipe.Result) { lp.endLooped() }

// endLooped is finish for a connection the loops accepted and ended (its
// descriptors are closed already).
func (p *connPath) endLooped() {
	putPrereadBuf(p.buf)
	p.buf = nil
	p.ticket.Done()
	p.lc.end()
}
