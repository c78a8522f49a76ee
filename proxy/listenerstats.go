package proxy

import (
	"slices"
	"strings"
	"sync/atomic"
)

// listenerCounts are one listener's connections. Like the TLS counts they
// outlive snapshots, by configured address (Server.lnCounts), so a reload
// that keeps a listener keeps its counts.
type listenerCounts struct {
	addr     configuredAddr
	active   atomic.Int64  // open now, in any stage
	accepted atomic.Uint64 // accepted since the start
	refused  atomic.Uint64 // well-formed CONNECTs answered with a refusing CONNACK
}

func newListenerCounts(addr string) func() *listenerCounts {
	return func() *listenerCounts {
		c := &listenerCounts{}
		c.addr.set(addr)
		return c
	}
}

// configuredAddr is a listener's configured address, under which its
// counts show. A reload that names a listener by the port it is bound to
// (Server.boundAt) renames it while connections count under it.
type configuredAddr struct{ p atomic.Pointer[string] }

func (a *configuredAddr) get() string {
	if s := a.p.Load(); s != nil {
		return *s
	}
	return ""
}

func (a *configuredAddr) set(s string) { a.p.Store(&s) }

// ListenerStats are one listener's counters.
type ListenerStats struct {
	Addr     string `json:"addr"`  // as configured
	Bound    string `json:"bound"` // the address it is bound to; empty once closed
	Active   int64  `json:"active"`
	Accepted uint64 `json:"accepted"`
	Refused  uint64 `json:"refused"`
}

// listenerSnapshot copies the counts, by address; bound maps the
// configured addresses of the open listeners to their bound ones.
func listenerSnapshot(all []*listenerCounts, bound map[string]string) []ListenerStats {
	out := make([]ListenerStats, 0, len(all))
	for _, c := range all {
		addr := c.addr.get()
		out = append(out, ListenerStats{
			Addr: addr, Bound: bound[addr],
			Active: c.active.Load(), Accepted: c.accepted.Load(), Refused: c.refused.Load(),
		})
	}
	slices.SortFunc(out, func(a, b ListenerStats) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}
