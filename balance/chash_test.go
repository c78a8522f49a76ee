package balance

import (
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"testing"
)

func clientIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("client-%d", i)
	}
	return ids
}

// orderAddrs returns the addresses b orders for key.
func orderAddrs(b Balancer, nodes []Node, key string) []string {
	var addrs []string
	for n := range b.Order(key) {
		addrs = append(addrs, nodes[n].Addr)
	}
	return addrs
}

// firstAddr returns the address of the node b tries first for key, or "".
func firstAddr(b Balancer, nodes []Node, key string) string {
	for n := range b.Order(key) {
		return nodes[n].Addr
	}
	return ""
}

func newCHash(t testing.TB, nodes []Node, state State) Balancer {
	t.Helper()
	return mustNew(t, nodes, Options{Type: TypeConsistentHash, State: state})
}

// goldenNodes is a fixed configuration for TestConsistentHashGolden.
var goldenNodes = []Node{
	{Addr: "10.0.0.1:1883", Weight: 1},
	{Addr: "10.0.0.2:1883", Weight: 1},
	{Addr: "10.0.0.3:1883", Weight: 2},
	{Addr: "broker-4.example.com:8883", Weight: 1},
	{Addr: "[2001:db8::5]:1883", Weight: 3},
}

// TestConsistentHashGolden pins the algorithm: another mqgate instance, or
// this one after a restart or an upgrade, must route every key the same.
// A failure here means routing changed for deployed clusters; do not
// update the table unless that is intended and announced.
func TestConsistentHashGolden(t *testing.T) {
	t.Parallel()
	golden := []struct {
		key  string
		want []string // the full failover order
	}{
		{"", []string{"[2001:db8::5]:1883", "10.0.0.1:1883", "10.0.0.3:1883", "broker-4.example.com:8883", "10.0.0.2:1883"}},
		{"a", []string{"[2001:db8::5]:1883", "10.0.0.2:1883", "10.0.0.3:1883", "10.0.0.1:1883", "broker-4.example.com:8883"}},
		{"client-1", []string{"10.0.0.1:1883", "[2001:db8::5]:1883", "10.0.0.3:1883", "10.0.0.2:1883", "broker-4.example.com:8883"}},
		{"client-2", []string{"10.0.0.1:1883", "10.0.0.2:1883", "[2001:db8::5]:1883", "broker-4.example.com:8883", "10.0.0.3:1883"}},
		{"sensor/42", []string{"10.0.0.1:1883", "broker-4.example.com:8883", "[2001:db8::5]:1883", "10.0.0.3:1883", "10.0.0.2:1883"}},
		{"device-0001", []string{"10.0.0.2:1883", "10.0.0.3:1883", "10.0.0.1:1883", "[2001:db8::5]:1883", "broker-4.example.com:8883"}},
		{"mqttx_5f3c2a1b", []string{"[2001:db8::5]:1883", "10.0.0.3:1883", "10.0.0.1:1883", "10.0.0.2:1883", "broker-4.example.com:8883"}},
		{"✓ utf-8 id", []string{"[2001:db8::5]:1883", "broker-4.example.com:8883", "10.0.0.3:1883", "10.0.0.1:1883", "10.0.0.2:1883"}},
		{"192.0.2.1", []string{"10.0.0.3:1883", "10.0.0.2:1883", "[2001:db8::5]:1883", "broker-4.example.com:8883", "10.0.0.1:1883"}},
		{"[2001:db8::1]", []string{"10.0.0.1:1883", "[2001:db8::5]:1883", "10.0.0.3:1883", "10.0.0.2:1883", "broker-4.example.com:8883"}},
		{"a-client-id-of-23-chars", []string{"[2001:db8::5]:1883", "10.0.0.2:1883", "10.0.0.1:1883", "10.0.0.3:1883", "broker-4.example.com:8883"}},
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", []string{"10.0.0.2:1883", "10.0.0.3:1883", "[2001:db8::5]:1883", "10.0.0.1:1883", "broker-4.example.com:8883"}},
	}
	b := newCHash(t, goldenNodes, State{})
	for _, g := range golden {
		if got := orderAddrs(b, goldenNodes, g.key); !slices.Equal(got, g.want) {
			t.Errorf("Order(%q) = %q; want %q", g.key, got, g.want)
		}
	}

	// A fingerprint of many more keys: first choices of client-0..client-9999.
	wantCounts := map[string]int{
		"10.0.0.1:1883":             1232,
		"10.0.0.2:1883":             1243,
		"10.0.0.3:1883":             2528,
		"broker-4.example.com:8883": 1234,
		"[2001:db8::5]:1883":        3763,
	}
	counts := map[string]int{}
	for _, key := range clientIDs(10000) {
		counts[firstAddr(b, goldenNodes, key)]++
	}
	if !maps.Equal(counts, wantCounts) {
		t.Errorf("first choices of client-0..client-9999 = %v; want %v", counts, wantCounts)
	}
}

