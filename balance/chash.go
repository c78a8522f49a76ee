package balance

import (
	"iter"
	"math"
	"slices"
)

// consistentHash is weighted rendezvous hashing (highest random weight).
//
// For a key k every node n of a priority tier gets the score
//
//	score(n, k) = -weight(n) / ln(u(n, k))
//	u(n, k)     = (top 52 bits of mix64(h(k) XOR h(addr(n))) + 0.5) / 2^52
//	h(s)        = mix64(FNV-1a 64(s))
//
// with mix64 the splitmix64 finalizer, so u is in the open interval (0, 1).
// The order for k is the tier's nodes by descending score; that is mqgate's
// equivalent of walking a hash ring. These formulas route deployed clusters:
// changing them moves clients, and TestConsistentHashGolden guards them.
// Properties:
//
//   - Deterministic from the configuration alone: the score depends only on
//     the address, the weight and the key. There is no seed and no list
//     position in it (exact ties fall back to comparing addresses), so every
//     mqgate instance, before and after any restart, orders a key the same.
//   - Proportional: -ln(u)/weight is exponentially distributed with rate
//     weight, and the smallest of independent exponentials is node i's with
//     probability weight(i)/Σweight, so node i is first for that share of
//     the keys.
//   - Minimal disruption: scores are independent per node, so adding a node
//     moves only the keys it now wins (its weight share, about 1/N), all of
//     them to the new node; removing a node, or its going unhealthy, moves
//     only its own keys, each to that key's second-best node, so they spread
//     over the others in proportion to weight.
//
// Order hashes the key once and combines it with each node's precomputed
// address hash: one mix64 and, when a tier's weights differ, one logarithm
// per node. That is O(N) per Order, about ten nanoseconds per node, with
// nothing to rebuild when the node set changes; a ketama-style ring is
// O(log N) but needs hundreds of points per node to spread evenly and moves
// a failed node's keys to its ring neighbours only. Brokers per upstream
// are few.
//
// With a bound factor f > 0 (HAProxy's hash-balance-factor), a node whose
// live connections + 1 exceed ceil(f × (tier's active + 1) × weight / tier's
// weight) is moved behind every node of its tier within its bound, so a hot
// spot spills to each key's next node. The nodes over their bound still
// follow, in plain order, as the last resort of a failing dial.
type consistentHash struct {
	pool
	nodeHash []uint64  // hashString(Addr) per node
	weight   []float64 // Weight per node, ready for the score
	// equalWeights reports per tier whether all its nodes weigh the same:
	// the score then grows with u alone, so u orders the tier without the
	// logarithm, which costs more than the rest of a node's score.
	equalWeights []bool
	factor       float64 // bounded load factor; 0 = off
}

func newConsistentHash(p pool, factor float64) *consistentHash {
	c := &consistentHash{
		pool:     p,
		nodeHash: make([]uint64, len(p.nodes)),
		weight:   make([]float64, len(p.nodes)),
		factor:   factor,
	}
	for i, n := range p.nodes {
		c.nodeHash[i] = hashString(n.Addr)
		c.weight[i] = float64(n.Weight)
	}
	c.equalWeights = make([]bool, len(p.tiers))
	for i, tier := range p.tiers {
		c.equalWeights[i] = !slices.ContainsFunc(tier, func(n int) bool {
			return p.nodes[n].Weight != p.nodes[tier[0]].Weight
		})
	}
	return c
}

// scored is one candidate node of a tier for one key.
type scored struct {
	score float64
	node  int
	spill bool // over its bounded-load share: tried after the nodes within theirs
}

func (c *consistentHash) Order(key string) iter.Seq[int] {
	return func(yield func(int) bool) { c.each(key, yield) }
}

// appendOrder is AppendOrder's: the whole order, with no allocation (yield
// does not escape each).
func (c *consistentHash) appendOrder(dst []int, key string) []int {
	c.each(key, func(n int) bool { dst = append(dst, n); return true })
	return dst
}

// each yields the nodes in Order's order for key until yield returns false.
func (c *consistentHash) each(key string, yield func(int) bool) {
	keyHash := hashString(key)
	var buf [smallTier]scored
	for i, tier := range c.tiers {
		cands := c.score(tier, c.equalWeights[i], keyHash, buf[:0])
		if c.factor > 0 {
			c.markSpills(cands)
		}
		for len(cands) > 0 {
			var best scored
			best, cands = takeBest(cands, c.better)
			if !yield(best.node) {
				return
			}
		}
	}
}

// score appends the healthy nodes of tier with their scores for keyHash,
// or with u when the tier's weights are all equal.
func (c *consistentHash) score(tier []int, equalWeights bool, keyHash uint64, dst []scored) []scored {
	for _, n := range tier {
		if !c.isHealthy(n) {
			continue
		}
		u := unitInterval(mix64(keyHash ^ c.nodeHash[n]))
		score := u // orders a tier of equal weights as the score does
		if !equalWeights {
			score = -c.weight[n] / math.Log(u)
		}
		dst = append(dst, scored{score: score, node: n})
	}
	return dst
}

// markSpills flags the candidates over their bounded-load share. For a
// factor >= 1 some candidate is always within its share, since the shares
// add up to at least total+1; were every one over, better would fall back
// to the plain order anyway.
func (c *consistentHash) markSpills(cands []scored) {
	var active [smallTier]int64
	conns := active[:0]
	var total int64
	var weight float64
	for _, s := range cands {
		a := c.activeConns(s.node)
		conns = append(conns, a)
		total += a
		weight += c.weight[s.node]
	}
	// f × (total+1) × w is exact for a factor such as 1.25, so the division
	// rounds correctly and the bound is exact when it is a whole number.
	limit := c.factor * float64(total+1)
	for i := range cands {
		bound := math.Ceil(limit * c.weight[cands[i].node] / weight)
		cands[i].spill = float64(conns[i]+1) > bound
	}
}

// better reports whether a comes before b in a key's order.
func (c *consistentHash) better(a, b scored) bool {
	if a.spill != b.spill {
		return !a.spill
	}
	if a.score != b.score {
		return a.score > b.score
	}
	return c.nodes[a.node].Addr < c.nodes[b.node].Addr
}

// FNV-1a 64 parameters, as in hash/fnv.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// hashString is FNV-1a 64 followed by mix64. FNV-1a is stable and needs no
// seed (unlike hash/maphash, whose seed is random per process, so it would
// route differently after a restart), but its high bits avalanche poorly on
// short strings; the mixer fixes that.
func hashString(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return mix64(h)
}

// mix64 is the splitmix64 finalizer (Stafford's Mix13): a bijection in which
// every input bit flips each output bit with probability close to 1/2.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// unitInterval maps the top 52 bits of x to a float64 in (0, 1), never 0
// or 1, so that its logarithm is finite and negative. (With 53 bits the
// largest value would round up to 1.)
func unitInterval(x uint64) float64 {
	return (float64(x>>12) + 0.5) / (1 << 52)
}
