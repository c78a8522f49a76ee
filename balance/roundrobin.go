package balance

import (
	"iter"
	"sync"
)

// roundRobin is nginx's smooth weighted round robin
// (ngx_http_upstream_get_peer): on each pick every usable node's current
// weight grows by its weight, the node with the largest current weight wins
// and gives back the sum of the weights. Weights 5, 1, 1 yield the sequence
// a a b a c a a: the heavy node's turns are spread out instead of bunched.
//
// When the iteration reaches a tier, that tier gets one pick among its
// healthy nodes; the rest of the tier follows in list order after the pick,
// so a failed dial moves on to a different node. Lower tiers pick only when
// the iteration reaches them, so their rotation reflects the connections
// that actually fell back to them.
type roundRobin struct {
	pool
	order iter.Seq[int] // rr.yieldOrder, bound once so that Order does not allocate

	mu      sync.Mutex
	current []int64 // nginx's current_weight per node; guarded by mu
}

func newRoundRobin(p pool) *roundRobin {
	rr := &roundRobin{pool: p, current: make([]int64, len(p.nodes))}
	rr.order = rr.yieldOrder
	return rr
}

// Order ignores the key.
func (rr *roundRobin) Order(string) iter.Seq[int] {
	return rr.order
}

func (rr *roundRobin) yieldOrder(yield func(int) bool) {
	var buf [smallTier]int
	for _, tier := range rr.tiers {
		usable := buf[:0]
		for _, n := range tier {
			if rr.isHealthy(n) {
				usable = append(usable, n)
			}
		}
		if len(usable) == 0 {
			continue
		}
		first := rr.pick(usable)
		for i := range usable {
			if !yield(usable[(first+i)%len(usable)]) {
				return
			}
		}
	}
}

// pick advances the rotation over usable and returns the position in usable
// of the chosen node.
func (rr *roundRobin) pick(usable []int) int {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	var total int64
	best := 0
	for i, n := range usable {
		w := int64(rr.nodes[n].Weight)
		rr.current[n] += w
		total += w
		if rr.current[n] > rr.current[usable[best]] {
			best = i
		}
	}
	rr.current[usable[best]] -= total
	return best
}
