package balance

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

var allTypes = []string{TypeRoundRobin, TypeConsistentHash, TypeLeastConn}

func mustNew(t testing.TB, nodes []Node, opts Options) Balancer {
	t.Helper()
	b, err := New(nodes, opts)
	if err != nil {
		t.Fatalf("New(%v, %+v): %v", nodes, opts, err)
	}
	return b
}

// equalNodes returns n nodes of weight 1 and priority 0.
func equalNodes(n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{Addr: fmt.Sprintf("10.0.0.%d:1883", i+1), Weight: 1}
	}
	return nodes
}

// downSet returns a Healthy function reporting the listed nodes down.
func downSet(down ...int) func(int) bool {
	return func(n int) bool { return !slices.Contains(down, n) }
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	two := equalNodes(2)
	tests := []struct {
		name    string
		nodes   []Node
		opts    Options
		wantErr string // substring; "" = no error
	}{
		{"default type", two, Options{}, ""},
		{"roundrobin", two, Options{Type: TypeRoundRobin}, ""},
		{"chash", two, Options{Type: TypeConsistentHash, HashBalanceFactor: 1.25}, ""},
		{"least_conn", two, Options{Type: TypeLeastConn}, ""},
		{"all weights zero", []Node{{Addr: "a:1"}, {Addr: "b:1"}}, Options{}, ""},
		{"max weight", []Node{{Addr: "a:1", Weight: MaxWeight}}, Options{}, ""},
		{"factor exactly 1", two, Options{Type: TypeConsistentHash, HashBalanceFactor: 1}, ""},
		{"unknown type", two, Options{Type: "random"}, `unknown type "random"`},
		{"type is case sensitive", two, Options{Type: "CHASH"}, "unknown type"},
		{"no nodes", nil, Options{}, "no nodes"},
		{"empty nodes", []Node{}, Options{}, "no nodes"},
		{"negative weight", []Node{{Addr: "a:1", Weight: 1}, {Addr: "b:1", Weight: -1}}, Options{}, "node 1 (b:1): weight -1"},
		{"weight too large", []Node{{Addr: "a:1", Weight: MaxWeight + 1}}, Options{}, "out of range"},
		{"duplicate addr", []Node{{Addr: "a:1", Weight: 1}, {Addr: "b:1", Weight: 1}, {Addr: "a:1", Weight: 2}}, Options{}, `node 2: address "a:1" already used by node 0`},
		{"empty addr", []Node{{Addr: "", Weight: 1}}, Options{}, "node 0: empty address"},
		{"negative factor", two, Options{Type: TypeConsistentHash, HashBalanceFactor: -1}, "hash balance factor"},
		{"factor below 1", two, Options{Type: TypeConsistentHash, HashBalanceFactor: 0.5}, "hash balance factor"},
		{"factor NaN", two, Options{Type: TypeConsistentHash, HashBalanceFactor: math.NaN()}, "hash balance factor"},
		{"factor Inf", two, Options{Type: TypeConsistentHash, HashBalanceFactor: math.Inf(1)}, "hash balance factor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := New(tt.nodes, tt.opts)
			if tt.wantErr == "" {
				if err != nil || b == nil {
					t.Fatalf("New() = %v, %v; want a balancer", b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New() error = %v; want one containing %q", err, tt.wantErr)
			}
			if b != nil {
				t.Errorf("New() = %v with error; want nil", b)
			}
		})
	}
}

// TestOrderYieldsEachUsableNodeOnce checks the contract every balancer
// shares: exactly the usable nodes, each once, higher priorities first.
func TestOrderYieldsEachUsableNodeOnce(t *testing.T) {
	t.Parallel()
	mixed := []Node{
		{Addr: "a:1", Weight: 3, Priority: 1},
		{Addr: "b:1", Weight: 0, Priority: 1},
		{Addr: "c:1", Weight: 1, Priority: 0},
		{Addr: "d:1", Weight: 2, Priority: 1},
		{Addr: "e:1", Weight: 1, Priority: -5},
		{Addr: "f:1", Weight: 1, Priority: 0},
	}
	tests := []struct {
		name    string
		nodes   []Node
		healthy func(int) bool
		want    [][]int // usable nodes per tier, highest first; order within a tier is free
	}{
		{"all healthy", mixed, nil, [][]int{{0, 3}, {2, 5}, {4}}},
		{"weight 0 never yielded", []Node{{Addr: "a:1"}, {Addr: "b:1", Weight: 1}}, nil, [][]int{{1}}},
		{"unhealthy never yielded", mixed, downSet(0, 5), [][]int{{3}, {2}, {4}}},
		{"whole tier down", mixed, downSet(0, 3), [][]int{{2, 5}, {4}}},
		{"only the backup", mixed, downSet(0, 2, 3, 5), [][]int{{4}}},
		{"nothing healthy", mixed, func(int) bool { return false }, nil},
		{"nothing weighted", []Node{{Addr: "a:1"}, {Addr: "b:1"}}, nil, nil},
		{"larger than the stack buffers", equalNodes(3 * smallTier), nil, [][]int{seq(3 * smallTier)}},
	}
	for _, typ := range allTypes {
		for _, tt := range tests {
			t.Run(typ+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				b := mustNew(t, tt.nodes, Options{Type: typ, State: State{Healthy: tt.healthy}})
				for _, key := range []string{"", "k1", "k2", "client-42"} {
					got := slices.Collect(b.Order(key))
					if err := checkTiers(got, tt.want); err != nil {
						t.Errorf("Order(%q) = %v: %v", key, got, err)
					}
				}
			})
		}
	}
}

