package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
)

// Why a connection was closed on a change of its node's health.
const (
	EndNodeDown  pipe.End = "node_down"  // checks.on_marked_down: close
	EndMovedBack pipe.End = "moved_back" // checks.on_marked_up: move_back
)

// closeCodes is the MQTT 5.0 DISCONNECT reason code each close mqgate
// decides sends the client (the README's table of closes). The idle limit
// (0x8D) and max_packet_size (0x95) are the pipe's own (pipe.Goodbye).
var closeCodes = map[pipe.End]mqtt.ReasonCode{
	EndClosedByAdmin: mqtt.AdministrativeAction, // 0x98
	EndTakenOver:     mqtt.SessionTakenOver,     // 0x8E, as a broker does [MQTT-3.1.4-3]
	EndDrained:       mqtt.UseAnotherServer,     // 0x9C: its node is gone; mqgate sends it to another
	EndNodeDown:      mqtt.UseAnotherServer,     // 0x9C
	EndMovedBack:     mqtt.UseAnotherServer,     // 0x9C
	EndRebalanced:    mqtt.UseAnotherServer,     // 0x9C
	EndRouteRemoved:  mqtt.ServerMoved,          // 0x9D: its route is gone for good
	EndShutdown:      mqtt.ServerShuttingDown,   // 0x8B
}

// goodbye is what a close for reason sends a client of the given level
// before its connection is closed at a packet boundary: a 5.0 DISCONNECT
// with the reason's code (and, for 0x9C and 0x9D, the configured
// stream_proxy.server_reference); nothing before 5.0, where only clients
// send DISCONNECT.
func (s *Server) goodbye(reason pipe.End, level byte) []byte {
	if level != mqtt.Level5 {
		return nil
	}
	code, ok := closeCodes[reason]
	if !ok {
		code = mqtt.AdministrativeAction
	}
	var ref string
	if code == mqtt.UseAnotherServer || code == mqtt.ServerMoved {
		ref = s.snap.Load().cfg.StreamProxy.ServerReference
	}
	return mqtt.AppendServerDisconnect(nil, code, ref)
}

// nodeChanged acts on a change of a node's health as its upstream's checks
// ask: on_marked_down closes the node's connections, on_marked_up
// move_back moves back the connections that belong on it. The health
// checker calls it in a goroutine of its own.
func (s *Server) nodeChanged(st health.Status) {
	up, node := s.snap.Load().node(st.Upstream, st.Addr)
	if up == nil || up.cfg.Checks == nil || up.health[node].Healthy() != st.Healthy {
		return // gone, unchecked, or changed again since
	}
	switch checks := up.cfg.Checks; {
	case !st.Healthy && checks.OnMarkedDown == config.MarkedDownClose:
		victims := s.matching(ConnFilter{Upstream: st.Upstream, Node: st.Addr})
		for _, lc := range victims {
			lc.close(EndNodeDown)
		}
		if len(victims) > 0 {
			s.log.Info("closed the connections of an unhealthy node", "upstream", st.Upstream, "node", st.Addr, "count", len(victims))
		}
	case st.Healthy && !st.OnTrial && checks.OnMarkedUp == config.MarkedUpMoveBack:
		// A node on trial has not proven itself yet: moving clients
		// back to it could close working connections for nothing.
		// A paced rebalance at rebalance.rate (or the upstream's own
		// checks.move_back_rate): the Admin API and /status.json see
		// it and can pause or cancel it.
		rate := s.snap.Load().cfg.RebalanceSettings().Rate
		if checks.MoveBackRate > 0 {
			rate = checks.MoveBackRate
		}
		_, _ = s.rebalance(st.Upstream, ReasonMoveBack, rate, EndMovedBack)
	}
}

// node finds the upstream with id and the index of its node addr.
func (snap *snapshot) node(id, addr string) (*upstream, int) {
	for _, up := range snap.upstreams {
		if up.cfg.ID != id {
			continue
		}
		for i, a := range up.addrs {
			if a == addr {
				return up, i
			}
		}
	}
	return nil, 0
}

// takeOverWait bounds how long a connection that takes over a client id
// (on_duplicate_client_id: keep_newest) waits for the older connection to
// end before its CONNECT goes to the broker.
const takeOverWait = 250 * time.Millisecond

// takeOver closes older, the connection of a client id that connected
// again, and waits (at most takeOverWait) until it has ended. The wait is
// for the older client's DISCONNECT 0x8E: the newer CONNECT makes the
// broker take the session over, and a broker that drops the older
// connection before mqgate's close reached its pipe would leave the older
// client a bare close (a race a loaded machine loses). A client that
// reads its 0x8E and closes ends the wait at once; a half-open ghost,
// which keep_newest is for, costs the newer client takeOverWait.
func (s *Server) takeOver(older *liveConn) {
	ended := s.ended.watch(older)
	defer s.ended.unwatch(older)
	older.mu.Lock()
	e := &older.entry
	piping := e.piping && !e.settled // before piping it is closed at once, with nothing to say
	older.mu.Unlock()
	older.close(EndTakenOver)
	if !piping {
		return
	}
	t := time.NewTimer(takeOverWait)
	defer t.Stop()
	select {
	case <-ended:
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// endWaits tells those who wait for a connection that it ended. The
// connection path pays one atomic load per end while nobody waits.
type endWaits struct {
	n  atomic.Int32
	mu sync.Mutex
	m  map[*liveConn]chan struct{}
}

// watch returns a channel closed when lc ends (signal), from now on.
func (w *endWaits) watch(lc *liveConn) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = make(map[*liveConn]chan struct{})
	}
	ch, ok := w.m[lc]
	if !ok {
		ch = make(chan struct{})
		w.m[lc] = ch
		w.n.Add(1)
	}
	return ch
}

func (w *endWaits) unwatch(lc *liveConn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.m[lc]; ok {
		delete(w.m, lc)
		w.n.Add(-1)
	}
}

// signal is called when lc has ended.
func (w *endWaits) signal(lc *liveConn) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.m[lc]; ok {
		close(ch)
		delete(w.m, lc)
		w.n.Add(-1)
	}
}