func TestHashPrimitives(t *testing.T) {
	t.Parallel()
	// The first two outputs of splitmix64 seeded with 0, from its reference
	// implementation: mix64 of one and two times the gamma 0x9e3779b97f4a7c15.
	for _, tt := range []struct{ in, want uint64 }{
		{0x9e3779b97f4a7c15, 0xe220a8397b1dcdaf},
		{0x3c6ef372fe94f82a, 0x6e789e6aa1b965f4},
	} {
		if got := mix64(tt.in); got != tt.want {
			t.Errorf("mix64(%#x) = %#x; want %#x", tt.in, got, tt.want)
		}
	}
	for _, s := range []string{"", "a", "client-1", "10.0.0.1:1883", "\x00\xff✓"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := hashString(s), mix64(h.Sum64()); got != want {
			t.Errorf("hashString(%q) = %#x; want mix64(FNV-1a 64) = %#x", s, got, want)
		}
	}
	for _, x := range []uint64{0, 1, 1 << 11, math.MaxUint64 >> 1, math.MaxUint64} {
		if u := unitInterval(x); !(u > 0 && u < 1) {
			t.Errorf("unitInterval(%#x) = %v; want in (0, 1)", x, u)
		}
	}
}

// TestConsistentHashListOrderIndependent builds two balancers from the same
// nodes listed in different orders: every key must get the same addresses.
func TestConsistentHashListOrderIndependent(t *testing.T) {
	t.Parallel()
	listed := []Node{
		{Addr: "10.0.0.1:1883", Weight: 1, Priority: 1},
		{Addr: "10.0.0.2:1883", Weight: 2, Priority: 1},
		{Addr: "10.0.0.3:1883", Weight: 1, Priority: 1},
		{Addr: "10.0.0.4:1883", Weight: 3, Priority: 1},
		{Addr: "10.0.0.5:1883", Weight: 1},
		{Addr: "10.0.0.6:1883", Weight: 1},
	}
	reordered := slices.Clone(listed)
	slices.Reverse(reordered)
	reordered[0], reordered[3] = reordered[3], reordered[0]
	a, b := newCHash(t, listed, State{}), newCHash(t, reordered, State{})
	for _, key := range clientIDs(10000) {
		if got, want := orderAddrs(b, reordered, key), orderAddrs(a, listed, key); !slices.Equal(got, want) {
			t.Fatalf("key %q: reordered list gives %q; want %q", key, got, want)
		}
	}
}

// TestConsistentHashEqualWeightsShortcut checks that ordering a tier of
// equal weights by u, without the logarithm, agrees with the full score:
// draining the only node of another weight must not move any other key.
func TestConsistentHashEqualWeightsShortcut(t *testing.T) {
	t.Parallel()
	for _, weight := range []int{1, 7} {
		t.Run(fmt.Sprint("weight ", weight), func(t *testing.T) {
			t.Parallel()
			equal := equalNodes(6)
			for i := range equal {
				equal[i].Weight = weight
			}
			mixed := append(slices.Clone(equal), Node{Addr: "10.0.0.99:1883", Weight: weight + 1})
			// The extra node is down, so both balancers order the same six
			// nodes; only mixed computes the logarithm.
			shortcut := newCHash(t, equal, State{})
			scored := newCHash(t, mixed, State{Healthy: downSet(len(mixed) - 1)})
			for _, key := range clientIDs(10000) {
				if got, want := orderAddrs(shortcut, equal, key), orderAddrs(scored, mixed, key); !slices.Equal(got, want) {
					t.Fatalf("key %q: equal weights order %q; full score orders %q", key, got, want)
				}
			}
		})
	}
}

