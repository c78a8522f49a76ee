package proxy

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/mqgate/mqgate/balance"
	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/keyed"
	"github.com/mqgate/mqgate/pipe"
	"github.com/mqgate/mqgate/route"
	"github.com/mqgate/mqgate/tlsconf"
	"github.com/mqgate/mqgate/vars"
)

// snapshot is one immutable configuration made ready to serve. A connection
// takes the current snapshot when it is accepted and keeps it to its end, so
// a reload never changes what a live connection sees.
type snapshot struct {
	cfg       *config.Config
	routes    *route.Table
	upstreams []*upstream    // index-aligned with cfg.StreamRoutes
	http      []*httpRoute   // cfg.Routes in match order (http.go)
	plugins   []routePlugins // index-aligned with cfg.StreamRoutes; set by the Server
	stats     []*routeState  // index-aligned with cfg.StreamRoutes; set by the Server
	targets   []health.Target
	// connectFrame is connectFrame at cfg's max_connect_size, made once
	// for the event loops' CONNECT reads rather than per connection.
	connectFrame func(b []byte) (int, error)
	// renamed maps the address a listener was opened under to the one the
	// configuration names it by now (Server.boundAt); nil mostly.
	renamed map[string]string
}

// upstream is a configured upstream with its balancer and live node state.
type upstream struct {
	cfg   *config.Upstream
	addrs []string     // dial address per node
	nodes []*nodeState // index-aligned with cfg.Nodes
	// health is each node's health, index-aligned with cfg.Nodes; the
	// balancer skips unhealthy nodes, dials report to it.
	health []*health.Node
	bal    balance.Balancer
	dialer *dialer // for client connections and health probes alike
	// sources are each node's source_addresses counts, index-aligned with
	// cfg.Nodes and then with cfg.SourceAddresses; nil without them.
	sources    [][]*sourceCounts
	sourceTurn atomic.Uint64 // where ties between sources start
	// loopAddrs are the nodes' addresses for the event loops' own dial,
	// index-aligned with cfg.Nodes; nil when the loops cannot reach this
	// upstream's nodes (TLS, PROXY header, source addresses, a host name):
	// its clients are dialled on a goroutine.
	loopAddrs []netip.AddrPort
	// defaultPassive is set when the upstream has no checks and counts
	// failed dials by config.DefaultPassive, NGINX's max_fails=1
	// fail_timeout=10s.
	defaultPassive bool
}

// order is the balancer's order of the nodes for key. When the default
// passive counting has taken every node out, it forgets their failures
// first, so this client tries them all, as NGINX does when no server is
// left: a blip that failed each node once does not refuse every client for
// fail_timeout.
func (up *upstream) order(key string) []int { return up.appendOrder(nil, key) }

// appendOrder is order appended to dst.
func (up *upstream) appendOrder(dst []int, key string) []int {
	order := balance.AppendOrder(up.bal, dst, key)
	if len(order) > 0 || !up.defaultPassive {
		return order
	}
	forgiven := false
	for _, h := range up.health {
		forgiven = h.Forgive() || forgiven
	}
	if !forgiven {
		return order
	}
	return balance.AppendOrder(up.bal, dst, key)
}

// setLoopAddrs fills loopAddrs when every node is a plain TCP address.
func (up *upstream) setLoopAddrs() {
	u := up.cfg
	if (u.Scheme != "" && u.Scheme != "tcp") || u.ProxyProtocol != "" || len(u.SourceAddresses) > 0 {
		return
	}
	addrs := make([]netip.AddrPort, len(up.addrs))
	for i, a := range up.addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return
		}
		addrs[i] = ap
	}
	up.loopAddrs = addrs
}

// nodeState is what mqgate knows about one node of one upstream. It outlives
// snapshots: a reload that keeps the node keeps its counters.
type nodeState struct {
	upstreamID string
	addr       string
	active     atomic.Int64  // proxied connections now
	total      atomic.Uint64 // proxied connections ever
	dialFails  atomic.Uint64
	bytes      pipe.Meter // every byte its connections carried, live ones' so far
	conns      connList   // its piping connections
	sources    keyed.Map[netip.Addr, *sourceCounts]
}

// upstream is the node's upstream id, "" for nil (a connection that reached
// no node).
func (n *nodeState) upstream() string {
	if n == nil {
		return ""
	}
	return n.upstreamID
}

// nodeRegistry hands out the nodeState for (upstream id, address) so that
// state survives reloads.
type nodeRegistry struct {
	keyed.Map[nodeKey, *nodeState]
}

type nodeKey struct{ upstream, addr string }

func (r *nodeRegistry) node(upstreamID, addr string) *nodeState {
	return r.Get(nodeKey{upstreamID, addr}, func() *nodeState {
		return &nodeState{upstreamID: upstreamID, addr: addr, conns: connList{slot: linkNode}}
	})
}