// TestAppendOrder: AppendOrder appends what Order yields, node for node
// (chash through its own append, the others through Order), with and
// without a bounded-load factor, after what dst held.
func TestAppendOrder(t *testing.T) {
	t.Parallel()
	nodes := []Node{
		{Addr: "a:1", Weight: 3, Priority: 1},
		{Addr: "b:1", Weight: 1, Priority: 1},
		{Addr: "c:1", Weight: 2, Priority: 0},
		{Addr: "d:1", Weight: 2, Priority: 1},
	}
	for _, typ := range allTypes {
		for _, factor := range []float64{0, 1.25} {
			opts := Options{Type: typ, State: State{Healthy: downSet(1)}}
			if typ == TypeConsistentHash {
				opts.HashBalanceFactor = factor
			}
			b := mustNew(t, nodes, opts)
			for _, key := range []string{"", "k1", "client-42"} {
				want := slices.Collect(b.Order(key))
				if typ == TypeRoundRobin || typ == TypeLeastConn {
					want = nil // the rotation moves between two calls: compare the sets
				}
				got := AppendOrder(b, []int{-1}, key)
				if got[0] != -1 || len(got) != 4 {
					t.Fatalf("%s/%v: AppendOrder(%q) = %v, want -1 and 3 nodes", typ, factor, key, got)
				}
				if want != nil && !slices.Equal(got[1:], want) {
					t.Errorf("%s/%v: AppendOrder(%q) = %v, Order yields %v", typ, factor, key, got[1:], want)
				}
				sorted := slices.Sorted(slices.Values(got[1:]))
				if !slices.Equal(sorted, []int{0, 2, 3}) {
					t.Errorf("%s/%v: AppendOrder(%q) = %v, want nodes 0, 2, 3", typ, factor, key, got[1:])
				}
			}
		}
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// checkTiers reports whether got is the concatenation of a permutation of
// each tier in want.
func checkTiers(got []int, want [][]int) error {
	rest := got
	for i, tier := range want {
		if len(rest) < len(tier) {
			return fmt.Errorf("tier %d: got %v, want a permutation of %v", i, rest, tier)
		}
		head := slices.Sorted(slices.Values(rest[:len(tier)]))
		if !slices.Equal(head, slices.Sorted(slices.Values(tier))) {
			return fmt.Errorf("tier %d: got %v, want a permutation of %v", i, rest[:len(tier)], tier)
		}
		rest = rest[len(tier):]
	}
	if len(rest) > 0 {
		return fmt.Errorf("unexpected nodes %v after the last tier", rest)
	}
	return nil
}

// TestPriorityTiers checks that backup nodes come first only when every
// primary is unusable: down or of weight 0.
func TestPriorityTiers(t *testing.T) {
	t.Parallel()
	nodes := []Node{
		{Addr: "primary-1:1883", Weight: 1, Priority: 10},
		{Addr: "backup-1:1883", Weight: 5, Priority: 0},
		{Addr: "primary-2:1883", Weight: 1, Priority: 10},
		{Addr: "backup-2:1883", Weight: 5, Priority: 0},
	}
	drained := slices.Clone(nodes)
	drained[0].Weight = 0
	primaries, backups := []int{0, 2}, []int{1, 3}
	tests := []struct {
		name      string
		nodes     []Node
		healthy   func(int) bool
		wantFirst []int // the set the first node must come from
	}{
		{"primaries healthy", nodes, nil, primaries},
		{"one primary down", nodes, downSet(0), []int{2}},
		{"all primaries down", nodes, downSet(0, 2), backups},
		{"one primary drained, the other down", drained, downSet(2), backups},
		{"one primary drained", drained, nil, []int{2}},
		{"a backup down too", nodes, downSet(0, 2, 1), []int{3}},
	}
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = fmt.Sprintf("client-%d", i)
	}
	for _, typ := range allTypes {
		for _, tt := range tests {
			t.Run(typ+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				b := mustNew(t, tt.nodes, Options{Type: typ, State: State{Healthy: tt.healthy}})
				firsts := map[int]bool{}
				for _, key := range keys {
					for n := range b.Order(key) {
						firsts[n] = true
						break
					}
				}
				for n := range firsts {
					if !slices.Contains(tt.wantFirst, n) {
						t.Errorf("node %d (%s) came first; want only %v", n, tt.nodes[n].Addr, tt.wantFirst)
					}
				}
				// Over 200 connections every candidate should get a turn.
				if len(firsts) != len(tt.wantFirst) {
					t.Errorf("first nodes %v; want each of %v", firsts, tt.wantFirst)
				}
			})
		}
	}
}