func TestConsistentHashAddNode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		before           []Node
		added            Node
		minMoved, maxMov float64 // fraction of keys moved
	}{
		// The new node wins weight/Σweight of the keys: 1/6 and 2/7.
		{"sixth of equal weight", equalNodes(5), Node{Addr: "10.0.0.6:1883", Weight: 1}, 0.12, 0.22},
		{"sixth of double weight", equalNodes(5), Node{Addr: "10.0.0.6:1883", Weight: 2}, 0.24, 0.33},
	}
	keys := clientIDs(10000)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			after := append(slices.Clone(tt.before), tt.added)
			before, grown := newCHash(t, tt.before, State{}), newCHash(t, after, State{})
			moved := 0
			for _, key := range keys {
				was, is := firstAddr(before, tt.before, key), firstAddr(grown, after, key)
				if was == is {
					continue
				}
				moved++
				if is != tt.added.Addr {
					t.Errorf("key %q moved from %s to %s; want only moves to the new node", key, was, is)
				}
			}
			if frac := float64(moved) / float64(len(keys)); frac < tt.minMoved || frac > tt.maxMov {
				t.Errorf("%.1f%% of keys moved; want %.0f%%..%.0f%%", 100*frac, 100*tt.minMoved, 100*tt.maxMov)
			}
		})
	}
}

func TestConsistentHashRemoveNode(t *testing.T) {
	t.Parallel()
	nodes := []Node{
		{Addr: "10.0.0.1:1883", Weight: 1},
		{Addr: "10.0.0.2:1883", Weight: 2},
		{Addr: "10.0.0.3:1883", Weight: 1},
		{Addr: "10.0.0.4:1883", Weight: 1},
		{Addr: "10.0.0.5:1883", Weight: 1},
	}
	for removed := range nodes {
		t.Run(nodes[removed].Addr, func(t *testing.T) {
			t.Parallel()
			shrunk := slices.Delete(slices.Clone(nodes), removed, removed+1)
			full, less := newCHash(t, nodes, State{}), newCHash(t, shrunk, State{})
			moved := 0
			for _, key := range clientIDs(10000) {
				order := orderAddrs(full, nodes, key)
				is := firstAddr(less, shrunk, key)
				want := order[0]
				if want == nodes[removed].Addr {
					want = order[1] // the key's own next-best node
					moved++
				}
				if is != want {
					t.Fatalf("key %q (order %q) went to %s; want %s", key, order, is, want)
				}
			}
			if moved == 0 {
				t.Error("no key was on the removed node")
			}
		})
	}
}

// TestConsistentHashSpread checks that keys land in proportion to weight.
func TestConsistentHashSpread(t *testing.T) {
	t.Parallel()
	tests := []struct {
		weights []int
	}{
		{[]int{1, 1, 2}},
		{[]int{1, 1, 1, 1, 1}},
		{[]int{1, 2, 3, 4, 10}},
	}
	keys := clientIDs(100000)
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			t.Parallel()
			nodes := equalNodes(len(tt.weights))
			total := 0
			for i, w := range tt.weights {
				nodes[i].Weight = w
				total += w
			}
			b := newCHash(t, nodes, State{})
			counts := make([]int, len(nodes))
			for _, key := range keys {
				for n := range b.Order(key) {
					counts[n]++
					break
				}
			}
			for i, w := range tt.weights {
				got := float64(counts[i]) / float64(len(keys))
				want := float64(w) / float64(total)
				if math.Abs(got-want) > 0.03*want {
					t.Errorf("node %d (weight %d) got %.2f%% of keys; want %.2f%% ±3%%", i, w, 100*got, 100*want)
				}
			}
		})
	}
}

