package proxy

import (
	"sync"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/pipe"
)

// Why a connection was closed on a change of its node's health.
const (
	EndNodeDown  pipe.End = "node_down"  // checks.on_marked_down: close
	EndMovedBack pipe.End = "moved_back" // checks.on_marked_up: move_back
)

// sessionRegistry holds the proxied connections by upstream and node, so
// that a change of a node's health can act on them.
type sessionRegistry struct {
	mu sync.Mutex
	m  map[sessionNode]map[*liveConn]string // connection -> its hash key
}

type sessionNode struct{ upstream, addr string }

// session is one proxied connection as the registry holds it.
type session struct {
	lc   *liveConn
	addr string // its node
	key  string // its hash key
}

// add registers lc, proxied to addr of upstream; the returned func
// forgets it.
func (r *sessionRegistry) add(upstream, addr, key string, lc *liveConn) (remove func()) {
	k := sessionNode{upstream, addr}
	r.mu.Lock()
	if r.m == nil {
		r.m = make(map[sessionNode]map[*liveConn]string)
	}
	if r.m[k] == nil {
		r.m[k] = make(map[*liveConn]string)
	}
	r.m[k][lc] = key
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.m[k], lc)
		if len(r.m[k]) == 0 {
			delete(r.m, k)
		}
	}
}

// of returns the sessions of upstream, on node addr when on is true, on
// every other node when it is false.
func (r *sessionRegistry) of(upstream, addr string, on bool) []session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []session
	for k, conns := range r.m {
		if k.upstream != upstream || (k.addr == addr) != on {
			continue
		}
		for lc, key := range conns {
			out = append(out, session{lc: lc, addr: k.addr, key: key})
		}
	}
	return out
}

// nodeChanged acts on a change of a node's health as its upstream's checks
// ask: on_marked_down closes the node's connections, on_marked_up
// move_back moves back the connections that belong on it.
func (s *Server) nodeChanged(st health.Status) {
	up, node := s.snap.Load().node(st.Upstream, st.Addr)
	if up == nil || up.cfg.Checks == nil || up.health[node].Healthy() != st.Healthy {
		return // gone, unchecked, or changed again since
	}
	switch checks := up.cfg.Checks; {
	case !st.Healthy && checks.OnMarkedDown == config.MarkedDownClose:
		sessions := s.sessions.of(st.Upstream, st.Addr, true)
		for _, ss := range sessions {
			ss.lc.close(EndNodeDown)
		}
		if len(sessions) > 0 {
			s.log.Info("closed the connections of an unhealthy node", "upstream", st.Upstream, "node", st.Addr, "count", len(sessions))
		}
	case st.Healthy && checks.OnMarkedUp == config.MarkedUpMoveBack:
		s.moveBack(up, node, checks.MoveBackRate)
	}
}

// moveBack closes, rate per second, the connections of up on other nodes
// that the balancer would now send to node, so that their clients
// reconnect to it. It stops when node goes down again or the server stops.
func (s *Server) moveBack(up *upstream, node int, rate float64) {
	var moves []*liveConn
	for _, ss := range s.sessions.of(up.cfg.ID, up.addrs[node], false) {
		if up.belongsOn(ss.key, node, ss.addr) {
			moves = append(moves, ss.lc)
		}
	}
	if len(moves) == 0 {
		return
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	moved := 0
	for _, lc := range moves {
		if !up.health[node].Healthy() {
			break
		}
		lc.close(EndMovedBack)
		moved++
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
		}
	}
	s.log.Info("moved connections back to a node that returned", "upstream", up.cfg.ID, "node", up.addrs[node], "count", moved)
}

// belongsOn reports whether a connection with hash key, now on node addr
// now, would be sent to node: for chash, node comes first in the key's
// order; for the other balancers, node is of a higher priority than now.
func (u *upstream) belongsOn(key string, node int, now string) bool {
	if u.cfg.Type == "chash" {
		for first := range u.bal.Order(key) {
			return first == node
		}
		return false
	}
	for i, addr := range u.addrs {
		if addr == now {
			return u.cfg.Nodes[i].Priority < u.cfg.Nodes[node].Priority
		}
	}
	return false
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