// prune forgets nodes that the current snapshot does not use and that carry
// no connection.
func (r *nodeRegistry) prune(keep *snapshot) {
	used := make(map[*nodeState]bool)
	for _, u := range keep.upstreams {
		for _, n := range u.nodes {
			used[n] = true
		}
	}
	for _, hr := range keep.http {
		for _, n := range hr.up.nodes {
			used[n] = true
		}
	}
	r.Map.Prune(func(_ nodeKey, n *nodeState) bool { return used[n] || n.active.Load() != 0 })
}

func newSnapshot(cfg *config.Config, reg *nodeRegistry, hc *health.Checker, certs *tlsconf.Store) (*snapshot, error) {
	byID := make(map[string]*upstream)
	var targets []health.Target
	build := func(u *config.Upstream) (*upstream, error) {
		if up, ok := byID[u.ID]; ok {
			return up, nil
		}
		up := &upstream{cfg: u, dialer: newDialer(u, certs)}
		bnodes := make([]balance.Node, len(u.Nodes))
		for i, n := range u.Nodes {
			addr := n.Addr()
			up.addrs = append(up.addrs, addr)
			up.nodes = append(up.nodes, reg.node(u.ID, addr))
			if len(u.SourceAddresses) > 0 {
				up.sources = append(up.sources, up.nodes[i].sourcesFor(u.SourceAddresses))
			}
			up.health = append(up.health, hc.Node(u.ID, addr))
			bnodes[i] = balance.Node{Addr: addr, Weight: n.Weight, Priority: n.Priority}
		}
		up.setLoopAddrs()
		bal, err := balance.New(bnodes, balance.Options{
			Type:              u.Type,
			HashBalanceFactor: u.HashBalanceFactor,
			HashMethod:        u.HashMethod,
			State: balance.State{
				Active:  func(i int) int64 { return up.nodes[i].active.Load() },
				Healthy: func(i int) bool { return up.health[i].Healthy() },
			},
		})
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", u.ID, err)
		}
		up.bal = bal
		byID[u.ID] = up
		checks := u.Checks
		if checks == nil && len(u.Nodes) > 1 {
			// NGINX counts failed dials by default (max_fails=1
			// fail_timeout=10s); `checks: {passive: false}` does not.
			checks = &config.Checks{Passive: config.DefaultPassive(), OnMarkedDown: config.MarkedDownKeep, OnMarkedUp: config.MarkedUpKeep}
			up.defaultPassive = true
		}
		targets = append(targets, health.Target{Upstream: u.ID, Addrs: up.addrs, Checks: checks, Dial: up.dialer.probe})
		return up, nil
	}
	for i := range cfg.Upstreams {
		if _, err := build(&cfg.Upstreams[i]); err != nil {
			return nil, err
		}
	}
	snap := &snapshot{cfg: cfg, routes: route.NewTable(cfg.StreamRoutes), targets: targets}
	limit := cfg.StreamProxy.MaxConnectSize
	snap.connectFrame = func(b []byte) (int, error) { return connectFrame(b, limit) }
	for i := range cfg.StreamRoutes {
		r := &cfg.StreamRoutes[i]
		var up *upstream
		if r.Upstream != nil {
			u, err := build(r.Upstream)
			if err != nil {
				return nil, err
			}
			up = u
		} else {
			up = byID[r.UpstreamID]
		}
		if up == nil {
			// config.Load has checked references; this is a programming error.
			return nil, fmt.Errorf("stream route %q: upstream %q not found", r.ID, r.UpstreamID)
		}
		snap.upstreams = append(snap.upstreams, up)
	}
	var err error
	snap.http, err = buildHTTPRoutes(cfg, func(r *config.HTTPRoute) (*upstream, error) {
		if r.Upstream != nil {
			return build(r.Upstream)
		}
		if up := byID[r.UpstreamID]; up != nil {
			return up, nil
		}
		return nil, fmt.Errorf("route %q: upstream %q not found", r.ID, r.UpstreamID)
	})
	if err != nil {
		return nil, err
	}
	snap.targets = targets // with the routes' inline upstreams, built just above
	return snap, nil
}

// hashKey is the balancer key for a connection: the variable the
// upstream's `key` names (mqtt_client_id after any rewrite), falling back
// to the client address when that is empty, as APISIX documents for
// mqtt_client_id.
func (u *upstream) hashKey(v *vars.Set, remote netip.Addr) string {
	if u.cfg.Type != balance.TypeConsistentHash {
		return ""
	}
	if k, _ := v.Get(u.cfg.Key); k != "" {
		return k
	}
	return remote.Unmap().String() // as remote_addr reads
}
