package proxy

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// listenerCounts are one listener's connections. Like routeState they
// outlive snapshots, by configured address, so a reload that keeps a
// listener keeps its counts.
type listenerCounts struct {
	addr     string
	active   atomic.Int64  // open now, in any stage
	accepted atomic.Uint64 // accepted since the start
	refused  atomic.Uint64 // well-formed CONNECTs answered with a refusing CONNACK
}

// listenerRegistry hands out the counts of a listener by configured address.
type listenerRegistry struct {
	mu    sync.Mutex
	byAdr map[string]*listenerCounts
}

func (r *listenerRegistry) get(addr string) *listenerCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.byAdr[addr]
	if !ok {
		if r.byAdr == nil {
			r.byAdr = make(map[string]*listenerCounts)
		}
		c = &listenerCounts{addr: addr}
		r.byAdr[addr] = c
	}
	return c
}

// prune forgets listeners that are not configured any more and carry no
// connection.
func (r *listenerRegistry) prune(keep map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for addr, c := range r.byAdr {
		if !keep[addr] && c.active.Load() == 0 {
			delete(r.byAdr, addr)
		}
	}
}

// ListenerStats are one listener's counters.
type ListenerStats struct {
	Addr     string `json:"addr"`  // as configured
	Bound    string `json:"bound"` // the address it is bound to; empty once closed
	Active   int64  `json:"active"`
	Accepted uint64 `json:"accepted"`
	Refused  uint64 `json:"refused"`
}

// snapshot returns every listener's counters by address; bound maps the
// configured addresses of the open listeners to their bound ones.
func (r *listenerRegistry) snapshot(bound map[string]string) []ListenerStats {
	r.mu.Lock()
	out := make([]ListenerStats, 0, len(r.byAdr))
	for addr, c := range r.byAdr {
		out = append(out, ListenerStats{
			Addr: addr, Bound: bound[addr],
			Active: c.active.Load(), Accepted: c.accepted.Load(), Refused: c.refused.Load(),
		})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b ListenerStats) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}
