// Package balance decides, for each new client connection, the order in
// which the proxy tries the broker nodes of an upstream.
//
// [New] builds a [Balancer] from an upstream's nodes. For every connection
// the proxy ranges over [Balancer.Order], dials the first node and, when
// that dial fails, the next, up to the upstream's retries:
//
//	b, err := balance.New(nodes, balance.Options{
//		Type:  balance.TypeConsistentHash,
//		State: balance.State{Healthy: health.Up, Active: stats.Active},
//	})
//	if err != nil {
//		return fmt.Errorf("upstream %s: %w", name, err)
//	}
//	...
//	for i := range b.Order(clientID) {
//		conn, err = dialer.DialContext(ctx, "tcp", nodes[i].Addr)
//		if err == nil || tries == retries {
//			break
//		}
//		tries++
//	}
//
// Three algorithms are available:
//
//   - [TypeRoundRobin] (the default) is nginx's smooth weighted round robin.
//   - [TypeConsistentHash] is weighted rendezvous hashing of a key such as
//     the MQTT client id: every mqgate instance, before and after any
//     restart, sends a key to the same node, and a change of the node set
//     moves only about 1/N of the keys. With [Options.HashBalanceFactor]
//     it bounds each node's load like HAProxy's hash-balance-factor.
//     [Options.HashMethod] [HashAPISIX] or [HashNGINX] instead builds the
//     ring of APISIX's chash or NGINX's `hash $key consistent`, so that a
//     fleet moved from either keeps its clients where they were.
//   - [TypeLeastConn] prefers the node with the fewest live connections
//     per unit of weight.
//
// Every algorithm honours [Node.Priority]: nodes of a lower priority
// ("backup" nodes) come after every usable node of the higher priorities.
// Nodes of weight 0 and nodes that [State.Healthy] reports down are never
// yielded.
package balance

import (
	"cmp"
	"fmt"
	"iter"
	"math"
	"slices"
)

// Balancer types, as spelled in the configuration.
const (
	TypeRoundRobin     = "roundrobin"
	TypeConsistentHash = "chash"
	TypeLeastConn      = "least_conn"
)

// MaxWeight is the largest weight a node may have; the bound keeps the
// weight arithmetic of every balancer free of overflow.
const MaxWeight = math.MaxInt32

// smallTier is the tier size up to which Order works in stack arrays and
// so does not allocate beyond the iterator itself.
const smallTier = 16

// Node is one broker as configured.
type Node struct {
	Addr     string // "host:port", the node's identity: hashing uses it, not the list position
	Weight   int    // 0 = takes no new connections
	Priority int    // higher is preferred; lower priorities are "backup" nodes
}

// State is what a balancer may read about the live system. Every field may
// be nil. The functions are called during Order, possibly concurrently, so
// they must be safe for concurrent use and cheap (an atomic load).
type State struct {
	// Healthy reports whether the node at index node of the nodes slice
	// may be dialled. Nil means every node is healthy.
	Healthy func(node int) bool
	// Active reports the node's live connections; least_conn and chash
	// with a HashBalanceFactor read it. Nil means every node has none.
	Active func(node int) int64
}

// Options configures a Balancer.
type Options struct {
	// Type is TypeRoundRobin (the default when empty),
	// TypeConsistentHash or TypeLeastConn.
	Type string
	// HashBalanceFactor bounds the load of a chash node to
	// ceil(factor × (total active + 1) × weight / total weight) within its
	// priority tier, as HAProxy's hash-balance-factor does (expressed as
	// a ratio: 1.25 for hash-balance-factor 125). 0 turns the bound off;
	// otherwise it must be at least 1, so that some node is always within
	// its bound. Other types ignore it.
	HashBalanceFactor float64
	// HashMethod is how TypeConsistentHash places keys: HashRendezvous
	// (the default when empty), or HashAPISIX or HashNGINX for the ring of
	// APISIX's or NGINX's consistent hash, node for node. The ring methods
	// take no HashBalanceFactor. Other types ignore it.
	HashMethod string
	State      State
}

// Balancer orders nodes for one connection. Implementations are safe for
// concurrent use.
type Balancer interface {
	// Order yields node indexes to try for one connection, best first:
	// each usable node at most once, highest priority tier first. key is
	// the hash key (used by chash only). Stopping the iteration early is
	// normal; round robin advances its rotation only for the tiers the
	// iteration reaches.
	Order(key string) iter.Seq[int]
}

// AppendOrder appends all the node indexes b.Order(key) yields to dst, for
// a caller that takes the whole order at once (a connection's dial): for
// chash, the proxy's usual balancer, without the iterator's allocations.
func AppendOrder(b Balancer, dst []int, key string) []int {
	if a, ok := b.(interface{ appendOrder([]int, string) []int }); ok {
		return a.appendOrder(dst, key)
	}
	return slices.AppendSeq(dst, b.Order(key))
}

