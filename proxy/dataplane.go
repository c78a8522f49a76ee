package proxy

import (
	"net"
	"sync"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/mqttws"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/pipe/epoll"
	"github.com/mqgate/mqgate/tlsrecord"
)

// eventLoops are the server's epoll loops (stream_proxy.data_path: epoll),
// one per core, started when the first connection needs them.
type eventLoops struct {
	mu       sync.Mutex
	group    *epoll.Group
	notifier *epoll.Notifier // readiness of parked TLS connections (pipe.Park)
	settler  *pipe.Settler   // hands parked TLS pairs that stayed to the loops (tlsMove)
	closed   bool
}

// tlsLoopAfter is how old a parked TLS pair whose records tlsrecord
// carries must be before it is handed to an event loop (tlsMove): longer
// than a connect cycle (CONNECT, CONNACK, DISCONNECT), short enough that
// few pairs of a ramp wait parked at once: at a second, a second's
// connections waited together and their memory stayed in the process
// (docs/data-path.md, "A quarter of a second"). Not a setting: what the
// loop saves per message or idle pair does not depend on when it moves.
const tlsLoopAfter = 250 * time.Millisecond

// settle is the Settler of parked TLS pairs, made with the first: it
// offers a pair once it is after old (tlsLoopAfter).
func (e *eventLoops) settle(after time.Duration) *pipe.Settler {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.settler == nil && !e.closed {
		e.settler = pipe.NewSettler(after)
	}
	return e.settler
}

// ready is the notifier of parked connections, started with the first.
func (e *eventLoops) ready() (*epoll.Notifier, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.notifier == nil && !e.closed {
		n, err := epoll.NewNotifier()
		if err != nil {
			return nil, err
		}
		e.notifier = n
	}
	return e.notifier, nil
}

func (e *eventLoops) get() (*epoll.Group, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.group == nil && !e.closed {
		g, err := epoll.NewGroup(epoll.Cores())
		if err != nil {
			return nil, err
		}
		e.group = g
	}
	return e.group, nil
}

// close stops the loops; the server has no connection left in them.
func (e *eventLoops) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	if e.settler != nil {
		e.settler.Close()
		e.settler = nil
	}
	if e.group != nil {
		e.group.Close(EndShutdown)
		e.group = nil
	}
	if e.notifier != nil {
		e.notifier.Close()
		e.notifier = nil
	}
}

// parkPipe pipes a TLS client whose reads can be parked, and its broker,
// without goroutines while they are idle (pipe.Park). It reports false when
// the pair stays with the caller, for pipe.Start: the broker side is not
// plain TCP (an upstream with TLS), or the notifier is out of reach. With
// move (tlsMove) the pair is offered to it once it has stayed
// (pipe.Settler.Park).
func (s *Server) parkPipe(client net.Conn, pc *pipe.ParkConn, broker net.Conn, opts pipe.Options, done func(pipe.Result), move func(*pipe.Handover) bool) bool {
	if _, ok := broker.(*net.TCPConn); !ok {
		return false
	}
	n, err := s.loops.ready()
	if n == nil {
		if err != nil {
			s.log.Warn("readiness notifier unavailable; piping with goroutines", "err", err)
		}
		return false
	}
	if st := s.settler(move); st != nil {
		err = st.Park(client, pc, broker, nil, n, opts, done, move)
	} else {
		err = pipe.Park(client, pc, broker, nil, n, opts, done)
	}
	if err != nil {
		s.log.Warn("parking failed; piping with goroutines", "err", err)
		return false
	}
	return true
}

// settler is the loops' Settler for a pair with a move, else nil.
func (s *Server) settler(move func(*pipe.Handover) bool) *pipe.Settler {
	if move == nil {
		return nil
	}
	return s.loops.settle(tlsLoopAfter)
}

