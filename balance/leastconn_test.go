package balance

import (
	"slices"
	"testing"
)

func TestLeastConnOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		weights []int
		active  []int64
		down    []int
		want    []int
	}{
		{"fewest first", []int{1, 1, 1}, []int64{5, 2, 7}, nil, []int{1, 0, 2}},
		// (5+1)/3 = 2 beats (2+1)/1 = 3: node 0 has more connections but
		// three times the capacity.
		{"per unit of weight", []int{3, 1}, []int64{5, 2}, nil, []int{0, 1}},
		// Idle nodes: the heavier one first, since (0+1)/4 < (0+1)/1.
		{"idle prefers weight", []int{1, 4}, []int64{0, 0}, nil, []int{1, 0}},
		{"weight 0 skipped", []int{1, 0, 1}, []int64{9, 0, 3}, nil, []int{2, 0}},
		{"down skipped", []int{1, 1, 1}, []int64{5, 2, 7}, []int{1}, []int{0, 2}},
		{"negative count as zero", []int{1, 1}, []int64{-10, 1}, nil, []int{0, 1}},
		{"huge counts exact", []int{MaxWeight, MaxWeight - 1}, []int64{1<<62 + 1<<40, 1 << 62}, nil, []int{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := mustNew(t, letterNodes(tt.weights...), Options{
				Type: TypeLeastConn,
				State: State{
					Healthy: downSet(tt.down...),
					Active:  func(n int) int64 { return tt.active[n] },
				},
			})
			if got := slices.Collect(b.Order("")); !slices.Equal(got, tt.want) {
				t.Errorf("Order = %v; want %v", got, tt.want)
			}
		})
	}
}

// TestLeastConnTiesTakeTurns checks that equally loaded nodes come first in
// turn rather than always the first listed.
func TestLeastConnTiesTakeTurns(t *testing.T) {
	t.Parallel()
	nodes := []Node{
		{Addr: "a:1", Weight: 2},
		{Addr: "b:1", Weight: 1},
		{Addr: "c:1", Weight: 2},
		{Addr: "d:1", Weight: 2},
	}
	active := []int64{3, 1, 3, 3} // loads 4/2, 2/1, 4/2, 4/2: all tie
	b := mustNew(t, nodes, Options{
		Type:  TypeLeastConn,
		State: State{Active: func(n int) int64 { return active[n] }},
	})
	firsts := make([]int, len(nodes))
	for range 10 * len(nodes) {
		order := slices.Collect(b.Order(""))
		if len(order) != len(nodes) {
			t.Fatalf("Order = %v; want all %d nodes", order, len(nodes))
		}
		firsts[order[0]]++
	}
	if want := []int{10, 10, 10, 10}; !slices.Equal(firsts, want) {
		t.Errorf("times first per node = %v; want %v", firsts, want)
	}
}
