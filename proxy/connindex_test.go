package proxy

import (
	"slices"
	"testing"
)

// TestConnIndex: lists keep their members through removals from the head,
// the middle and the tail, and the client id index keeps every connection
// of one id until each leaves.
func TestConnIndex(t *testing.T) {
	t.Parallel()
	x := newConnIndex()
	conns := make([]*liveConn, 4)
	for i := range conns {
		conns[i] = &liveConn{}
		if !x.track(conns[i]) {
			t.Fatal("track refused before closing")
		}
		x.addClient("same", conns[i])
	}
	x.addClient("other", conns[0])
	node := connList{slot: linkNode}
	for _, lc := range conns {
		node.push(lc)
	}
	for _, i := range []int{3, 1, 0} { // head (last pushed), middle, tail
		node.remove(conns[i])
		x.removeClient("same", conns[i])
		node.remove(conns[i]) // twice is harmless
	}
	if got := node.list(); !slices.Equal(got, []*liveConn{conns[2]}) || node.len() != 1 {
		t.Errorf("node list %v (len %d), want only conns[2]", got, node.len())
	}
	if got := x.client("same"); !slices.Equal(got, []*liveConn{conns[2]}) {
		t.Errorf("client same = %v, want only conns[2]", got)
	}
	if got := x.client("other"); !slices.Equal(got, []*liveConn{conns[0]}) {
		t.Errorf("client other = %v, want conns[0]", got)
	}
	if n := x.count(); n != 4 {
		t.Errorf("count %d, want 4", n)
	}
	x.closing.Store(true)
	if x.track(&liveConn{}) {
		t.Error("track accepted a connection while closing")
	}
	for _, lc := range conns {
		x.untrack(lc)
	}
	if n := x.count(); n != 0 {
		t.Errorf("count %d after untracking all, want 0", n)
	}
}