func TestOrderStopsEarly(t *testing.T) {
	t.Parallel()
	nodes := []Node{
		{Addr: "a:1", Weight: 1, Priority: 1},
		{Addr: "b:1", Weight: 1, Priority: 1},
		{Addr: "c:1", Weight: 1},
	}
	for _, typ := range allTypes {
		for stopAfter := 1; stopAfter <= len(nodes); stopAfter++ {
			t.Run(fmt.Sprintf("%s/after %d", typ, stopAfter), func(t *testing.T) {
				t.Parallel()
				b := mustNew(t, nodes, Options{Type: typ})
				// A yield after the loop breaks would panic in the range.
				var got []int
				for n := range b.Order("key") {
					got = append(got, n)
					if len(got) == stopAfter {
						break
					}
				}
				if len(got) != stopAfter {
					t.Errorf("got %v; want %d nodes", got, stopAfter)
				}
			})
		}
	}
}

// TestConcurrentOrder runs Order from many goroutines while the health and
// load it reads change; run it with -race.
func TestConcurrentOrder(t *testing.T) {
	t.Parallel()
	nodes := []Node{
		{Addr: "a:1", Weight: 5, Priority: 1},
		{Addr: "b:1", Weight: 1, Priority: 1},
		{Addr: "c:1", Weight: 0, Priority: 1},
		{Addr: "d:1", Weight: 1, Priority: 1},
		{Addr: "e:1", Weight: 1},
	}
	for _, typ := range allTypes {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			var down [5]atomic.Bool
			var active [5]atomic.Int64
			b := mustNew(t, nodes, Options{
				Type:              typ,
				HashBalanceFactor: 1.25,
				State: State{
					Healthy: func(n int) bool { return !down[n].Load() },
					Active:  func(n int) int64 { return active[n].Load() },
				},
			})
			stop := make(chan struct{})
			var flipper sync.WaitGroup
			flipper.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					down[i%5].Store(!down[i%5].Load())
					runtime.Gosched() // leave the cores to the clients
				}
			})
			var clients sync.WaitGroup
			errs := make(chan error, 8)
			for g := range 8 {
				clients.Go(func() {
					for i := range 500 {
						var got []int
						for n := range b.Order(fmt.Sprintf("client-%d-%d", g, i)) {
							got = append(got, n)
						}
						if n, ok := firstInvalid(got, nodes); ok {
							errs <- fmt.Errorf("Order = %v: node %d repeated or of weight 0", got, n)
							return
						}
						if len(got) > 0 {
							active[got[0]].Add(1)
						}
					}
				})
			}
			clients.Wait()
			close(stop)
			flipper.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// firstInvalid returns a node of order that repeats or has no weight.
