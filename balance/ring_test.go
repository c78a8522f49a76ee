package balance

import (
	"slices"
	"strings"
	"testing"
)

// ringNodes and ringVectors come from testdata/ring_vectors.py, which
// derives them from lua-resty-chash's and NGINX's sources with its own
// CRC-32 (and, for NGINX, zlib's), not from this package: see its doc
// string for what each step follows. Both methods build the same points for
// IPv4 and hostname nodes, so the vectors hold for both.
var ringNodes = []Node{
	{Addr: "10.0.0.1:1883", Weight: 1},
	{Addr: "10.0.0.2:1883", Weight: 2},
	{Addr: "broker-3.example:1883", Weight: 1},
	{Addr: "10.0.0.4:8883", Weight: 3},
}

var ringVectors = []struct {
	key       string
	crc       uint32
	allUp     []int
	node1Down []int
}{
	{"", 0x00000000, []int{1, 3, 2, 0}, []int{3, 2, 0}},
	{"a", 0xe8b7be43, []int{0, 1, 2, 3}, []int{0, 2, 3}},
	{"meter-001", 0xe889a146, []int{3, 0, 1, 2}, []int{3, 0, 2}},
	{"meter-002", 0x7180f0fc, []int{0, 3, 2, 1}, []int{0, 3, 2}},
	{"valve-17", 0x69f5aa5e, []int{3, 1, 0, 2}, []int{3, 0, 2}},
	{"phone-x", 0x65d048e4, []int{3, 1, 2, 0}, []int{3, 2, 0}},
	{"sensor/42", 0x7bab2697, []int{3, 2, 1, 0}, []int{3, 2, 0}},
	{"0123456789abcdef0123", 0x1dc342c2, []int{1, 2, 3, 0}, []int{2, 3, 0}},
}

func ringOrder(b Balancer, key string) []int { return slices.Collect(b.Order(key)) }

func TestRingVectors(t *testing.T) {
	t.Parallel()
	for _, method := range []string{HashAPISIX, HashNGINX} {
		up := mustNew(t, ringNodes, Options{Type: TypeConsistentHash, HashMethod: method})
		down := mustNew(t, ringNodes, Options{Type: TypeConsistentHash, HashMethod: method,
			State: State{Healthy: func(n int) bool { return n != 1 }}})
		for _, v := range ringVectors {
			if got := RingHash(v.key); got != v.crc {
				t.Errorf("RingHash(%q) = %#08x, want %#08x", v.key, got, v.crc)
			}
			if got := ringOrder(up, v.key); !slices.Equal(got, v.allUp) {
				t.Errorf("%s: order of %q = %v, want %v", method, v.key, got, v.allUp)
			}
			// A down node is walked past, as NGINX's next point and
			// APISIX's ring of the healthy nodes do.
			if got := ringOrder(down, v.key); !slices.Equal(got, v.node1Down) {
				t.Errorf("%s, node 1 down: order of %q = %v, want %v", method, v.key, got, v.node1Down)
			}
		}
	}
}

// TestRingPoints pins the first points of a node (the chain on the
// previous point's hash) and the one place the methods differ: the id of
// an IPv6 node. Values from testdata/ring_vectors.py.
func TestRingPoints(t *testing.T) {
	t.Parallel()
	hashes := func(id string, n int) []uint32 {
		var out []uint32
		for _, p := range appendRingPoints(nil, id, n, 0) {
			out = append(out, p.hash)
		}
		return out
	}
	for _, tc := range []struct {
		addr, method string
		want         []uint32
	}{
		{"10.0.0.1:1883", HashNGINX, []uint32{0x9aea7513, 0x3e3746e5, 0x5e3a88f4}},
		{"10.0.0.1:1883", HashAPISIX, []uint32{0x9aea7513, 0x3e3746e5, 0x5e3a88f4}},
		{"[::1]:1883", HashAPISIX, []uint32{0xc0c5efd3, 0x7b738f82}},
		{"[::1]:1883", HashNGINX, []uint32{0x03fdbabf, 0xb63e51ff}},
	} {
		if got := hashes(ringID(tc.addr, tc.method), len(tc.want)); !slices.Equal(got, tc.want) {
			t.Errorf("%s %s: points %#08x, want %#08x", tc.method, tc.addr, got, tc.want)
		}
	}
	if got := ringID("[::1]:1883", HashNGINX); got != "[::1]\x001883" {
		t.Errorf("nginx id of [::1]:1883 = %q", got)
	}
	if got := ringID("[::1]:1883", HashAPISIX); got != "[\x00\x001]\x001883" {
		t.Errorf("apisix id of [::1]:1883 = %q", got)
	}
}

// TestRingRemovalMovesOnlyItsKeys: taking a node out (weight 0, as a
// drain does, or a config without it) moves only the keys it had, and
// the ring holds 160 points per unit of weight.
func TestRingRemovalMovesOnlyItsKeys(t *testing.T) {
	t.Parallel()
	nodes := slices.Clone(ringNodes)
	before := mustNew(t, nodes, Options{Type: TypeConsistentHash, HashMethod: HashNGINX})
	if r := before.(*ring); len(r.points[0]) != 7*ringPointsPerWeight {
		t.Errorf("%d points for total weight 7, want %d", len(r.points[0]), 7*ringPointsPerWeight)
	}
	nodes[2].Weight = 0
	after := mustNew(t, nodes, Options{Type: TypeConsistentHash, HashMethod: HashNGINX})
	per := make([]int, len(nodes))
	for _, id := range clientIDs(4000) {
		b, a := ringOrder(before, id)[0], ringOrder(after, id)[0]
		per[b]++
		if b != 2 && a != b {
			t.Fatalf("%s moved from node %d to %d though node 2 was removed", id, b, a)
		}
	}
	// Weights 1, 2, 1, 3 of 7: each node's share within a loose band (a
	// 160-point ring is uneven by some percent).
	for i, n := range per {
		want := 4000 * nodes[i].Weight / 7
		if i == 2 {
			want = 4000 / 7
		}
		if n < want*6/10 || n > want*14/10 {
			t.Errorf("node %d got %d of 4000 keys, want about %d (spread %v)", i, n, want, per)
		}
	}
}

func TestRingPriorityAndErrors(t *testing.T) {
	t.Parallel()
	nodes := []Node{{Addr: "a:1", Weight: 1}, {Addr: "b:1", Weight: 1, Priority: -1}, {Addr: "c:1", Weight: 1}}
	b := mustNew(t, nodes, Options{Type: TypeConsistentHash, HashMethod: HashAPISIX})
	for _, id := range clientIDs(50) {
		if got := ringOrder(b, id); len(got) != 3 || got[2] != 1 {
			t.Fatalf("order of %s = %v: want every node once, backup node 1 last", id, got)
		}
	}
	for _, tc := range []struct {
		opts  Options
		nodes []Node
		want  string
	}{
		{Options{Type: TypeConsistentHash, HashMethod: HashNGINX, HashBalanceFactor: 1.25}, nodes, "takes no hash balance factor"},
		{Options{Type: TypeConsistentHash, HashMethod: "ketama"}, nodes, `unknown hash method "ketama"`},
		{Options{Type: TypeConsistentHash, HashMethod: HashAPISIX}, []Node{{Addr: "a:1", Weight: MaxRingWeight}, {Addr: "b:1", Weight: 1}}, "add up to more than"},
	} {
		_, err := New(tc.nodes, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
}
