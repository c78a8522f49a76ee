package proxy

import (
	"cmp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mqgate/mqgate/config"
	"github.com/mqgate/mqgate/health"
	"github.com/mqgate/mqgate/keyed"
	"github.com/mqgate/mqgate/pipe"
)

// A node's health as status pages and metrics name it.
const (
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
	HealthUnknown   = "unknown" // a node the health checker does not know
)

// DialBuckets are the upper bounds, in seconds, of the dial latency
// histogram: loopback brokers answer in microseconds, remote ones in
// milliseconds, and a dial near connect timeout is trouble.
var DialBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// dialHistogram counts dial latencies in DialBuckets; the last count is
// for dials slower than every bound.
type dialHistogram struct {
	counts [14]atomic.Uint64 // len(DialBuckets)+1
}

func (h *dialHistogram) observe(d time.Duration) {
	secs := d.Seconds()
	i, _ := slices.BinarySearch(DialBuckets, secs)
	h.counts[i].Add(1)
}

// routeState is what mqgate counts for one stream route. Like nodeState,
// it outlives snapshots: a reload that keeps the route id keeps its counts.
type routeState struct {
	id     string
	active atomic.Int64
	total  atomic.Uint64
	bytes  pipe.Meter // every byte its connections carried, live ones' so far
	conns  connList   // its piping connections
}

// routeRegistry hands out the routeState for a route id.
type routeRegistry struct {
	keyed.Map[string, *routeState]
}

// states returns the state of each of cfg's routes, in order, so that a
// connection finds its route's counters in its snapshot, without a lookup.
func (r *routeRegistry) states(cfg *config.Config) []*routeState {
	out := make([]*routeState, len(cfg.StreamRoutes))
	for i, rt := range cfg.StreamRoutes {
		out[i] = r.Get(rt.ID, func() *routeState { return &routeState{id: rt.ID, conns: connList{slot: linkRoute}} })
	}
	return out
}

// prune forgets routes the snapshot does not have and that carry no
// connection.
func (r *routeRegistry) prune(keep *snapshot) {
	ids := make(map[string]bool, len(keep.cfg.StreamRoutes))
	for _, rt := range keep.cfg.StreamRoutes {
		ids[rt.ID] = true
	}
	r.Map.Prune(func(id string, rs *routeState) bool { return ids[id] || rs.active.Load() != 0 })
}

// RouteStats is one stream route's counters.
type RouteStats struct {
	ID        string `json:"id"`
	Active    int64  `json:"active"`
	Total     uint64 `json:"total"`
	BytesUp   int64  `json:"bytes_up"`
	BytesDown int64  `json:"bytes_down"`
}

// DialStats is the dial latency histogram: Counts[i] dials took at most
// DialBuckets[i] seconds and more than the bound before (not cumulative);
// the last count is for slower dials.
type DialStats struct {
	Counts     []uint64
	Count      uint64
	SumSeconds float64
}

