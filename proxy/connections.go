package proxy

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/mqgate/mqgate/pipe"
)

// Why an operator ended a connection (see pipe.End for the others).
const (
	EndClosedByAdmin pipe.End = "closed_by_admin" // DELETE /connections/{client_id}
	EndDrained       pipe.End = "drained"         // its node was removed and drain was asked for
	EndRouteRemoved  pipe.End = "route_removed"   // its route was removed and drain was asked for
	EndTakenOver     pipe.End = "taken_over"      // its client id connected again (on_duplicate_client_id: keep_newest)
)

// connEntry is what the connection table adds to the access record (whose
// fields up to the pipe are written before the entry is visible, and not
// after) for one proxied connection. It is filled in once, when the pipe
// starts.
type connEntry struct {
	piping  bool // set with the fields below; false while the CONNECT is read and the broker dialled
	settled bool // ended: out of the indexes, no longer listed
	// forwarded is the bytes sent before the pipe: the CONNECT and what
	// followed it, at most max_connect_size and a read; an int32 in the
	// padding after the flags.
	forwarded int32
	// Its node and route are liveConn.node and record.route, set before
	// piping.
	meter pipe.Meter // bytes the pipe moved so far, added to the route's and node's too
}

// ConnInfo is one live proxied connection as operators see it.
type ConnInfo struct {
	ClientID      string    `json:"client_id"`
	Username      string    `json:"username"`
	ProtocolLevel int       `json:"protocol_level"`
	Client        string    `json:"client"`   // the client's address
	Listener      string    `json:"listener"` // the configured listener address
	Route         string    `json:"route"`
	Upstream      string    `json:"upstream"`
	Node          string    `json:"node"`
	Since         time.Time `json:"since"`
	BytesUp       int64     `json:"bytes_up"`   // client to broker
	BytesDown     int64     `json:"bytes_down"` // broker to client
}

// ConnFilter selects connections; empty fields match any.
type ConnFilter struct {
	ClientID, Username, Node, Route, Upstream string
}

// match reports whether f selects lc, which is piping. lc.mu is held.
func (f ConnFilter) match(lc *liveConn) bool {
	return (f.ClientID == "" || f.ClientID == lc.rec.clientID) &&
		(f.Username == "" || f.Username == lc.rec.username) &&
		(f.Node == "" || f.Node == lc.node.addr) &&
		(f.Route == "" || f.Route == lc.rec.route.id) &&
		(f.Upstream == "" || f.Upstream == lc.node.upstreamID)
}

// piping records the connection in the table as it starts its pipe, and
// indexes it by client id, node (liveConn.node) and route (record.route).
// up is how many bytes were forwarded already (the CONNECT and what
// followed), counted in the route's and node's totals here; the pipe counts
// the rest as it goes.
func (lc *liveConn) piping(rec *record, up int64) {
	rs, node := rec.route, lc.node
	lc.mu.Lock()
	e := &lc.entry
	e.forwarded, lc.forwardedDown = int32(up), int32(rec.down)
	e.meter.Totals = [2]*pipe.Meter{&rs.bytes, &node.bytes}
	e.piping = true
	lc.mu.Unlock()
	rs.active.Add(1)
	rs.total.Add(1)
	rs.bytes.Up.Add(up)
	node.bytes.Up.Add(up)
	rs.bytes.Down.Add(rec.down)
	node.bytes.Down.Add(rec.down)
	lc.srv.conns.addClient(lc)
	node.conns.push(lc)
	rs.conns.push(lc)
}

// settle takes a finished connection out of the indexes and its route's
// active count. Its bytes are in the totals already.
func (lc *liveConn) settle() {
	lc.mu.Lock()
	e := &lc.entry
	if !e.piping || e.settled {
		lc.mu.Unlock()
		return
	}
	e.settled = true
	lc.mu.Unlock()
	lc.rec.route.active.Add(-1)
	lc.srv.conns.removeClient(lc)
	lc.node.conns.remove(lc)
	lc.rec.route.conns.remove(lc)
}

// info returns the table row, or false for a connection not piping yet.
func (lc *liveConn) info() (ConnInfo, bool) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	e := &lc.entry
	if !e.piping || e.settled {
		return ConnInfo{}, false
	}
	up, down := lc.bytesSoFar()
	r := &lc.rec
	return ConnInfo{
		ClientID: r.clientID, Username: r.username, ProtocolLevel: int(r.level),
		Client: r.remote.String(), Listener: r.listener.addr.get(),
		Route: r.route.id, Upstream: lc.node.upstreamID, Node: lc.node.addr,
		Since:   lc.srv.at(r.start),
		BytesUp: up, BytesDown: down,
	}, true
}

