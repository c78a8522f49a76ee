package balance

import (
	"iter"
	"math/bits"
	"sync/atomic"
)

// leastConn orders each tier's healthy nodes by (active + 1) / weight,
// ascending: the load a node would carry if it took this connection. Counting
// the new connection makes weight matter even among idle nodes, as in
// HAProxy's leastconn. Equally loaded nodes take turns: a counter rotates
// which of them comes first, so a burst of connections that arrives before
// the Active counts move is spread rather than sent to the first node.
type leastConn struct {
	pool
	order iter.Seq[int] // lc.yieldOrder, bound once so that Order does not allocate
	turn  atomic.Uint64 // rotates the tie-break between equally loaded nodes
}

func newLeastConn(p pool) *leastConn {
	lc := &leastConn{pool: p}
	lc.order = lc.yieldOrder
	return lc
}

// loaded is one candidate node of a tier with its load.
type loaded struct {
	node   int
	conns  uint64 // active + 1
	weight uint64
	rank   int // position in the tier after rotation; breaks ties
}

// Order ignores the key.
func (lc *leastConn) Order(string) iter.Seq[int] {
	return lc.order
}

func (lc *leastConn) yieldOrder(yield func(int) bool) {
	turn := lc.turn.Add(1)
	var buf [smallTier]loaded
	for _, tier := range lc.tiers {
		shift := int(turn % uint64(len(tier)))
		cands := buf[:0]
		for i, n := range tier {
			if !lc.isHealthy(n) {
				continue
			}
			cands = append(cands, loaded{
				node:   n,
				conns:  uint64(lc.activeConns(n)) + 1,
				weight: uint64(lc.nodes[n].Weight),
				rank:   (i - shift + len(tier)) % len(tier),
			})
		}
		for len(cands) > 0 {
			var best loaded
			best, cands = takeBest(cands, lighter)
			if !yield(best.node) {
				return
			}
		}
	}
}

// lighter reports whether a comes before b: a smaller conns/weight, compared
// exactly as conns_a × weight_b < conns_b × weight_a in 128 bits.
func lighter(a, b loaded) bool {
	aHi, aLo := bits.Mul64(a.conns, b.weight)
	bHi, bLo := bits.Mul64(b.conns, a.weight)
	if aHi != bHi {
		return aHi < bHi
	}
	if aLo != bLo {
		return aLo < bLo
	}
	return a.rank < b.rank
}