// Stats returns the current counters. Byte counts include the live
// connections' bytes so far, so they grow while long connections run.
func (s *Server) Stats() StatsSnapshot {
	out := StatsSnapshot{
		Accepted:    s.stats.Accepted.Load(),
		Proxied:     s.stats.Proxied.Load(),
		Active:      s.stats.Active.Load(),
		Unfinished:  int64(s.gate.Unfinished()),
		Shed:        s.gate.Shed(),
		Refused:     make(map[string]uint64),
		ParseErrors: make(map[string]uint64),
		Dial: DialStats{
			Count:      s.stats.dialCount.Load(),
			SumSeconds: time.Duration(s.stats.dialNanos.Load()).Seconds(),
		},
		TLSHandshakeFailures:    s.stats.TLSHandshakeFailures.Load(),
		TLSRecordCarried:        s.stats.TLSRecordCarried.Load(),
		ProxyProtocolRefused:    s.stats.ProxyProtocolRefused.Load(),
		TLSHandshakes:           tlsSnapshot(s.tlsCounts.All()),
		WebSocket:               s.web.stats.snapshot(),
		WebSocketLooped:         s.stats.WebSocketLooped.Load(),
		WebSocketParked:         s.stats.WebSocketParked.Load(),
		TLSRecordLooped:         s.stats.TLSRecordLooped.Load(),
		TLSRecordParked:         s.stats.TLSRecordParked.Load(),
		TLSRecordWaiting:        s.stats.TLSRecordWaiting.Load(),
		WebSocketUpstreamParked: s.stats.WebSocketUpstreamParked.Load(),
	}
	for reason, n := range s.stats.refusedBy {
		out.Refused[reason] = n.Load()
	}
	for i := range s.stats.parseErrorsBy {
		out.ParseErrors[parseErrorKinds[i]] = s.stats.parseErrorsBy[i].Load()
	}
	for i := range s.stats.dialBuckets.counts {
		out.Dial.Counts = append(out.Dial.Counts, s.stats.dialBuckets.counts[i].Load())
	}

	// Counters only: the connections keep them as they go.
	type nodeKey struct{ upstream, addr string }
	healthOf := make(map[nodeKey]health.Status)
	for _, hs := range s.health.Statuses() {
		healthOf[nodeKey{hs.Upstream, hs.Addr}] = hs
	}
	defaultPassive := make(map[string]bool)
	if snap := s.snap.Load(); snap != nil {
		for _, up := range snap.upstreams {
			defaultPassive[up.cfg.ID] = up.defaultPassive
		}
	}
	for _, n := range s.nodes.All() {
		ns := NodeStats{
			Upstream: n.upstreamID, Addr: n.addr,
			Active: n.active.Load(), Total: n.total.Load(), DialFailures: n.dialFails.Load(),
			BytesUp: n.bytes.Up.Load(), BytesDown: n.bytes.Down.Load(),
			Health: HealthUnknown,
		}
		if hs, ok := healthOf[nodeKey{n.upstreamID, n.addr}]; ok {
			ns.Health, ns.HealthReason, ns.HealthSince = HealthUnhealthy, hs.Reason, hs.Since
			if hs.Healthy {
				ns.Health = HealthHealthy
			}
			ns.Passive, ns.PassiveFailures, ns.PassiveTimeouts = hs.Passive, hs.PassiveFailures, hs.PassiveTimeouts
			if hs.Passive != "" && defaultPassive[n.upstreamID] {
				ns.Passive += " (default)"
			}
		}
		out.BytesUp += ns.BytesUp
		out.BytesDown += ns.BytesDown
		out.Nodes = append(out.Nodes, ns)
		for _, sc := range n.sources.All() {
			out.Sources = append(out.Sources, SourceStats{Upstream: n.upstreamID, Node: n.addr, Source: sc.source.String(),
				Active: sc.active.Load(), Total: sc.total.Load(), Exhausted: sc.exhausted.Load()})
		}
	}
	for _, rs := range s.routes.All() {
		out.Routes = append(out.Routes, RouteStats{
			ID: rs.id, Active: rs.active.Load(), Total: rs.total.Load(),
			BytesUp: rs.bytes.Up.Load(), BytesDown: rs.bytes.Down.Load(),
		})
	}
	s.mu.Lock()
	bound := make(map[string]string, len(s.listeners))
	for name, l := range s.listeners {
		bound[name] = l.ln.Addr().String() // its counts' address, also when renamed
	}
	s.mu.Unlock()
	out.Listeners = listenerSnapshot(s.lnCounts.All(), bound)
	slices.SortFunc(out.Sources, func(a, b SourceStats) int {
		return cmp.Or(strings.Compare(a.Upstream, b.Upstream), strings.Compare(a.Node, b.Node), strings.Compare(a.Source, b.Source))
	})
	slices.SortFunc(out.Nodes, func(a, b NodeStats) int {
		if c := strings.Compare(a.Upstream, b.Upstream); c != 0 {
			return c
		}
		return strings.Compare(a.Addr, b.Addr)
	})
	slices.SortFunc(out.Routes, func(a, b RouteStats) int { return strings.Compare(a.ID, b.ID) })
	out.Rebalance, out.RebalanceMoved = s.RebalanceState()
	return out
}