func firstInvalid(order []int, nodes []Node) (int, bool) {
	seen := map[int]bool{}
	for _, n := range order {
		if seen[n] || nodes[n].Weight == 0 {
			return n, true
		}
		seen[n] = true
	}
	return 0, false
}

// BenchmarkOrder measures the usual case: the first node for a new
// connection, ranging over Order as the proxy does, with health and load
// read through State. The range loop's body closure escapes through the
// interface call, which costs the caller allocations of its own.
func BenchmarkOrder(b *testing.B) {
	runOrderBenchmarks(b, func(bal Balancer, key string) int {
		for n := range bal.Order(key) {
			return n
		}
		return -1
	})
}

// BenchmarkOrderOnly measures what the balancer alone costs: Order called
// with a yield function that does not escape.
func BenchmarkOrderOnly(b *testing.B) {
	runOrderBenchmarks(b, func(bal Balancer, key string) int {
		bal.Order(key)(stopAtFirst)
		return 0
	})
}

func stopAtFirst(int) bool { return false }

func runOrderBenchmarks(b *testing.B, first func(Balancer, string) int) {
	benchmarks := []struct {
		name         string
		typ          string
		equalWeights bool
		factor       float64
		method       string
	}{
		{"roundrobin", TypeRoundRobin, false, 0, ""},
		{"least_conn", TypeLeastConn, false, 0, ""},
		{"chash", TypeConsistentHash, true, 0, ""},
		{"chash-weighted", TypeConsistentHash, false, 0, ""},
		{"chash-bounded", TypeConsistentHash, true, 1.25, ""},
		{"chash-nginx", TypeConsistentHash, true, 0, HashNGINX},
		{"chash-nginx-weighted", TypeConsistentHash, false, 0, HashNGINX},
	}
	for _, bm := range benchmarks {
		for _, size := range []int{3, 8, 16} {
			b.Run(fmt.Sprintf("%s/nodes=%d", bm.name, size), func(b *testing.B) {
				nodes := equalNodes(size)
				if !bm.equalWeights {
					for i := range nodes {
						nodes[i].Weight = 1 + i%3
					}
				}
				healthy := make([]atomic.Bool, size)
				active := make([]atomic.Int64, size)
				for i := range healthy {
					healthy[i].Store(true)
					active[i].Store(int64(100 + i))
				}
				bal := mustNew(b, nodes, Options{
					Type:              bm.typ,
					HashBalanceFactor: bm.factor,
					HashMethod:        bm.method,
					State: State{
						Healthy: func(n int) bool { return healthy[n].Load() },
						Active:  func(n int) int64 { return active[n].Load() },
					},
				})
				keys := make([]string, 1024)
				for i := range keys {
					keys[i] = fmt.Sprintf("device-%06d", i)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					first(bal, keys[i%len(keys)])
					i++
				}
			})
		}
	}
}
