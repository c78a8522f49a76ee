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
	addr     string
	active   atomic.Int64  // open now, in any stage
	accepted atomic.Uint64 // accepted since the start
	refused  atomic.Uint64 // well-formed CONNECTs answered with a refusing CONNACK
}

func newListenerCounts(addr string) func() *listenerCounts {
	return func() *listenerCounts { return &listenerCounts{addr: addr} }
}

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
		out = append(out, ListenerStats{
			Addr: c.addr, Bound: bound[c.addr],
			Active: c.active.Load(), Accepted: c.accepted.Load(), Refused: c.refused.Load(),
		})
	}
	slices.SortFunc(out, func(a, b ListenerStats) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}