// matching returns the piping connections f selects, looking only where
// they can be: the client id's shard, the nodes' or the route's sets; only
// a filter by user name alone, or none, walks every connection.
func (s *Server) matching(f ConnFilter) []*liveConn {
	var candidates []*liveConn
	switch {
	case f.ClientID != "":
		candidates = s.conns.client(f.ClientID)
	case f.Node != "" || f.Upstream != "":
		for _, n := range s.nodes.All() {
			if (f.Node == "" || f.Node == n.addr) && (f.Upstream == "" || f.Upstream == n.upstreamID) {
				candidates = append(candidates, n.conns.list()...)
			}
		}
	case f.Route != "":
		for _, rs := range s.routes.All() {
			if rs.id == f.Route {
				candidates = append(candidates, rs.conns.list()...)
			}
		}
	default:
		s.conns.each(func(lc *liveConn) { candidates = append(candidates, lc) })
	}
	out := candidates[:0]
	for _, lc := range candidates {
		lc.mu.Lock()
		ok := lc.entry.piping && !lc.entry.settled && lc.reason == "" && f.match(lc)
		lc.mu.Unlock()
		if ok {
			out = append(out, lc)
		}
	}
	return out
}

// Connections lists the live proxied connections f selects, oldest first,
// at most limit of them (0: all), and how many matched in all.
func (s *Server) Connections(f ConnFilter, limit int) (list []ConnInfo, total int) {
	for _, lc := range s.matching(f) {
		if ci, ok := lc.info(); ok {
			list = append(list, ci)
		}
	}
	slices.SortFunc(list, func(a, b ConnInfo) int {
		return cmp.Or(a.Since.Compare(b.Since), cmp.Compare(a.ClientID, b.ClientID))
	})
	total = len(list)
	if limit > 0 && len(list) > limit {
		list = list[:limit]
	}
	return list, total
}

// CloseClient closes every proxied connection of the client id and returns
// them as they were. Each ends at a packet boundary of the stream to the
// client; a 5.0 client is told 0x98 Administrative action first.
func (s *Server) CloseClient(clientID string) []ConnInfo {
	var closed []ConnInfo
	for _, lc := range s.matching(ConnFilter{ClientID: clientID}) {
		if ci, ok := lc.info(); ok {
			closed = append(closed, ci)
		}
		lc.close(EndClosedByAdmin)
	}
	if len(closed) > 0 {
		s.log.Info("connection closed by admin", "client_id", clientID, "count", len(closed))
	}
	return closed
}

// DrainRemoved moves the connections whose route or node the current
// configuration no longer has, paced like a rebalance (one job with it:
// /status.json, pause, resume and cancel see it) so that their clients do
// not all reconnect at once: at rebalance.rate connections a second, or,
// with window > 0 (reload.drain_window, ?drain_window=), at the rate that
// ends them within window. A 5.0 client is told 0x9C Use another server
// (its node is gone) or 0x9D Server moved (its route is gone). It returns
// how many it will close; the closing goes on in the background and stops
// at Shutdown.
func (s *Server) DrainRemoved(window time.Duration) int {
	snap := s.snap.Load()
	routes := make(map[string]bool, len(snap.cfg.StreamRoutes))
	for _, r := range snap.cfg.StreamRoutes {
		routes[r.ID] = true
	}
	nodes := make(map[*nodeState]bool)
	for _, u := range snap.upstreams {
		for _, n := range u.nodes {
			nodes[n] = true
		}
	}
	// Only the sets of removed routes and nodes are read.
	seen := make(map[*liveConn]bool)
	var moves []move
	collect := func(list []*liveConn, reason pipe.End) {
		for _, lc := range list {
			lc.mu.Lock()
			e := &lc.entry
			// Connections already being closed (by an earlier drain, an
			// operator or a duplicate client id) are not drained again.
			if e.piping && !e.settled && lc.reason == "" && !seen[lc] {
				seen[lc] = true
				moves = append(moves, move{lc, reason})
			}
			lc.mu.Unlock()
		}
	}
	for _, rs := range s.routes.All() {
		if !routes[rs.id] {
			collect(rs.conns.list(), EndRouteRemoved)
		}
	}
	for _, n := range s.nodes.All() {
		if !nodes[n] {
			collect(n.conns.list(), EndDrained)
		}
	}
	if len(moves) > 0 {
		s.pace("", ReasonDrain, windowRate(len(moves), window, snap.cfg.RebalanceSettings().Rate), moves)
	}
	return len(moves)
}

// windowRate is the rate that makes n moves within window, or rate when
// window is not set.
func windowRate(n int, window time.Duration, rate float64) float64 {
	if window <= 0 {
		return rate
	}
	return float64(n) / window.Seconds()
}

// DrainAll closes every live connection, spread evenly over window (paced
// as a rebalance is), for a process that is being replaced: its clients
// reconnect to the new one a few at a time. It returns how many it will
// close.
func (s *Server) DrainAll(window time.Duration) int {
	var moves []move
	s.conns.each(func(lc *liveConn) {
		if lc.closedBy() == "" {
			moves = append(moves, move{lc, EndShutdown})
		}
	})
	if len(moves) > 0 {
		s.pace("", ReasonShutdown, windowRate(len(moves), window, math.Inf(1)), moves)
	}
	return len(moves)
}