// New returns a Balancer for nodes. It keeps a copy of the slice; the
// indexes that Order yields are positions in nodes. New reports an error for an unknown type, no
// nodes, an empty or duplicate Addr, a weight outside [0, MaxWeight] or an
// invalid HashBalanceFactor.
func New(nodes []Node, opts Options) (Balancer, error) {
	if f := opts.HashBalanceFactor; f != 0 && (math.IsNaN(f) || f < 1 || math.IsInf(f, 1)) {
		return nil, fmt.Errorf("balance: hash balance factor %v: want 0 (off) or a finite ratio >= 1", f)
	}
	p, err := newPool(nodes, opts.State)
	if err != nil {
		return nil, err
	}
	switch opts.Type {
	case "", TypeRoundRobin:
		return newRoundRobin(p), nil
	case TypeConsistentHash:
		switch opts.HashMethod {
		case "", HashRendezvous:
			return newConsistentHash(p, opts.HashBalanceFactor), nil
		case HashAPISIX, HashNGINX:
			if opts.HashBalanceFactor != 0 {
				return nil, fmt.Errorf("balance: hash method %s takes no hash balance factor (only %s does)", opts.HashMethod, HashRendezvous)
			}
			return newRing(p, opts.HashMethod)
		}
		return nil, fmt.Errorf("balance: unknown hash method %q: want %q, %q or %q",
			opts.HashMethod, HashRendezvous, HashAPISIX, HashNGINX)
	case TypeLeastConn:
		return newLeastConn(p), nil
	}
	return nil, fmt.Errorf("balance: unknown type %q: want %q, %q or %q",
		opts.Type, TypeRoundRobin, TypeConsistentHash, TypeLeastConn)
}

// pool is what every balancer shares: the validated nodes, grouped into
// priority tiers, and the live state.
type pool struct {
	nodes []Node
	// tiers holds the indexes of the nodes that have a weight, grouped by
	// priority, highest first; list order within a tier.
	tiers   [][]int
	healthy func(node int) bool
	active  func(node int) int64
}

func newPool(nodes []Node, state State) (pool, error) {
	if len(nodes) == 0 {
		return pool{}, fmt.Errorf("balance: no nodes")
	}
	seen := make(map[string]int, len(nodes))
	for i, n := range nodes {
		if n.Addr == "" {
			return pool{}, fmt.Errorf("balance: node %d: empty address", i)
		}
		if j, dup := seen[n.Addr]; dup {
			return pool{}, fmt.Errorf("balance: node %d: address %q already used by node %d", i, n.Addr, j)
		}
		seen[n.Addr] = i
		if n.Weight < 0 || n.Weight > MaxWeight {
			return pool{}, fmt.Errorf("balance: node %d (%s): weight %d out of range [0, %d]", i, n.Addr, n.Weight, MaxWeight)
		}
	}

	weighted := make([]int, 0, len(nodes))
	for i, n := range nodes {
		if n.Weight > 0 {
			weighted = append(weighted, i)
		}
	}
	// A stable sort keeps list order within a tier.
	slices.SortStableFunc(weighted, func(a, b int) int {
		return cmp.Compare(nodes[b].Priority, nodes[a].Priority)
	})
	var tiers [][]int
	for start := 0; start < len(weighted); {
		end := start + 1
		for end < len(weighted) && nodes[weighted[end]].Priority == nodes[weighted[start]].Priority {
			end++
		}
		tiers = append(tiers, weighted[start:end:end])
		start = end
	}

	return pool{
		nodes:   slices.Clone(nodes),
		tiers:   tiers,
		healthy: state.Healthy,
		active:  state.Active,
	}, nil
}

// isHealthy reports whether node may be dialled.
func (p *pool) isHealthy(node int) bool {
	return p.healthy == nil || p.healthy(node)
}

// activeConns returns node's live connections, never negative.
func (p *pool) activeConns(node int) int64 {
	if p.active == nil {
		return 0
	}
	return max(p.active(node), 0)
}

// takeBest removes the element of c that ranks first by better and returns
// it with the rest of c, whose order it does not keep. Balancers select
// lazily rather than sort because callers usually stop after one node.
func takeBest[T any](c []T, better func(a, b T) bool) (T, []T) {
	best := 0
	for i := 1; i < len(c); i++ {
		if better(c[i], c[best]) {
			best = i
		}
	}
	x, last := c[best], len(c)-1
	c[best] = c[last]
	return x, c[:last]
}
