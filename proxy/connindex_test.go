package proxy

import (
	"fmt"
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
		conns[i] = &liveConn{rec: record{clientID: "same"}}
		if !x.track(conns[i]) {
			t.Fatal("track refused before closing")
		}
		x.addClient(conns[i])
	}
	other := &liveConn{rec: record{clientID: "other"}}
	x.addClient(other)
	node := connList{slot: linkNode}
	for _, lc := range conns {
		node.push(lc)
	}
	for _, i := range []int{3, 1, 0} { // head (last pushed), middle, tail
		node.remove(conns[i])
		x.removeClient(conns[i])
		node.remove(conns[i]) // twice is harmless
	}
	if got := node.list(); !slices.Equal(got, []*liveConn{conns[2]}) || node.len() != 1 {
		t.Errorf("node list %v (len %d), want only conns[2]", got, node.len())
	}
	if got := x.client("same"); !slices.Equal(got, []*liveConn{conns[2]}) {
		t.Errorf("client same = %v, want only conns[2]", got)
	}
	if got := x.client("other"); !slices.Equal(got, []*liveConn{other}) {
		t.Errorf("client other = %v, want its one connection", got)
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

// TestConnIndexClients: the client id index finds every connection of an
// id, newest first, through the growth of its tables, removals from the
// middle of a shared bucket and the shrinking after them; an empty id is
// not indexed.
func TestConnIndexClients(t *testing.T) {
	t.Parallel()
	x := newConnIndex()
	const ids, each = 3000, 3 // about 47 ids a shard: its table doubles a few times
	conns := make([][]*liveConn, ids)
	for round := range each {
		for i := range conns {
			lc := &liveConn{rec: record{clientID: fmt.Sprintf("client-%d", i)}}
			conns[i] = append(conns[i], lc)
			x.addClient(lc)
			if round == 0 && i%7 == 0 {
				x.addClient(&liveConn{}) // no id
			}
		}
	}
	newestFirst := func(cs []*liveConn) []*liveConn {
		out := slices.Clone(cs)
		slices.Reverse(out)
		return out
	}
	for i, cs := range conns {
		if got := x.client(fmt.Sprintf("client-%d", i)); !slices.Equal(got, newestFirst(cs)) {
			t.Fatalf("client-%d: %d connections %p, want %d %p", i, len(got), got, len(cs), newestFirst(cs))
		}
	}
	if got := x.client(""); got != nil {
		t.Errorf("the empty id has %d connections indexed, want none", len(got))
	}
	peak := 0
	for i := range x.shards {
		peak += len(x.shards[i].ids.buckets)
	}
	// Remove the middle connection of every id, then every connection of
	// nine ids in ten: the tables shrink, and what is left is still found
	// in order.
	for _, cs := range conns {
		x.removeClient(cs[1])
		x.removeClient(cs[1]) // twice is harmless
	}
	for i := range conns {
		if i%10 != 0 {
			x.removeClient(conns[i][0])
			x.removeClient(conns[i][2])
			conns[i] = nil
		} else {
			conns[i] = []*liveConn{conns[i][0], conns[i][2]}
		}
	}
	n, buckets := 0, 0
	for i := range x.shards {
		tb := &x.shards[i].ids
		n += tb.n
		buckets += len(tb.buckets)
		if tb.n > 2*len(tb.buckets) || len(tb.buckets) > max(minIDBuckets, 8*tb.n) {
			t.Errorf("shard %d: %d connections in %d buckets, want at most 2 and at least 1/8 a bucket", i, tb.n, len(tb.buckets))
		}
	}
	if want := 2 * ids / 10; n != want {
		t.Errorf("%d connections indexed, want %d", n, want)
	}
	if buckets >= peak {
		t.Errorf("%d buckets after the removals, %d at the peak: the tables did not shrink", buckets, peak)
	}
	for i, cs := range conns {
		if got := x.client(fmt.Sprintf("client-%d", i)); !slices.Equal(got, newestFirst(cs)) {
			t.Fatalf("after removals, client-%d: %d connections, want %d", i, len(got), len(cs))
		}
	}
}
