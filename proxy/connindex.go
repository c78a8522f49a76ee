package proxy

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/mqgate/mqgate/config"
)

// connShards is how many locks the live-connection set is split over: an
// accept and a close take one of them, so a status read, a kick or a drain
// in one shard never holds up the others.
const connShards = 64

// connIndex is the set of live connections, sharded, and indexed by what
// operators ask about: by client id here (the shard of its hash), by node
// and by route in their states (connSet). A kick, a drain or a duplicate
// client id check touches only the connections it concerns; nothing but
// Shutdown and DrainAll walks them all.
type connIndex struct {
	closing atomic.Bool // set by Shutdown: no new connection is tracked
	next    atomic.Uint32
	seed    maphash.Seed
	shards  [connShards]connShard
}

type connShard struct {
	mu       sync.Mutex
	conns    map[*liveConn]struct{}  // the live connections whose home this is
	byClient map[string][]*liveConn  // piping connections by the client's own id
	claims   map[clientKey]*liveConn // on_duplicate_client_id: who holds (upstream, client id)
}

func newConnIndex() *connIndex {
	x := &connIndex{seed: maphash.MakeSeed()}
	for i := range x.shards {
		sh := &x.shards[i]
		sh.conns = make(map[*liveConn]struct{})
		sh.byClient = make(map[string][]*liveConn)
		sh.claims = make(map[clientKey]*liveConn)
	}
	return x
}

func (x *connIndex) clientShard(id string) *connShard {
	return &x.shards[maphash.String(x.seed, id)%connShards]
}

// track adds lc to a shard, round robin; false once the server is closing.
// Shutdown sets closing before it sweeps the shards, under each shard's
// lock, so a connection is either refused here or seen by the sweep.
func (x *connIndex) track(lc *liveConn) bool {
	lc.home = uint8(x.next.Add(1) % connShards)
	sh := &x.shards[lc.home]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if x.closing.Load() {
		return false
	}
	sh.conns[lc] = struct{}{}
	return true
}

func (x *connIndex) untrack(lc *liveConn) {
	sh := &x.shards[lc.home]
	sh.mu.Lock()
	delete(sh.conns, lc)
	sh.mu.Unlock()
}

// each calls f for every live connection, one shard at a time.
func (x *connIndex) each(f func(*liveConn)) {
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		for lc := range sh.conns {
			f(lc)
		}
		sh.mu.Unlock()
	}
}

// count is how many connections are live.
func (x *connIndex) count() int {
	n := 0
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.Lock()
		n += len(sh.conns)
		sh.mu.Unlock()
	}
	return n
}

// addClient indexes a piping connection by its client id.
func (x *connIndex) addClient(id string, lc *liveConn) {
	sh := x.clientShard(id)
	sh.mu.Lock()
	sh.byClient[id] = append(sh.byClient[id], lc)
	sh.mu.Unlock()
}

func (x *connIndex) removeClient(id string, lc *liveConn) {
	sh := x.clientShard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.byClient[id]
	for i, c := range list {
		if c == lc {
			list[i] = list[len(list)-1]
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(sh.byClient, id)
	} else {
		sh.byClient[id] = list
	}
}

// client returns the piping connections of a client id.
func (x *connIndex) client(id string) []*liveConn {
	sh := x.clientShard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return append([]*liveConn(nil), sh.byClient[id]...)
}

// clientKey is a client id as a broker cluster sees it: ids are unique per
// upstream, not across them.
type clientKey struct{ upstream, clientID string }

// claim registers lc for k under mode. It returns the connection to close
// (keep_newest), or ok false when lc must be refused (keep_oldest).
func (x *connIndex) claim(k clientKey, lc *liveConn, mode string) (older *liveConn, ok bool) {
	sh := x.clientShard(k.clientID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	older = sh.claims[k]
	if older != nil && mode == config.DuplicateKeepOldest {
		return nil, false
	}
	sh.claims[k] = lc
	return older, true
}

// release forgets lc's claim, unless a newer connection took its place.
func (x *connIndex) release(k clientKey, lc *liveConn) {
	sh := x.clientShard(k.clientID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.claims[k] == lc {
		delete(sh.claims, k)
	}
}

// connSet is the piping connections of one node or one route.
type connSet struct {
	mu sync.Mutex
	m  map[*liveConn]struct{}
}

func (cs *connSet) add(lc *liveConn) {
	cs.mu.Lock()
	if cs.m == nil {
		cs.m = make(map[*liveConn]struct{})
	}
	cs.m[lc] = struct{}{}
	cs.mu.Unlock()
}

func (cs *connSet) remove(lc *liveConn) {
	cs.mu.Lock()
	delete(cs.m, lc)
	cs.mu.Unlock()
}

func (cs *connSet) list() []*liveConn {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	out := make([]*liveConn, 0, len(cs.m))
	for lc := range cs.m {
		out = append(out, lc)
	}
	return out
}