// loopPair hands a proxied pair to an event loop when the snapshot asks for
// one and both sides are plain TCP; lc.pipeEnded then runs when it ends. It
// reports false when the pair stays with the caller, for pipe.Run: another
// data path is configured, a side is not plain TCP (TLS, WebSocket), the
// connection was closed from outside meanwhile, or the loops are out of
// reach (out of descriptors for the handover, say). With ws, client is the
// TCP connection under a plain WebSocket whose frames the loop takes over.
// A TLS or wss client whose records tlsrecord carries goes later, once it
// has stayed (tlsMove).
func (s *Server) loopPair(snap *snapshot, lc *liveConn, client, broker net.Conn, opts pipe.Options, ws bool) bool {
	if snap.cfg.StreamProxy.DataPath != config.DataPathEpoll {
		return false
	}
	ct, ok := client.(*net.TCPConn)
	bt, ok2 := broker.(*net.TCPConn)
	if !ok || !ok2 {
		return false
	}
	g, err := s.loops.get()
	if g == nil {
		if err != nil {
			s.log.Warn("event loops unavailable; piping with goroutines", "err", err)
		}
		return false
	}
	// Under lc.mu, so that a close from outside reaches the pair either as
	// Go connections or in its loop.
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.reason != "" {
		return false
	}
	add := g.AddBy
	if ws {
		add = g.AddWebSocket // the loop frames (pipe/epoll/ws.go)
	}
	conn, err := add(loopAffinity(snap), ct, bt, opts, lc.pipeEnded)
	if err != nil {
		s.log.Warn("event loop handover failed; piping with goroutines", "err", err)
		return false
	}
	if ws {
		s.stats.WebSocketLooped.Add(1)
	}
	lc.gp, lc.looped = nil, conn
	return true
}

// tlsMove is how a TLS pair whose records tlsrecord carries goes into an
// event loop (epoll.Group.MoveTLS, the loop opening and sealing its
// records): parked first, and handed over once it has stayed
// (pipe.Settler: older than tlsLoopAfter, both directions
// parked), so that a short session (CONNECT, CONNACK, DISCONNECT) does not
// pay for the move, 5-20 % of its proxy CPU when pairs moved at the
// CONNACK. client is the TCP connection under rc. It is nil when the pair
// stays parked for good: another data path, a broker side that is not
// plain TCP, or no loops. The move is refused while the connection closes
// (lc.mu, as loopPair) and when rc holds some of the client's stream
// (tlsrecord.Conn.Detach); then the pair is offered again at its next
// park. TLSRecordLooped counts a moved pair, TLSRecordParked one that ends
// parked.
//
// With wc, the pair is a wss one (epoll.Group.MoveTLS with ws: the loop
// takes apart the frames inside the records too): wc, over rc, must also
// be at a frame boundary with nothing read ahead (mqttws.Conn.Detachable)
// when it is offered. A moved wss pair counts in WebSocketLooped too, one
// that ends parked in WebSocketParked, one pair in each family, so that
// each family's looped and parked counts add up to its pairs. Short wss
// sessions paid the move as TLS ones did: dataplane-meter -transport wss
// -n 100 -connects 3000 -msgs 0, about +15 % proxy CPU per connect when
// they moved at the CONNACK.
func (s *Server) tlsMove(snap *snapshot, lc *liveConn, client, broker net.Conn, rc *tlsrecord.Conn, wc *mqttws.Conn, opts pipe.Options) func(*pipe.Handover) bool {
	if snap.cfg.StreamProxy.DataPath != config.DataPathEpoll {
		return nil
	}
	ct, ok := client.(*net.TCPConn)
	bt, ok2 := broker.(*net.TCPConn)
	if !ok || !ok2 {
		return nil
	}
	g, err := s.loops.get()
	if g == nil {
		if err != nil {
			s.log.Warn("event loops unavailable; TLS pairs stay parked", "err", err)
		}
		return nil
	}
	aff := loopAffinity(snap)
	s.stats.TLSRecordWaiting.Add(1) // until it moves or ends (connPath.pipe's done)
	return func(h *pipe.Handover) bool {
		lc.mu.Lock()
		defer lc.mu.Unlock()
		if lc.reason != "" || !h.Take() {
			return false
		}
		if wc != nil {
			if under, ok := wc.Detachable(); !ok || under != net.Conn(rc) {
				return false // a frame under way or read ahead: offered again at the next park
			}
		}
		rec, ok := rc.Detach()
		if !ok {
			return false // records read ahead or cut short: offered again at the next park
		}
		conn, err := g.MoveTLS(aff, ct, bt, rec, wc != nil, opts, h.Idle(), lc.pipeEnded)
		if err != nil {
			rc.Reattach(rec)
			s.log.Warn("event loop handover failed; the TLS pair stays parked", "err", err)
			return false
		}
		s.stats.TLSRecordLooped.Add(1)
		if wc != nil {
			s.stats.WebSocketLooped.Add(1)
		}
		s.stats.TLSRecordWaiting.Add(-1)
		lc.gp, lc.looped = nil, conn
		return true
	}
}
