package proxy

import (
	"net"
	"reflect"
	"sync"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/limit"
	"github.com/mqgate/mqgate/mqtt"
	"github.com/mqgate/mqgate/pipe"
)

// EndTakenOver: the connection was closed because its client id connected
// again (on_duplicate_client_id: keep_newest).
const EndTakenOver pipe.End = "taken_over"

// policy is a route's CONNECT policy: its limit-conn, limit-req and
// ip-restriction plugins with their counters. A policy outlives snapshots
// while its route keeps the same settings, so a reload neither resets the
// counts nor lets a limit be exceeded.
type policy struct {
	plugins config.Plugins // the settings it was built from, to compare
	conn    *limit.Counter // nil without limit-conn
	rate    *limit.Rate    // nil without limit-req
	allow   limit.Prefixes // ip-restriction whitelist
	deny    limit.Prefixes // ip-restriction blacklist
}

func newPolicy(pl config.Plugins) *policy {
	p := &policy{plugins: pl}
	if lc := pl.LimitConn; lc != nil {
		p.conn = limit.NewCounter(lc.Conn + lc.Burst)
	}
	if lr := pl.LimitReq; lr != nil {
		p.rate = limit.NewRate(lr.Rate, lr.Burst)
	}
	if ir := pl.IPRestriction; ir != nil {
		p.allow, p.deny = ir.Whitelist, ir.Blacklist
	}
	return p
}

// policyRegistry keeps each route's policy across reloads.
type policyRegistry struct {
	mu    sync.Mutex
	byID  map[string]*policy
	empty policy
}

// build returns the policies of cfg's routes, index-aligned with
// cfg.StreamRoutes, reusing those whose settings are unchanged, and
// forgets the rest.
func (r *policyRegistry) build(cfg *config.Config) []*policy {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := make(map[string]*policy)
	out := make([]*policy, len(cfg.StreamRoutes))
	for i := range cfg.StreamRoutes {
		rt := &cfg.StreamRoutes[i]
		pl := config.Plugins{LimitConn: rt.Plugins.LimitConn, LimitReq: rt.Plugins.LimitReq, IPRestriction: rt.Plugins.IPRestriction}
		if pl == (config.Plugins{}) {
			out[i] = &r.empty
			continue
		}
		p := r.byID[rt.ID]
		if p == nil || !reflect.DeepEqual(p.plugins, pl) {
			p = newPolicy(pl)
		}
		next[rt.ID] = p
		out[i] = p
	}
	r.byID = next
	return out
}

// clientKey is a client id as a broker cluster sees it: ids are unique per
// upstream, not across them.
type clientKey struct{ upstream, clientID string }

// clientRegistry maps client ids to their live connection for
// on_duplicate_client_id.
type clientRegistry struct {
	mu sync.Mutex
	m  map[clientKey]*liveConn
}

// claim registers lc for k under mode. It returns the connection to close
// (keep_newest), or ok false when lc must be refused (keep_oldest).
func (r *clientRegistry) claim(k clientKey, lc *liveConn, mode string) (older *liveConn, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[clientKey]*liveConn)
	}
	older = r.m[k]
	if older != nil && mode == config.DuplicateKeepOldest {
		return nil, false
	}
	r.m[k] = lc
	return older, true
}

// release forgets lc, unless a newer connection took its place.
func (r *clientRegistry) release(k clientKey, lc *liveConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[k] == lc {
		delete(r.m, k)
	}
}

// admit applies the CONNECT policy to a routed connection: ip-restriction,
// the global max_connections, limit-req, limit-conn, then
// on_duplicate_client_id. It answers a refused client itself and returns
// ok false; otherwise release must be called when the connection ends.
func (s *Server) admit(c net.Conn, snap *snapshot, ri int, lc *liveConn, connect *mqtt.Connect, rec *record) (release func(), ok bool) {
	p := snap.policies[ri]
	rt := &snap.cfg.StreamRoutes[ri]
	remote := rec.remote.Addr().Unmap()
	if ir := rt.Plugins.IPRestriction; ir != nil {
		if len(p.allow) > 0 && !p.allow.Contains(remote) || p.deny.Contains(remote) {
			s.refuse(c, rec, mqtt.Banned, refuseIPRestriction, orDefault(ir.Message, "client address not allowed"))
			return nil, false
		}
	}
	var undo []func()
	release = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if !s.admitted.Acquire(snap.cfg.StreamProxy.MaxConnections) {
		s.refuse(c, rec, mqtt.QuotaExceeded, refuseMaxConnections, "max_connections reached")
		return nil, false
	}
	undo = append(undo, s.admitted.Release)
	if lr := rt.Plugins.LimitReq; lr != nil && !p.rate.Allow(limitKey(lr.Key, rt.ID, connect, remote.String())) {
		release()
		s.refuse(c, rec, mqtt.ConnectionRateExceeded, refuseLimitReq, orDefault(lr.RejectedMsg, "connection rate exceeded"))
		return nil, false
	}
	if lcfg := rt.Plugins.LimitConn; lcfg != nil {
		key := limitKey(lcfg.Key, rt.ID, connect, remote.String())
		if !p.conn.Acquire(key) {
			release()
			s.refuse(c, rec, mqtt.QuotaExceeded, refuseLimitConn, orDefault(lcfg.RejectedMsg, "connection limit reached"))
			return nil, false
		}
		undo = append(undo, func() { p.conn.Release(key) })
	}
	if mode := snap.cfg.StreamProxy.OnDuplicateClientID; connect.ClientID != "" && mode != "" && mode != config.DuplicateAllow {
		k := clientKey{snap.upstreams[ri].cfg.ID, connect.ClientID}
		older, ok := s.clients.claim(k, lc, mode)
		if !ok {
			release()
			s.refuse(c, rec, mqtt.ClientIdentifierNotValid, refuseDuplicateClientID, "client id already connected")
			return nil, false
		}
		if older != nil {
			s.log.Info("closing older connection of a client id that connected again",
				"client_id", connect.ClientID, "upstream", k.upstream, "client", rec.remote)
			older.close(EndTakenOver)
		}
		undo = append(undo, func() { s.clients.release(k, lc) })
	}
	return release, true
}

// limitKey is the value a limit counts by: the CONNECT field, the route,
// or the client's address.
func limitKey(key, routeID string, connect *mqtt.Connect, remote string) string {
	var v string
	switch key {
	case config.LimitKeyClientID:
		v = connect.ClientID
	case config.LimitKeyUsername:
		v = connect.Username
	case config.LimitKeyRoute:
		v = routeID
	}
	if v == "" {
		// An empty id or user name counts by address, as APISIX falls back.
		return remote
	}
	return v
}

func orDefault(s, def string) string {
	if s != "" {
		return s
	}
	return def
}