// TestConsistentHashUnhealthy takes a node down and back up: only its keys
// move, each to its own second choice, spread over the other nodes, and
// they come back.
func TestConsistentHashUnhealthy(t *testing.T) {
	t.Parallel()
	nodes := equalNodes(5)
	const downNode = 2
	isDown := false
	b := newCHash(t, nodes, State{Healthy: func(n int) bool { return n != downNode || !isDown }})

	keys := clientIDs(10000)
	baseline := make([][]string, len(keys))
	for i, key := range keys {
		baseline[i] = orderAddrs(b, nodes, key)
	}

	isDown = true
	movedTo := map[string]int{}
	for i, key := range keys {
		got := orderAddrs(b, nodes, key)
		want := slices.DeleteFunc(slices.Clone(baseline[i]), func(a string) bool { return a == nodes[downNode].Addr })
		if !slices.Equal(got, want) {
			t.Fatalf("key %q with node %d down: order %q; want %q", key, downNode, got, want)
		}
		if baseline[i][0] == nodes[downNode].Addr {
			movedTo[got[0]]++
		}
	}
	moved := 0
	for _, c := range movedTo {
		moved += c
	}
	if len(movedTo) != len(nodes)-1 {
		t.Errorf("moved keys went to %v; want every other node", movedTo)
	}
	for addr, c := range movedTo {
		if share := float64(c) / float64(moved); share < 0.2 || share > 0.3 {
			t.Errorf("%s took %.1f%% of the moved keys; want about 25%%", addr, 100*share)
		}
	}

	isDown = false
	for i, key := range keys {
		if got := orderAddrs(b, nodes, key); !slices.Equal(got, baseline[i]) {
			t.Fatalf("key %q after recovery: order %q; want %q", key, got, baseline[i])
		}
	}
}

// TestConsistentHashBoundedLoad sends keys that all hash to one node; with
// a balance factor no node may take a connection beyond its bound.
func TestConsistentHashBoundedLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		weights    []int
		factor     float64
		num, denom int64 // factor as a fraction, for an exact bound in the test
	}{
		{"equal weights 1.25", []int{1, 1, 1, 1}, 1.25, 5, 4},
		{"equal weights 1.0", []int{1, 1, 1}, 1, 1, 1},
		{"weighted 1.5", []int{1, 2, 3, 2}, 1.5, 3, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nodes := equalNodes(len(tt.weights))
			var totalWeight int64
			for i, w := range tt.weights {
				nodes[i].Weight = w
				totalWeight += int64(w)
			}

			// Keys whose first choice is node 0 when load is ignored.
			plain := newCHash(t, nodes, State{})
			var hot []string
			for i := 0; len(hot) < 500; i++ {
				key := fmt.Sprintf("hot-%d", i)
				if firstAddr(plain, nodes, key) == nodes[0].Addr {
					hot = append(hot, key)
				}
			}

			active := make([]int64, len(nodes))
			bounded := mustNew(t, nodes, Options{
				Type:              TypeConsistentHash,
				HashBalanceFactor: tt.factor,
				State:             State{Active: func(n int) int64 { return active[n] }},
			})
			var total int64
			for _, key := range hot {
				var n int
				for n = range bounded.Order(key) {
					break
				}
				// ceil(f × (total+1) × w / W) in integers.
				limit := tt.num * (total + 1) * int64(nodes[n].Weight)
				bound := (limit + tt.denom*totalWeight - 1) / (tt.denom * totalWeight)
				if active[n]+1 > bound {
					t.Fatalf("connection %d for %q went to node %d with %d active; bound %d (active %v)",
						total+1, key, n, active[n], bound, active)
				}
				active[n]++
				total++
			}
			if active[0] == total {
				t.Errorf("every connection went to node 0: the bound never spilled")
			}
		})
	}
}
