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
// and by route in their states (connList). A kick, a drain or a duplicate
// client id check touches only the connections it concerns; nothing but
// Shutdown and DrainAll walks them all.
type connIndex struct {
	closing atomic.Bool // set by Shutdown: no new connection is tracked
	next    atomic.Uint32
	seed    maphash.Seed
	shards  [connShards]connShard
}

type connShard struct {
	mu     sync.Mutex              // over ids and claims; all has its own
	all    connList                // the live connections whose home this is
	ids    idTable                 // piping connections by the client's own id
	claims map[clientKey]*liveConn // on_duplicate_client_id: who holds (upstream, client id)
}

func newConnIndex() *connIndex {
	x := &connIndex{seed: maphash.MakeSeed()}
	for i := range x.shards {
		sh := &x.shards[i]
		sh.all.slot = linkShard
		sh.claims = make(map[clientKey]*liveConn)
	}
	return x
}

// clientHash is the hash of a client id: its low bits pick the shard, the
// high ones the shard's bucket.
func (x *connIndex) clientHash(id string) uint64 { return maphash.String(x.seed, id) }

func (x *connIndex) clientShard(id string) *connShard {
	return &x.shards[x.clientHash(id)%connShards]
}

// track adds lc to a shard, round robin; false once the server is closing.
// Shutdown sets closing before it sweeps the shards, under each shard's
// lock, so a connection is either refused here or seen by the sweep.
func (x *connIndex) track(lc *liveConn) bool {
	lc.home = uint8(x.next.Add(1) % connShards)
	l := &x.shards[lc.home].all
	l.mu.Lock()
	defer l.mu.Unlock()
	if x.closing.Load() {
		return false
	}
	l.pushLocked(lc)
	return true
}

func (x *connIndex) untrack(lc *liveConn) { x.shards[lc.home].all.remove(lc) }

// each calls f for every live connection, one shard at a time.
func (x *connIndex) each(f func(*liveConn)) {
	for i := range x.shards {
		x.shards[i].all.each(f)
	}
}

// count is how many connections are live.
func (x *connIndex) count() int {
	n := 0
	for i := range x.shards {
		n += x.shards[i].all.len()
	}
	return n
}

// addClient indexes a piping connection by its client id
// (lc.rec.clientID, which does not change once read). An empty id, which
// no one asks for, is not indexed.
func (x *connIndex) addClient(lc *liveConn) {
	id := lc.rec.clientID
	if id == "" {
		return
	}
	h := x.clientHash(id)
	sh := &x.shards[h%connShards]
	sh.mu.Lock()
	sh.ids.add(x, h, lc)
	sh.mu.Unlock()
}

func (x *connIndex) removeClient(lc *liveConn) {
	id := lc.rec.clientID
	if id == "" {
		return
	}
	h := x.clientHash(id)
	sh := &x.shards[h%connShards]
	sh.mu.Lock()
	sh.ids.remove(x, h, lc)
	sh.mu.Unlock()
}

// client returns the piping connections of a client id, the newest first.
func (x *connIndex) client(id string) []*liveConn {
	h := x.clientHash(id)
	sh := &x.shards[h%connShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out []*liveConn
	for c := sh.ids.bucket(h); c != nil; c = c.sameID {
		if c.rec.clientID == id {
			out = append(out, c)
		}
	}
	return out
}

// idTable is a hash table of connections by client id, chained through
// liveConn.sameID: a bucket is one pointer and the table keeps at most two
// connections a bucket on average, so an indexed connection costs it 4 to
// 16 bytes, where a map[string]*liveConn entry cost 40 to 50 (a string key,
// a pointer, its control byte, a load factor of 7/8 and doubling). A chain
// holds the connections of the ids that share its bucket, newest first.
type idTable struct {
	buckets []*liveConn // len is a power of two, or 0
	n       int
}

// The table's bucket count: it doubles past two connections a bucket and
// halves under one in eight, never under minIDBuckets.
const minIDBuckets = 8

func (t *idTable) index(h uint64) int { return int((h >> 32) & uint64(len(t.buckets)-1)) }

func (t *idTable) bucket(h uint64) *liveConn {
	if len(t.buckets) == 0 {
		return nil
	}
	return t.buckets[t.index(h)]
}

func (t *idTable) add(x *connIndex, h uint64, lc *liveConn) {
	if len(t.buckets) == 0 {
		t.buckets = make([]*liveConn, minIDBuckets)
	} else if t.n >= 2*len(t.buckets) {
		t.resize(x, 2*len(t.buckets))
	}
	i := t.index(h)
	lc.sameID, t.buckets[i] = t.buckets[i], lc
	t.n++
}

func (t *idTable) remove(x *connIndex, h uint64, lc *liveConn) {
	if len(t.buckets) == 0 {
		return
	}
	for at := &t.buckets[t.index(h)]; *at != nil; at = &(*at).sameID {
		if *at == lc {
			*at, lc.sameID = lc.sameID, nil
			t.n--
			if len(t.buckets) > minIDBuckets && 8*t.n < len(t.buckets) {
				t.resize(x, len(t.buckets)/2)
			}
			return
		}
	}
}

// resize rehashes every connection into n buckets, keeping each chain's
// order (newest first) among the connections of one id.
func (t *idTable) resize(x *connIndex, n int) {
	old := t.buckets
	t.buckets = make([]*liveConn, n)
	tails := make([]*liveConn, n)
	for _, c := range old {
		for c != nil {
			next := c.sameID
			i := t.index(x.clientHash(c.rec.clientID))
			c.sameID = nil
			if tails[i] == nil {
				t.buckets[i] = c
			} else {
				tails[i].sameID = c
			}
			tails[i] = c
			c = next
		}
	}
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

// The lists a connection is in, each through its own link in liveConn: a
// list costs its members two pointers each and no allocation, where a set
// would cost a map entry.
const (
	linkShard = iota // its shard's list of every live connection
	linkNode         // its node's piping connections
	linkRoute        // its route's piping connections
	numLinks
)

type link struct{ prev, next *liveConn }

// connList is a list of connections through one of their links.
type connList struct {
	mu   sync.Mutex
	slot int // which of the members' links chains them
	head *liveConn
	n    int
}

func (l *connList) pushLocked(lc *liveConn) {
	lk := &lc.links[l.slot]
	lk.prev, lk.next = nil, l.head
	if l.head != nil {
		l.head.links[l.slot].prev = lc
	}
	l.head = lc
	l.n++
}

func (l *connList) push(lc *liveConn) {
	l.mu.Lock()
	l.pushLocked(lc)
	l.mu.Unlock()
}

func (l *connList) remove(lc *liveConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := &lc.links[l.slot]
	switch {
	case lk.prev != nil:
		lk.prev.links[l.slot].next = lk.next
	case l.head == lc:
		l.head = lk.next
	default:
		return // not in the list
	}
	if lk.next != nil {
		lk.next.links[l.slot].prev = lk.prev
	}
	lk.prev, lk.next = nil, nil
	l.n--
}

func (l *connList) each(f func(*liveConn)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := l.head; c != nil; c = c.links[l.slot].next {
		f(c)
	}
}

func (l *connList) list() []*liveConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*liveConn, 0, l.n)
	for c := l.head; c != nil; c = c.links[l.slot].next {
		out = append(out, c)
	}
	return out
}

func (l *connList) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}
