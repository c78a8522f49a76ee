package balance

import (
	"slices"
	"strings"
	"sync"
	"testing"
)

// letterNodes returns nodes a, b, c, ... with the given weights.
func letterNodes(weights ...int) []Node {
	nodes := make([]Node, len(weights))
	for i, w := range weights {
		nodes[i] = Node{Addr: string(rune('a'+i)) + ":1883", Weight: w}
	}
	return nodes
}

// picks returns the first node of n successive Orders as letters.
func picks(b Balancer, nodes []Node, n int) string {
	var s strings.Builder
	for range n {
		for i := range b.Order("") {
			s.WriteString(nodes[i].Addr[:1])
			break
		}
	}
	return s.String()
}

func TestRoundRobinSequence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		weights []int
		down    []int
		want    string
	}{
		// The sequence documented in nginx's ngx_http_upstream_round_robin.c.
		{"nginx 5 1 1", []int{5, 1, 1}, nil, "aabacaa" + "aabacaa"},
		{"equal", []int{1, 1, 1}, nil, "abcabc"},
		{"2 1", []int{2, 1}, nil, "aba" + "aba"},
		{"weight 0 skipped", []int{5, 0, 1, 1}, nil, "aacadaa"},
		// Down nodes drop out of the rotation: 5 1 over a and b, ties to the first.
		{"c down", []int{5, 1, 1}, []int{2}, "aaabaa" + "aaabaa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nodes := letterNodes(tt.weights...)
			b := mustNew(t, nodes, Options{State: State{Healthy: downSet(tt.down...)}})
			if got := picks(b, nodes, len(tt.want)); got != tt.want {
				t.Errorf("picks = %s; want %s", got, tt.want)
			}
		})
	}
}

// TestRoundRobinFailover checks the rest of the order after the pick: the
// tier's other nodes in list order after it, then the lower tiers, whose
// rotation advances only when an iteration reaches them.
func TestRoundRobinFailover(t *testing.T) {
	t.Parallel()
	nodes := []Node{
		{Addr: "a:1", Weight: 1, Priority: 1},
		{Addr: "b:1", Weight: 1, Priority: 1},
		{Addr: "c:1", Weight: 1, Priority: 1},
		{Addr: "x:1", Weight: 1},
		{Addr: "y:1", Weight: 1},
	}
	b := mustNew(t, nodes, Options{Type: TypeRoundRobin})
	steps := []struct {
		take int // nodes taken before stopping
		want []int
	}{
		{5, []int{0, 1, 2, 3, 4}},
		{1, []int{1}}, // the first dial succeeds: the backup tier is not reached
		{5, []int{2, 0, 1, 4, 3}},
		{5, []int{0, 1, 2, 3, 4}},
	}
	for i, step := range steps {
		var got []int
		for n := range b.Order("") {
			got = append(got, n)
			if len(got) == step.take {
				break
			}
		}
		if !slices.Equal(got, step.want) {
			t.Errorf("Order #%d = %v; want %v", i, got, step.want)
		}
	}
}

// TestRoundRobinConcurrentShares checks that concurrent picks still follow
// the weights exactly: every 7 picks of weights 5, 1, 1 are one cycle.
func TestRoundRobinConcurrentShares(t *testing.T) {
	t.Parallel()
	nodes := letterNodes(5, 1, 1)
	b := mustNew(t, nodes, Options{Type: TypeRoundRobin})
	const goroutines, perGoroutine = 8, 700
	var mu sync.Mutex
	counts := make([]int, len(nodes))
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			local := make([]int, len(nodes))
			for range perGoroutine {
				for n := range b.Order("") {
					local[n]++
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for n, c := range local {
				counts[n] += c
			}
		})
	}
	wg.Wait()
	cycles := goroutines * perGoroutine / 7
	if want := []int{5 * cycles, cycles, cycles}; !slices.Equal(counts, want) {
		t.Errorf("picks per node = %v; want %v", counts, want)
	}
}
